import { PaliGemmaError } from '../interfaces/errors.js';

/** Exit codes of the `paligemma` command. */
export const EXIT_USAGE = 2;

/** Prints one `error:` line (a stack too with --verbose) and exits 2 for user errors. */
export function reportAndExit(e: unknown, verbose: boolean): never {
  const err = e as Error;
  const userError = e instanceof PaliGemmaError || (err as { code?: string })?.code?.startsWith?.('commander.');
  const message = (err?.message ?? String(e)).replace(/^error:\s*/i, '').split('\n')[0];
  process.stderr.write(`error: ${message}\n`);
  if (verbose && err?.stack) process.stderr.write(`${err.stack}\n`);
  process.exit(userError ? EXIT_USAGE : 1);
}

/** Parses a numeric option or fails with a message naming it. */
export function parseNumber(flag: string, value: string | undefined, check: (n: number) => boolean, expected: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || !check(n)) {
    throw new PaliGemmaError(`invalid ${flag} ${value}: expected ${expected}`);
  }
  return n;
}
