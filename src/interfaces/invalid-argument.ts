/**
 * The one shape of a bad-argument error: `invalid WHAT: expected X, got Y`, with a short, safe
 * description of what came. Every layer that checks a caller's argument uses it.
 */
import { PaliGemmaError } from './errors.js';

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
