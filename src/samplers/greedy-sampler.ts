/**
 * Greedy decoding: the id of the largest logit (the lowest id among equal maxima).
 *
 * ```ts
 * greedy().sample(logits, { rng });   // rng unused
 * ```
 */
import type { Sampler } from '../interfaces/sampler.js';
import { argmax } from './logits-transform.js';

export function greedy(): Sampler {
  return { name: 'greedy', sample: (logits) => argmax(logits) };
}
