/**
 * top-p (nucleus): keeps the smallest set of most likely tokens whose probability adds up to at
 * least p — the token that crosses p is kept — and sets the rest to -Infinity. At least one
 * token always survives; p = 1 keeps every token that has a finite logit. Ties in probability
 * are ordered by lower id.
 */
import { shiftedExp } from './log-softmax.js';
import { checkTopP, type LogitsTransform } from './logits-transform.js';

const BINS = 4096;

/**
 * Which ids top-p keeps, as a 0/1 mask. Instead of sorting the whole vocabulary, tokens are
 * bucketed by -log(weight) (monotone in the weight, so equal weights share a bucket); whole
 * buckets are kept from the most likely down, and only the bucket that crosses p is sorted.
 */
export function topPMask(logits: ArrayLike<number>, p: number): Uint8Array {
  const n = logits.length;
  const mask = new Uint8Array(n);
  const { e, sum } = shiftedExp(logits);
  if (!(sum > 0)) return mask;
  if (p >= 1) {
    for (let i = 0; i < n; i++) if (logits[i] > -Infinity) mask[i] = 1;
    return mask;
  }
  const target = p * sum;
  const depth = new Float64Array(n);
  let deepest = 0;
  for (let i = 0; i < n; i++) {
    if (e[i] > 0) {
      const d = -Math.log(e[i]);
      depth[i] = d;
      if (d > deepest) deepest = d;
    }
  }
  const scale = deepest > 0 ? (BINS - 1) / deepest : 0;
  const binOf = (i: number) => Math.floor(depth[i] * scale);
  const mass = new Float64Array(BINS);
  for (let i = 0; i < n; i++) if (e[i] > 0) mass[binOf(i)] += e[i];
  let cum = 0, cross = 0;
  while (cross < BINS && cum + mass[cross] < target) cum += mass[cross++];
  const members: number[] = [];
  for (let i = 0; i < n; i++) {
    if (!(e[i] > 0)) continue;
    const b = binOf(i);
    if (b < cross) mask[i] = 1;
    else if (b === cross) members.push(i);
  }
  // cross === BINS only when rounding kept the running sum below the target: keep everything.
  members.sort((a, b) => e[b] - e[a] || a - b);
  for (const i of members) {
    mask[i] = 1;
    cum += e[i];
    if (cum >= target) break;
  }
  return mask;
}

/** Ids kept by top-p, ascending. */
export function topPIds(logits: ArrayLike<number>, p: number): number[] {
  const mask = topPMask(logits, p);
  const ids: number[] = [];
  for (let i = 0; i < mask.length; i++) if (mask[i]) ids.push(i);
  return ids;
}

export function topP(p: number): LogitsTransform {
  checkTopP(p);
  return {
    name: `top-p(${p})`,
    apply(logits) {
      if (p >= 1) return Float32Array.from(logits);
      const mask = topPMask(logits, p);
      const out = new Float32Array(logits.length);
      for (let i = 0; i < out.length; i++) out[i] = mask[i] ? logits[i] : -Infinity;
      return out;
    },
  };
}
