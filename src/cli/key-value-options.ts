import { PaliGemmaError } from '../interfaces/errors.js';

/** Commander collector for a repeatable flag. */
export const collect = (v: string, acc: string[]): string[] => [...acc, v];

/**
 * Parses repeated `KEY=VALUE` items of a flag (`--backend-option`, `--sampler-option`) into an
 * options object. VALUE is read as JSON when it parses (`3`, `0.2`, `true`, `null`, `"int8"`,
 * `[1,2]`), else kept as the plain string (`int8`, `cuda`). The first `=` splits key from value;
 * a later item with the same key wins. An item without `=`, with an empty key or with a key such
 * as `__proto__` is a PaliGemmaError naming the flag and the item.
 */
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype', '__defineGetter__', '__defineSetter__', '__lookupGetter__', '__lookupSetter__']);

export function parseKeyValueOptions(flag: string, items: readonly string[] | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const item of items ?? []) {
    const eq = item.indexOf('=');
    const key = eq < 0 ? '' : item.slice(0, eq).trim();
    if (eq < 0 || key === '') {
      throw new PaliGemmaError(`invalid ${flag} ${JSON.stringify(item)}: expected KEY=VALUE with a non-empty KEY`);
    }
    // A key that names Object's own plumbing is a typo at best and prototype pollution at worst.
    if (FORBIDDEN_KEYS.has(key)) {
      throw new PaliGemmaError(`invalid ${flag} ${JSON.stringify(item)}: key ${JSON.stringify(key)} is not an option name`, 'invalid_option');
    }
    // defineProperty: the key stays a plain own key whatever it is.
    Object.defineProperty(out, key, { value: parseValue(item.slice(eq + 1)), enumerable: true, writable: true, configurable: true });
  }
  return out;
}

function parseValue(raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch {
    return raw;
  }
}
