import { PaliGemmaError } from '../interfaces/errors.js';

/** Exit codes of the `paligemma` command. */
export const EXIT_USAGE = 2;

export interface ReportOptions {
  /** Add the stack trace. */
  verbose?: boolean;
  /** Print `{"error": {"code", "message"}}` instead of the `error:` line (commands run with --json). */
  json?: boolean;
}

/**
 * Reports an error on stderr and exits: 2 for errors the user can fix (PaliGemmaError, bad
 * flags), 1 for anything else. Plain form: one `error: …` line (a stack too with verbose). With
 * json: one line `{"error":{"code","message"}}`, so scripts never parse prose; stdout stays
 * reserved for results.
 */
export function reportAndExit(e: unknown, options: ReportOptions | boolean = {}): never {
  const { verbose = false, json = false } = typeof options === 'boolean' ? { verbose: options } : options;
  const err = e as Error;
  const commanderCode = (err as { code?: string })?.code;
  const isCommander = typeof commanderCode === 'string' && commanderCode.startsWith('commander.');
  const userError = e instanceof PaliGemmaError || isCommander;
  const message = (err?.message ?? String(e)).replace(/^error:\s*/i, '').split('\n')[0];
  if (json) {
    const code = e instanceof PaliGemmaError ? e.code : isCommander ? 'usage' : 'internal';
    process.stderr.write(`${JSON.stringify({ error: { code, message } })}\n`);
  } else {
    process.stderr.write(`error: ${message}\n`);
  }
  if (verbose && err?.stack) process.stderr.write(`${err.stack}\n`);
  process.exit(userError ? EXIT_USAGE : 1);
}

/** Plain decimal notation: `12`, `-3`, `0.5`, `.5`, `1e-3`; never `0x10`, `0b1`, `Infinity` or blanks. */
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;
/** A decimal integer: digits with an optional sign, nothing else. */
const DECIMAL_INTEGER = /^[+-]?\d+$/;

/** Parses a numeric option (decimal notation only) or fails with a message naming it. */
export function parseNumber(flag: string, value: string | undefined, check: (n: number) => boolean, expected: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!DECIMAL.test(value) || !Number.isFinite(n) || !check(n)) {
    throw new PaliGemmaError(`invalid ${flag} ${value}: expected ${expected}`, 'invalid_option');
  }
  return n;
}

/** Parses an integer option written as a decimal integer (`16`, not `0x10`, `1e3` or `16.0`), in [`min`, `max`]. */
export function parseInteger(flag: string, value: string | undefined, min?: number, max?: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  const expected = min === undefined ? 'a decimal integer'
    : max === undefined ? `a decimal integer ≥ ${min}` : `a decimal integer in ${min}..${max}`;
  if (!DECIMAL_INTEGER.test(value) || !Number.isSafeInteger(n) || (min !== undefined && n < min) || (max !== undefined && n > max)) {
    throw new PaliGemmaError(`invalid ${flag} ${value}: expected ${expected}`, 'invalid_option');
  }
  return n;
}
