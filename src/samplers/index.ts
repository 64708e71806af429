/**
 * Samplers: greedy, temperature, top-k, top-p and chains of logits transforms, with a seeded
 * rng. Factories build chains in Hugging Face's order (temperature → top-k → top-p);
 * temperature 0 always means greedy.
 *
 * ```ts
 * const s = createSampler({ kind: 'top-p', topP: 0.9, temperature: 0.7 });
 * s.sample(logits, { rng: seededRng(0) });
 * ```
 */
import { PaliGemmaError } from '../interfaces/errors.js';
import type { Sampler } from '../interfaces/sampler.js';
import { chainSampler } from './chain-sampler.js';
import { greedy } from './greedy-sampler.js';
import { checkTemperature, checkTopK, checkTopP, type LogitsTransform } from './logits-transform.js';
import { temperature } from './temperature.js';
import { topK } from './top-k.js';
import { topP } from './top-p.js';

export * from './rng.js';
export * from './log-softmax.js';
export * from './logits-transform.js';
export * from './greedy-sampler.js';
export * from './temperature.js';
export * from './top-k.js';
export * from './top-p.js';
export * from './chain-sampler.js';

export type SamplerKind = 'greedy' | 'temperature' | 'top-k' | 'top-p';
export const SAMPLER_KINDS: readonly SamplerKind[] = ['greedy', 'temperature', 'top-k', 'top-p'];

/** Defaults when a kind is chosen without its parameter (top-k as in transformers). */
export const SAMPLER_DEFAULTS = { temperature: 1, topK: 50, topP: 0.9 } as const;

/** The temperature step, left out when it would change nothing. */
const temperatureStep = (t: number): LogitsTransform[] => (t === 1 ? [] : [temperature(t)]);

/** softmax(logits / t) draw; t = 0 is greedy. */
export function temperatureSampler(t: number): Sampler {
  checkTemperature(t);
  if (t === 0) return greedy();
  return chainSampler(temperatureStep(t), 'temperature');
}

/** Temperature t (default 1), then the k most likely; t = 0 is greedy. */
export function topKSampler(k: number, t: number = SAMPLER_DEFAULTS.temperature): Sampler {
  checkTopK(k);
  checkTemperature(t);
  if (t === 0) return greedy();
  return chainSampler([...temperatureStep(t), topK(k)], 'top-k');
}

/** Temperature t (default 1), then the smallest set with probability ≥ p; t = 0 is greedy. */
export function topPSampler(p: number, t: number = SAMPLER_DEFAULTS.temperature): Sampler {
  checkTopP(p);
  checkTemperature(t);
  if (t === 0) return greedy();
  return chainSampler([...temperatureStep(t), topP(p)], 'top-p');
}

export interface CreateSamplerOptions {
  kind: SamplerKind;
  temperature?: number;
  topK?: number;
  topP?: number;
}

/**
 * A sampler of the given kind. Every option that is set is validated, whether or not the kind
 * uses it; each kind uses only its own (top-k ignores topP, and so on).
 */
export function createSampler(opts: CreateSamplerOptions): Sampler {
  if (opts.temperature !== undefined) checkTemperature(opts.temperature);
  if (opts.topK !== undefined) checkTopK(opts.topK);
  if (opts.topP !== undefined) checkTopP(opts.topP);
  const t = opts.temperature ?? SAMPLER_DEFAULTS.temperature;
  switch (opts.kind) {
    case 'greedy': return greedy();
    case 'temperature': return temperatureSampler(t);
    case 'top-k': return topKSampler(opts.topK ?? SAMPLER_DEFAULTS.topK, t);
    case 'top-p': return topPSampler(opts.topP ?? SAMPLER_DEFAULTS.topP, t);
    default:
      throw new PaliGemmaError(`unknown sampler ${JSON.stringify((opts as { kind: unknown }).kind)}: expected one of ${SAMPLER_KINDS.join(', ')}`);
  }
}
