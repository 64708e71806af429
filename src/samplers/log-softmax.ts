/**
 * Log-probabilities and probabilities from logits, accumulated in float64 after subtracting
 * the maximum. -Infinity logits get -Infinity / 0; NaN logits count as -Infinity.
 *
 * ```ts
 * const lp = logSoftmax(logits);   // Float64Array, lp[i] = log p(i)
 * ```
 */

/** exp(x_i - max) for every entry (float64), with their sum; +Infinity logits share all mass. */
export function shiftedExp(logits: ArrayLike<number>): { e: Float64Array; sum: number; max: number } {
  const n = logits.length;
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (logits[i] > max) max = logits[i];
  const e = new Float64Array(n);
  let sum = 0;
  if (max === Infinity) {
    for (let i = 0; i < n; i++) if (logits[i] === Infinity) { e[i] = 1; sum += 1; }
  } else if (max > -Infinity) {
    for (let i = 0; i < n; i++) {
      const x = logits[i];
      const v = x > -Infinity ? Math.exp(x - max) : 0; // NaN compares false: weight 0
      e[i] = v;
      sum += v;
    }
  }
  return { e, sum, max };
}

/** log softmax over the whole array, in float64. */
export function logSoftmax(logits: ArrayLike<number>): Float64Array {
  const n = logits.length;
  const out = new Float64Array(n);
  const { sum, max } = shiftedExp(logits);
  if (!(sum > 0)) return out.fill(NaN);
  const logZ = max === Infinity ? Math.log(sum) : max + Math.log(sum);
  for (let i = 0; i < n; i++) {
    const x = logits[i];
    if (max === Infinity) out[i] = x === Infinity ? -Math.log(sum) : -Infinity;
    else out[i] = x > -Infinity ? x - logZ : -Infinity;
  }
  return out;
}

/** softmax over the whole array, in float64. */
export function softmax(logits: ArrayLike<number>): Float64Array {
  const { e, sum } = shiftedExp(logits);
  if (!(sum > 0)) return e.fill(NaN);
  for (let i = 0; i < e.length; i++) e[i] /= sum;
  return e;
}
