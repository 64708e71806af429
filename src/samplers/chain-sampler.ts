/**
 * A sampler that runs logits transforms in the order given, then draws one id from the softmax
 * of what is left with the request's rng. Build it in Hugging Face's order — temperature, then
 * top-k, then top-p — to sample what transformers' `generate(do_sample=True)` samples.
 *
 * ```ts
 * const s = chainSampler([temperature(0.7), topK(40), topP(0.9)]);
 * const id = s.sample(logits, { rng: seededRng(42) });
 * ```
 */
import type { Rng, Sampler } from '../interfaces/sampler.js';
import { shiftedExp } from './log-softmax.js';
import { argmax, type LogitsTransform } from './logits-transform.js';

/** Applies the transforms in order to a copy of the logits. */
export function applyTransforms(logits: Float32Array, transforms: readonly LogitsTransform[]): Float32Array {
  let x = logits;
  for (const t of transforms) x = t.apply(x);
  return x === logits ? Float32Array.from(logits) : x;
}

/** Ids (ascending) that can still be drawn after the transforms: those with a finite logit. */
export function keptSet(logits: Float32Array, transforms: readonly LogitsTransform[]): number[] {
  const x = applyTransforms(logits, transforms);
  const kept: number[] = [];
  for (let i = 0; i < x.length; i++) if (x[i] > -Infinity) kept.push(i);
  if (kept.length === 0 && logits.length > 0) kept.push(argmax(logits));
  return kept;
}

/**
 * Draws an id from softmax(logits) with one uniform number: walks ids in ascending order and
 * returns the first whose cumulative weight passes u·Σ. Removed (-Infinity) entries have weight
 * 0 and are never returned.
 */
export function drawFromLogits(logits: ArrayLike<number>, rng: Rng): number {
  const { e, sum } = shiftedExp(logits);
  if (!(sum > 0)) return -1;
  const u = rng.next() * sum;
  let cum = 0, last = -1;
  for (let i = 0; i < e.length; i++) {
    if (e[i] === 0) continue;
    cum += e[i];
    last = i;
    if (u < cum) return i;
  }
  return last; // u·Σ rounded past the float sum
}

export function chainSampler(transforms: readonly LogitsTransform[], name?: string): Sampler {
  const list = [...transforms];
  return {
    name: name ?? (list.length ? list.map((t) => t.name).join(' → ') : 'softmax'),
    sample(logits, ctx) {
      const id = drawFromLogits(applyTransforms(logits, list), ctx.rng);
      // Nothing left (every logit -Infinity or NaN): fall back to the greedy choice.
      return id >= 0 ? id : argmax(logits);
    },
  };
}
