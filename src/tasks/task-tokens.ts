/**
 * The token side of the loc/seg tasks: checking that a tokenizer has the `<locNNNN>` and
 * `<segNNN>` tokens (looked up by their strings, so a tokenizer with a partial family or none
 * is reported by what it lacks), and turning generated ids back into text that keeps those
 * tokens whether or not the tokenizer calls them special.
 */
import { PaliGemmaError } from '../interfaces/errors.js';
import type { Tokenizer } from '../interfaces/tokenizer.js';
import { LOC_BINS, SEG_CODES } from './loc-parser.js';

export const locTokenName = (i: number): string => `<loc${String(i).padStart(4, '0')}>`;
export const segTokenName = (i: number): string => `<seg${String(i).padStart(3, '0')}>`;

const TASK_TOKEN_RE = /^<(loc\d{4}|seg\d{3})>$/;

const tables = new WeakMap<Tokenizer, Map<string, number>>();

/** Token string → id for every loc/seg token the tokenizer has (one scan, cached). */
function taskTokenIds(tokenizer: Tokenizer): Map<string, number> {
  let m = tables.get(tokenizer);
  if (!m) {
    m = new Map();
    for (let id = 0; id < tokenizer.vocabSize; id++) {
      const t = tokenizer.idToToken(id);
      if (t !== undefined && t.length <= 9 && TASK_TOKEN_RE.test(t) && !m.has(t)) m.set(t, id);
    }
    tables.set(tokenizer, m);
  }
  return m;
}

/** The id of one `<locNNNN>` / `<segNNN>` token, or undefined when the tokenizer lacks it. */
export function taskTokenId(tokenizer: Tokenizer, name: string): number | undefined {
  return taskTokenIds(tokenizer).get(name);
}

function missing(tokenizer: Tokenizer, name: (i: number) => string, count: number): string[] {
  const ids = taskTokenIds(tokenizer);
  const out: string[] = [];
  for (let i = 0; i < count; i++) if (!ids.has(name(i))) out.push(name(i));
  return out;
}

/** Throws, naming what is missing, unless the tokenizer has all the tokens `task` reads. */
export function requireTaskTokens(tokenizer: Tokenizer, task: 'detect' | 'segment'): void {
  const families: Array<[string, (i: number) => string, number]> = [['<loc0000>..<loc1023>', locTokenName, LOC_BINS]];
  if (task === 'segment') families.push(['<seg000>..<seg127>', segTokenName, SEG_CODES]);
  for (const [family, name, count] of families) {
    const gone = missing(tokenizer, name, count);
    if (gone.length === 0) continue;
    const which = gone.length === count ? 'has none of them' : `lacks ${gone.length} of ${count}: ${gone.slice(0, 3).join(', ')}${gone.length > 3 ? ', …' : ''}`;
    throw new PaliGemmaError(`${task} needs the tokenizer's ${family} tokens; this tokenizer ${which}`, 'unsupported_model');
  }
}

/**
 * Generated ids → text with every loc/seg token written out as `<locNNNN>` / `<segNNN>`, the
 * rest decoded as usual (special tokens such as <eos> dropped).
 */
export function taskText(tokenizer: Tokenizer, ids: readonly number[]): string {
  let out = '';
  let run: number[] = [];
  const flush = () => {
    if (run.length) out += tokenizer.decode(run, { skipSpecialTokens: true });
    run = [];
  };
  for (const id of ids) {
    const t = tokenizer.idToToken(id);
    if (t !== undefined && TASK_TOKEN_RE.test(t)) { flush(); out += t; } else run.push(id);
  }
  flush();
  return out;
}

/**
 * The inverse of taskText: an answer such as `<loc0100><loc0200><loc0300><loc0400> cat` → ids
 * (task tokens by lookup, the text between them encoded). For forcing known answers in tests
 * and demos; throws naming any task token the tokenizer lacks.
 */
export function encodeTaskText(tokenizer: Tokenizer, text: string): number[] {
  const ids: number[] = [];
  let at = 0;
  for (const m of text.matchAll(/<(?:loc\d{4}|seg\d{3})>/g)) {
    if (m.index > at) ids.push(...tokenizer.encode(text.slice(at, m.index)));
    const id = taskTokenId(tokenizer, m[0]);
    if (id === undefined) throw new PaliGemmaError(`the tokenizer has no ${m[0]} token`, 'unsupported_model');
    ids.push(id);
    at = m.index + m[0].length;
  }
  if (at < text.length) ids.push(...tokenizer.encode(text.slice(at)));
  return ids;
}
