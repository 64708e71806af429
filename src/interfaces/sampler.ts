/**
 * Sampler: logits → next token id. Usable standalone on a Float32Array.
 *
 * ```ts
 * const s = chainSampler([temperature(0.7), topK(40), topP(0.9)]);
 * const id = s.sample(logits, { rng: seededRng(42) });
 * ```
 */
import type { ServiceIdentifier } from 'inversify';
export const Sampler: ServiceIdentifier<Sampler> = Symbol('Sampler');

/** A source of uniform numbers in [0, 1). */
export interface Rng {
  next(): number;
}

export interface SampleContext {
  rng: Rng;
}

export interface Sampler {
  readonly name: string;
  sample(logits: Float32Array, ctx: SampleContext): number;
}
