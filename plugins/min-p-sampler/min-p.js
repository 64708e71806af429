// @ts-check
/**
 * min-p sampling (Nguyen et al., "Turning Up the Heat: Min-p Sampling for Creative and Coherent
 * LLM Outputs", 2024): after temperature, keep every token whose probability is at least
 * minP · p_max, then draw from what is left. The cut scales with the model's confidence: a
 * peaked distribution keeps few tokens, a flat one keeps many. minP = 0 keeps every token with a
 * finite logit, minP = 1 keeps only the most likely ones (greedy, up to ties).
 *
 * Same order as Hugging Face's MinPLogitsWarper: temperature first, then the min-p cut.
 */
import { PaliGemmaError, chainSampler, greedy, temperature } from 'paligemma-sdk';

/** @import { LogitsTransform, Sampler } from 'paligemma-sdk' */

/** @param {unknown} p */
export function checkMinP(p) {
  if (typeof p !== 'number' || !(p >= 0 && p <= 1)) {
    throw new PaliGemmaError(`invalid minP ${String(p)}: expected a number in [0, 1]`);
  }
  return p;
}

/**
 * Which ids min-p keeps, as a 0/1 mask: p_i / p_max = exp(logit_i − logit_max) ≥ minP.
 * The most likely token always survives; NaN and -Infinity never do.
 * @param {ArrayLike<number>} logits @param {number} minP
 */
export function minPMask(logits, minP) {
  checkMinP(minP);
  const mask = new Uint8Array(logits.length);
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  if (max === -Infinity) return mask;
  if (max === Infinity) {
    for (let i = 0; i < logits.length; i++) if (logits[i] === Infinity) mask[i] = 1;
    return mask;
  }
  for (let i = 0; i < logits.length; i++) {
    if (logits[i] > -Infinity && Math.exp(logits[i] - max) >= minP) mask[i] = 1;
  }
  return mask;
}

/** Ids min-p keeps, ascending. @param {ArrayLike<number>} logits @param {number} minP */
export function minPIds(logits, minP) {
  const mask = minPMask(logits, minP);
  /** @type {number[]} */
  const ids = [];
  for (let i = 0; i < mask.length; i++) if (mask[i]) ids.push(i);
  return ids;
}

/** The min-p cut as a logits transform (removed ids become -Infinity). @param {number} p @returns {LogitsTransform} */
export function minP(p) {
  checkMinP(p);
  return {
    name: `min-p(${p})`,
    apply(logits) {
      const mask = minPMask(logits, p);
      const out = new Float32Array(logits.length);
      for (let i = 0; i < out.length; i++) out[i] = mask[i] ? logits[i] : -Infinity;
      return out;
    },
  };
}

/**
 * Temperature t (default 1), then min-p; t = 0 is greedy.
 * @param {{ minP?: number, temperature?: number }} [options] @returns {Sampler}
 */
export function minPSampler(options = {}) {
  const p = checkMinP(options.minP ?? MIN_P_DEFAULT);
  const t = options.temperature ?? 1;
  if (typeof t !== 'number' || !(t >= 0) || !Number.isFinite(t)) {
    throw new PaliGemmaError(`invalid temperature ${String(t)}: expected a number ≥ 0`);
  }
  if (t === 0) return greedy();
  return chainSampler([...(t === 1 ? [] : [temperature(t)]), minP(p)], 'min-p');
}

/** The cut used when none is given; 0.05–0.1 are the usual choices. */
export const MIN_P_DEFAULT = 0.1;
