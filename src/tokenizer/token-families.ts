/**
 * PaliGemma's numbered special tokens (`<locNNNN>` boxes, `<segNNN>` mask codes), read from a
 * tokenizer that may have all, part or none of them. A tokenizer without them still loads and
 * runs captions and answers; a task that needs them asks for them and gets an error naming what
 * is missing.
 *
 * ```ts
 * const loc = tokenFamily(ids, locToken, 1024, '<locNNNN>');
 * loc.id(42);                                          // id of <loc0042>, or undefined
 * requireFamily(tokenizer.special.families?.loc, 'detection', 'tokenizer.json');   // throws when incomplete
 * ```
 */
import { PaliGemmaError } from '../interfaces/errors.js';
import type { TokenFamily } from '../interfaces/tokenizer.js';

/** The family `name(0)`…`name(count-1)` as found in a token → id map. */
export function tokenFamily(ids: ReadonlyMap<string, number>, name: (i: number) => string, count: number, pattern: string): TokenFamily {
  return new FoundFamily(pattern, Array.from({ length: count }, (_, i) => ids.get(name(i))));
}

/** Plain data plus methods on the prototype, so two equal families compare deep-equal. */
class FoundFamily implements TokenFamily {
  readonly expected: number;
  readonly present: number;

  constructor(readonly pattern: string, private readonly byIndex: readonly (number | undefined)[]) {
    this.expected = byIndex.length;
    this.present = byIndex.filter((id) => id !== undefined).length;
  }

  id(i: number): number | undefined {
    return Number.isInteger(i) && i >= 0 && i < this.expected ? this.byIndex[i] : undefined;
  }

  missing(): number[] {
    return this.byIndex.flatMap((id, i) => (id === undefined ? [i] : []));
  }
}

/** All ids in order when the family is complete, else empty (the `special.loc` / `special.seg` form). */
export function completeIds(family: TokenFamily): number[] {
  if (family.present !== family.expected) return [];
  return Array.from({ length: family.expected }, (_, i) => family.id(i)!);
}

const SHOWN = 3;

/**
 * Throws PaliGemmaError('missing_tokens') unless every member of `family` exists; `task` and
 * `source` go into the message ('detection', 'tokenizer.json').
 */
export function requireFamily(family: TokenFamily | undefined, task: string, source = 'the tokenizer'): void {
  if (family === undefined) {
    throw new PaliGemmaError(`${task} needs PaliGemma's numbered special tokens, but ${source} does not report them`, 'missing_tokens');
  }
  if (family.present === family.expected) return;
  const missing = family.missing();
  const digits = family.pattern.length - family.pattern.replace(/N/g, '').length;
  const prefix = family.pattern.slice(0, family.pattern.indexOf('N'));
  const show = missing.slice(0, SHOWN).map((i) => `${prefix}${String(i).padStart(digits, '0')}>`).join(', ');
  throw new PaliGemmaError(
    `${task} needs all ${family.expected} ${family.pattern} tokens, but ${source} has ${family.present} `
    + `(missing ${show}${missing.length > SHOWN ? ` and ${missing.length - SHOWN} more` : ''}); use the tokenizer.json of a PaliGemma checkpoint`,
    'missing_tokens');
}
