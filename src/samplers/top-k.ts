/**
 * top-k: keeps the k largest logits and sets the rest to -Infinity. Exactly k survive (fewer
 * only when fewer than k are > -Infinity); among equal logits the lower id wins. k at or
 * above the vocabulary size keeps everything.
 */
import { checkTopK, type LogitsTransform } from './logits-transform.js';

/** `a` ranks above `b`: larger logit, or equal logit and lower id. */
const above = (va: number, ia: number, vb: number, ib: number): boolean => va > vb || (va === vb && ia < ib);

/** Ids of the k best entries (> -Infinity only), via a size-k min-heap: O(n log k). */
export function topKIds(logits: ArrayLike<number>, k: number): number[] {
  const heap: number[] = []; // heap[0] is the worst of the kept
  const v = (j: number) => logits[heap[j]];
  const worse = (a: number, b: number) => above(v(b), heap[b], v(a), heap[a]); // heap[a] ranks below heap[b]
  const swap = (a: number, b: number) => { const t = heap[a]; heap[a] = heap[b]; heap[b] = t; };
  const siftDown = (j: number) => {
    for (;;) {
      const l = 2 * j + 1, r = l + 1;
      let m = j;
      if (l < heap.length && worse(l, m)) m = l;
      if (r < heap.length && worse(r, m)) m = r;
      if (m === j) return;
      swap(j, m);
      j = m;
    }
  };
  for (let i = 0; i < logits.length; i++) {
    const x = logits[i];
    if (!(x > -Infinity)) continue;
    if (heap.length < k) {
      heap.push(i);
      for (let j = heap.length - 1; j > 0;) {
        const p = (j - 1) >> 1;
        if (!worse(j, p)) break;
        swap(j, p);
        j = p;
      }
    } else if (above(x, i, v(0), heap[0])) {
      heap[0] = i;
      siftDown(0);
    }
  }
  return heap.sort((a, b) => a - b);
}

export function topK(k: number): LogitsTransform {
  checkTopK(k);
  return {
    name: `top-k(${k})`,
    apply(logits) {
      if (k >= logits.length) return Float32Array.from(logits);
      const out = new Float32Array(logits.length).fill(-Infinity);
      for (const i of topKIds(logits, k)) out[i] = logits[i];
      return out;
    },
  };
}
