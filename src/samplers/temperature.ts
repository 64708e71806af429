/**
 * Temperature: logits / t, computed in float32 as the reference does. t = 0 is the greedy
 * limit: every entry but the (first) maximum is removed.
 */
import { argmax, checkTemperature, type LogitsTransform } from './logits-transform.js';

export function temperature(t: number): LogitsTransform {
  checkTemperature(t);
  return {
    name: `temperature(${t})`,
    apply(logits) {
      if (t === 0) {
        const out = new Float32Array(logits.length).fill(-Infinity);
        if (logits.length > 0) { const i = argmax(logits); out[i] = logits[i]; }
        return out;
      }
      const out = Float32Array.from(logits);
      if (t !== 1) for (let i = 0; i < out.length; i++) out[i] = Math.fround(out[i] / t);
      return out;
    },
  };
}
