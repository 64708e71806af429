/**
 * Argument checks of the public entry points (createPipeline, generate, stream, score): what a
 * caller passes is checked before any work, and anything wrong is a PaliGemmaError naming the
 * argument, what was expected and what came instead. An unknown option key is refused by name,
 * so that a typo (`maxNewToken`) cannot pass unseen.
 */
import { PaliGemmaError } from '../interfaces/errors.js';

/** Short, safe description of a value for a message: its type, or the value itself when small. */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'string') return value.length > 40 ? `a string of ${value.length} characters` : JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return `${typeof value} ${String(value)}`;
  if (typeof value === 'function') return 'a function';
  if (Array.isArray(value)) return 'an array';
  const ctor = (value as object).constructor?.name;
  return ctor && ctor !== 'Object' ? `a ${ctor}` : 'an object';
}

export function invalidArgument(what: string, expected: string, got: unknown): PaliGemmaError {
  return new PaliGemmaError(`invalid ${what}: expected ${expected}, got ${describe(got)}`, 'invalid_argument');
}

/** True for `{}`-style objects (not arrays, class instances are allowed). */
export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

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
