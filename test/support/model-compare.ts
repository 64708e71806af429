/** Helpers the backend tests share to compare whole-model runs with the reference backend. */
import type { PixelValues } from '../../src/interfaces/image-processor.js';
import type { PaliGemmaModel } from '../../src/model/paligemma-model.js';
import { argmax } from '../../src/samplers/index.js';

export { argmax };

/** max |a - b| / max |b|: the difference relative to the scale of the expected values. */
export function relMaxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let diff = 0, scale = 0;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return diff / scale;
}

/** Vision → prompt → prefill → greedy decode at the model level, returning every step's logits. */
export async function greedyRun(
  m: PaliGemmaModel, pixels: PixelValues, ids: Int32Array, steps: number,
): Promise<{ tokens: number[]; logits: Float32Array[]; vision: Float32Array }> {
  const b = m.backend;
  const features = m.visionFeatures(pixels);
  const vision = await b.read(features);
  b.dispose(features);
  const rows = m.imageRows(pixels);
  const embeds = m.embedPrompt(ids, rows);
  b.dispose(rows);
  const s = m.session(ids.length + steps);
  const logits: Float32Array[] = [await s.prefill(embeds, ids.length)];
  b.dispose(embeds);
  const tokens = [argmax(logits[0])];
  for (let i = 1; i < steps; i++) {
    logits.push(await s.step(tokens[tokens.length - 1]));
    tokens.push(argmax(logits[logits.length - 1]));
  }
  s.dispose();
  return { tokens, logits, vision };
}
