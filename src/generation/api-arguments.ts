/**
 * Argument checks of the public entry points (createPipeline, generate, stream, score): what a
 * caller passes is checked before any work, and anything wrong is a PaliGemmaError naming the
 * argument, what was expected and what came instead. An unknown option key is refused by name,
 * so that a typo (`maxNewToken`) cannot pass unseen.
 */
import { PaliGemmaError } from '../interfaces/errors.js';
import { checkImage } from '../image/check-image.js';
import { describe, invalidArgument, isObject } from '../interfaces/invalid-argument.js';
import type { GenerateOptions } from './generation-types.js';

// The generic checks live below (interfaces, image) so that lower layers can use them too.
export { checkImage, describe, invalidArgument, isObject };

/** Refuses keys of `options` that are not in `known`, naming them and the accepted ones. */
export function checkKnownKeys(what: string, options: Record<string, unknown>, known: readonly string[]): void {
  const unknown = Object.keys(options).filter((k) => !known.includes(k));
  if (unknown.length > 0) {
    throw new PaliGemmaError(`unknown ${what} ${unknown.map((k) => JSON.stringify(k)).join(', ')} `
      + `(known: ${known.join(', ')})`, 'unknown_option');
  }
}

/** Backend options: refused by key when the backend declares the keys it reads. */
export function checkBackendOptionKeys(backend: string, declared: readonly string[] | undefined, options: unknown): void {
  if (options === undefined) return;
  if (!isObject(options)) throw invalidArgument(`options of backend ${backend}`, 'an object', options);
  if (declared) checkKnownKeys(`option of backend ${backend}:`, options, declared);
}

/**
 * How many new tokens a generation may produce: `requested`, clamped to the context left after
 * a prompt of `promptTokens` (image tokens included). The prefill fills positions
 * [0, promptTokens); each token after the first is fed back at the next position, so the last
 * of `maxPositions - promptTokens + 1` tokens is sampled from position maxPositions - 1. A prompt
 * that alone exceeds the context is refused before any model work.
 */
export function newTokenBudget(promptTokens: number, requested: number, maxPositions: number): number {
  checkPromptFits(promptTokens, maxPositions);
  return Math.min(requested, maxPositions - promptTokens + 1);
}

/** Refuses a sequence of `tokens` positions (image tokens included) longer than the model's context. */
export function checkPromptFits(tokens: number, maxPositions: number, what = 'prompt'): void {
  if (tokens > maxPositions) {
    throw new PaliGemmaError(`${what} is ${tokens} tokens (image tokens included), more than the model's context of `
      + `max_position_embeddings ${maxPositions}: shorten it`, 'context_exceeded');
  }
}

/** A string argument (prompt, suffix). */
export function checkText(what: string, value: unknown): string {
  if (typeof value !== 'string') throw invalidArgument(what, 'a string', value);
  return value;
}

/** An object argument that must have the given functions (a part passed as an instance). */
export function checkInstance(what: string, value: unknown, methods: readonly string[]): void {
  const missing = isObject(value) ? methods.filter((m) => typeof value[m] !== 'function') : methods;
  if (!isObject(value) || missing.length > 0) {
    throw invalidArgument(what, `a name or an object with ${methods.map((m) => `${m}()`).join(', ')}`
      + (isObject(value) ? ` (missing ${missing.join(', ')})` : ''), value);
  }
}

/** Every GenerateOptions key, once: the compiler fails here when the interface gains one. */
export const GENERATE_OPTIONS = Object.keys({
  maxNewTokens: true, sampler: true, seed: true, logprobs: true, signal: true,
} satisfies Record<keyof GenerateOptions, true>);

export interface CheckedGenerateOptions {
  maxNewTokens?: number;
  seed: number;
  logprobs: number;
}

/**
 * generate()/stream() options. maxNewTokens: an integer ≥ 1; a value past the context is clamped
 * to it later (finish reason 'length'). seed: a safe integer. logprobs: an integer in
 * [0, vocabSize] (0: none). signal: an AbortSignal. sampler: an object with sample().
 */
export function checkGenerateOptions(opts: unknown, vocabSize: number): CheckedGenerateOptions {
  if (opts === undefined) return { seed: 0, logprobs: 0 };
  if (!isObject(opts)) throw invalidArgument('generate options', 'an object', opts);
  checkKnownKeys('generate option', opts, GENERATE_OPTIONS);
  const { maxNewTokens, seed = 0, logprobs = 0, signal, sampler } = opts;
  if (maxNewTokens !== undefined && (typeof maxNewTokens !== 'number' || !Number.isSafeInteger(maxNewTokens) || maxNewTokens < 1)) {
    throw invalidArgument('maxNewTokens', 'an integer ≥ 1 (larger than the context left is clamped to it)', maxNewTokens);
  }
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed)) throw invalidArgument('seed', 'an integer', seed);
  if (typeof logprobs !== 'number' || !Number.isInteger(logprobs) || logprobs < 0 || logprobs > vocabSize) {
    throw invalidArgument('logprobs', `an integer from 0 (none) to the vocabulary size ${vocabSize}`, logprobs);
  }
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw invalidArgument('signal', 'an AbortSignal', signal);
  if (sampler !== undefined) checkInstance('sampler', sampler, ['sample']);
  return { maxNewTokens: maxNewTokens as number | undefined, seed, logprobs };
}

/** The methods a part given as an instance must have (the minimum the pipeline calls). */
const PART_METHODS = {
  backend: ['upload', 'read', 'dispose', 'matmul'],
  attention: ['attend'],
  kvCache: ['create'],
  sampler: ['sample'],
  tokenizer: ['encode', 'decode', 'idToToken'],
  imageProcessor: ['process'],
} as const;

/** createPipeline() options (`known`: every key it takes), checked before any plugin loads or file is read. */
export function checkCreateOptions(options: unknown, known: readonly string[]): void {
  if (options === undefined) return;
  if (!isObject(options)) throw invalidArgument('createPipeline options', 'an object', options);
  checkKnownKeys('createPipeline option', options, known);
  if (options.model !== undefined && (typeof options.model !== 'string' || options.model === '')) {
    throw invalidArgument('model', 'a model folder or a hub id ORG/NAME (a non-empty string)', options.model);
  }
  if (options.revision !== undefined && (typeof options.revision !== 'string' || options.revision === '')) {
    throw invalidArgument('revision', 'a branch, tag or commit (a non-empty string)', options.revision);
  }
  for (const [part, methods] of Object.entries(PART_METHODS)) {
    const value = options[part];
    if (value === undefined || (typeof value === 'string' && value !== '')) continue;
    checkInstance(part, value, methods);
  }
  if (isObject(options.backend) && typeof options.backend.name !== 'string') {
    throw invalidArgument('backend', 'a backend with a name', options.backend);
  }
  if (isObject(options.tokenizer) && !isObject(options.tokenizer.special)) {
    throw invalidArgument('tokenizer', 'a tokenizer with special token ids', options.tokenizer);
  }
  for (const key of ['backendOptions', 'samplerOptions'] as const) {
    if (options[key] !== undefined && !isObject(options[key])) throw invalidArgument(key, 'an object', options[key]);
  }
  if (options.plugins !== undefined) {
    if (!Array.isArray(options.plugins)) throw invalidArgument('plugins', 'an array of plugins or module names', options.plugins);
    options.plugins.forEach((p, i) => {
      if (!(typeof p === 'string' && p !== '') && !(isObject(p) && typeof p.name === 'string' && isObject(p.module))) {
        throw invalidArgument(`plugins[${i}]`, 'a plugin (definePlugin) or a module name', p);
      }
    });
  }
  if (options.gemma2 !== undefined && !isObject(options.gemma2)) throw invalidArgument('gemma2', 'an object', options.gemma2);
  for (const key of ['onProgress', 'onDownloadProgress', 'onDownloadPlan', 'configure'] as const) {
    if (options[key] !== undefined && typeof options[key] !== 'function') throw invalidArgument(key, 'a function', options[key]);
  }
}

/** Runs a caller's or plugin's function; what it throws that is not already ours becomes a PaliGemmaError. */
export function guarded<T>(what: string, run: () => T): T {
  try {
    return run();
  } catch (e) {
    if (e instanceof PaliGemmaError) throw e;
    throw new PaliGemmaError(`${what} failed: ${(e instanceof Error ? e.message : String(e)).split('\n')[0]}`, 'plugin_failed');
  }
}

/** `guarded` for an async function (a plugin's tokenizer or image processor load()). */
export async function guardedAsync<T>(what: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (e) {
    if (e instanceof PaliGemmaError) throw e;
    throw new PaliGemmaError(`${what} failed: ${(e instanceof Error ? e.message : String(e)).split('\n')[0]}`, 'plugin_failed');
  }
}
