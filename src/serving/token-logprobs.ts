/**
 * A sampled token's log-probability and the top-N alternatives, from one row of logits, without
 * the two full float64 arrays `logSoftmax` builds (over a 257k vocabulary, per row and per step,
 * that work and its garbage grew with the batch and showed in batched decode). Same arithmetic
 * as `topLogprobs(logSoftmax(logits), n)`, in the same order, so the numbers are bit-identical.
 *
 * ```ts
 * const { logprob, top } = tokenLogprobs(logits, token, 5);
 * ```
 */
import type { TokenLogprob } from '../generation/generation-types.js';
import { topLogprobs } from '../generation/generation-pipeline.js';
import { logSoftmax } from '../samplers/log-softmax.js';

export function tokenLogprobs(logits: Float32Array, token: number, topN: number): { logprob: number; top: TokenLogprob[] } {
  const n = logits.length;
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (logits[i] > max) max = logits[i];
  if (!(max > -Infinity && max < Infinity)) {
    // All -Infinity/NaN, or an +Infinity logit: logSoftmax's own special cases.
    const lp = logSoftmax(logits);
    return { logprob: lp[token], top: topLogprobs(lp, topN) };
  }
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const x = logits[i];
    sum += x > -Infinity ? Math.exp(x - max) : 0;             // NaN compares false: weight 0
  }
  const logZ = max + Math.log(sum);                           // sum ≥ 1: the maximum adds exp(0)
  const lpOf = (x: number) => (x > -Infinity ? x - logZ : -Infinity);
  // Top N, highest first, the lower id first among equals (as topLogprobs).
  const best: TokenLogprob[] = [];
  for (let t = 0; t < n && topN > 0; t++) {
    const logprob = lpOf(logits[t]);
    if (best.length === topN && logprob <= best[topN - 1].logprob) continue;
    let at = best.length;
    while (at > 0 && best[at - 1].logprob < logprob) at--;
    best.splice(at, 0, { token: t, logprob });
    if (best.length > topN) best.pop();
  }
  return { logprob: lpOf(logits[token]), top: best };
}
