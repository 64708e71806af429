import { PaliGemmaError } from '../interfaces/errors.js';

/** Commander collector for a repeatable flag. */
export const collect = (v: string, acc: string[]): string[] => [...acc, v];

/**
 * Parses repeated `KEY=VALUE` items of a flag (`--backend-option`, `--sampler-option`) into an
 * options object. VALUE is read as JSON when it parses (`3`, `0.2`, `true`, `null`, `"int8"`,
 * `[1,2]`), else kept as the plain string (`int8`, `cuda`). The first `=` splits key from value;
 * a later item with the same key wins. An item without `=` or with an empty key is a
 * PaliGemmaError naming the flag and the item.
 */
export function parseKeyValueOptions(flag: string, items: readonly string[] | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const item of items ?? []) {
    const eq = item.indexOf('=');
    const key = eq < 0 ? '' : item.slice(0, eq).trim();
    if (eq < 0 || key === '') {
      throw new PaliGemmaError(`invalid ${flag} ${JSON.stringify(item)}: expected KEY=VALUE with a non-empty KEY`);
    }
    // defineProperty: a key such as __proto__ stays a plain own key.
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
