/**
 * How a result is judged against the oracle, as ggml's test-backend-ops does it: normalized
 * mean squared error mse(a, b) / mse(b, 0), plus a hard rule that a NaN or ±Inf where the oracle
 * is finite fails whatever the threshold.
 */

export interface Comparison {
  /** Normalized MSE over the positions where the oracle is finite; Infinity on a NaN/Inf or size mismatch. */
  error: number;
  /** max |a - b| over the same positions. */
  maxAbsDiff: number;
  /** Why the error is Infinity, or '' when it is a plain number. */
  problem: string;
  /** Flat index of the first non-finite mismatch, else of the largest difference. */
  at: number;
}

export function compare(actual: ArrayLike<number>, expected: ArrayLike<number>): Comparison {
  if (actual.length !== expected.length) {
    return { error: Infinity, maxAbsDiff: Infinity, problem: `${actual.length} elements, expected ${expected.length}`, at: 0 };
  }
  let diff2 = 0, ref2 = 0, maxAbs = 0, worst = 0, nan = 0, inf = 0, unmatched = 0, first = -1;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i], b = expected[i];
    if (!Number.isFinite(b)) {
      // The oracle's own non-finite values (say -Inf from a mask) must be matched exactly.
      if (!Object.is(a, b) && !(Number.isNaN(a) && Number.isNaN(b))) { unmatched++; if (first < 0) first = i; }
      continue;
    }
    if (!Number.isFinite(a)) {
      if (Number.isNaN(a)) nan++; else inf++;
      if (first < 0) first = i;
      continue;
    }
    const d = a - b;
    diff2 += d * d;
    ref2 += b * b;
    if (Math.abs(d) > maxAbs) { maxAbs = Math.abs(d); worst = i; }
  }
  if (first >= 0) {
    const what = [nan ? `${nan} NaN` : '', inf ? `${inf} Inf` : ''].filter(Boolean).join(' and ');
    const own = unmatched ? `${unmatched} values differ from the oracle's own NaN/Inf` : '';
    return { error: Infinity, maxAbsDiff: Infinity, problem: [what && `${what} where the oracle is finite`, own].filter(Boolean).join('; '), at: first };
  }
  // An all-zero oracle (e.g. zeros read back) falls back to the plain MSE.
  const error = ref2 > 0 ? diff2 / ref2 : diff2 / Math.max(1, expected.length);
  return { error, maxAbsDiff: maxAbs, problem: '', at: worst };
}

/** A flat row-major index as [i, j, ...] in `shape`. */
export function unflatten(flat: number, shape: readonly number[]): number[] {
  const idx: number[] = [];
  for (let d = shape.length - 1; d >= 0; d--) { idx.unshift(flat % shape[d]); flat = Math.floor(flat / shape[d]); }
  return idx;
}
