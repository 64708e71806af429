/**
 * A sampler that ignores the logits and emits a fixed token sequence: for tests, demos and
 * pictures that must run the whole pipeline (vision tower, decoder, parsing, drawing) to a
 * known answer. Once the sequence is used up it repeats its last id (end it with <eos>).
 * It keeps its place between calls: `reset()` it, or make one per generation.
 *
 * ```ts
 * const s = forcedSequence([660 + 100, 660 + 200, 660 + 300, 660 + 400, catId, eos]);
 * await pipe.generate(image, 'detect cat', { sampler: s });
 * ```
 */
import { PaliGemmaError } from '../interfaces/errors.js';
import type { Sampler } from '../interfaces/sampler.js';

export interface ForcedSampler extends Sampler {
  /** Starts the sequence again. */
  reset(): void;
}

export function forcedSequence(ids: readonly number[]): ForcedSampler {
  if (!Array.isArray(ids) || ids.length === 0 || !ids.every((i) => Number.isInteger(i) && i >= 0)) {
    throw new PaliGemmaError('forced sampler: ids must be a non-empty list of token ids (integers ≥ 0)', 'invalid_argument');
  }
  const seq = [...ids];
  let at = 0;
  return {
    name: 'forced',
    sample(logits: Float32Array): number {
      const id = seq[Math.min(at, seq.length - 1)];
      at++;
      if (id >= logits.length) throw new PaliGemmaError(`forced sampler: token id ${id} is outside the model's ${logits.length} logits`, 'invalid_argument');
      return id;
    },
    reset() { at = 0; },
  };
}
