import type { AttentionMask, AttentionOptions } from '../interfaces/attention-kernel.js';

/**
 * Whether query at absolute index q may see key j (both 0-based indices into the key rows).
 * The single definition every kernel and the conformance kit share.
 *
 * With a sliding window w this is Hugging Face's rule for PaliGemma 2:
 *   visible(q, j) = (mask(q, j) ∧ q − w < j) ∨ (q and j both in the bidirectional prefix),
 * so prefix rows see the whole prefix even in sliding layers, and every other row sees
 * mask ∩ window. The prefix rule is checked before the window for that reason.
 */
export function keyVisible(mask: AttentionMask, q: number, j: number, slidingWindow?: number): boolean {
  if (mask.kind === 'prefixLm' && q < mask.prefixLength && j < mask.prefixLength) return true;
  if (slidingWindow !== undefined && q - j >= slidingWindow) return false;
  switch (mask.kind) {
    case 'bidirectional': return true;
    case 'causal': return j <= q;
    case 'prefixLm': return j < mask.prefixLength || j <= q;
  }
}

/**
 * Additive mask [Tq, width]: 0 where visible, -Infinity elsewhere. `width` (default kvLength)
 * may exceed kvLength for a kernel that attends over a whole preallocated cache: columns from
 * kvLength on are hidden.
 */
export function additiveMask(tq: number, kvLength: number, opts: AttentionOptions, width = kvLength): Float32Array {
  const off = opts.queryOffset ?? 0;
  const out = new Float32Array(tq * width);
  for (let i = 0; i < tq; i++) {
    for (let j = 0; j < width; j++) {
      if (j >= kvLength || !keyVisible(opts.mask, off + i, j, opts.slidingWindow)) out[i * width + j] = -Infinity;
    }
  }
  return out;
}

/** Query head h reads this kv head (grouped-query attention). */
export function kvHeadFor(h: number, numHeads: number, numKvHeads: number): number {
  return Math.floor(h / (numHeads / numKvHeads));
}
