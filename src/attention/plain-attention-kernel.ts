/**
 * Attention built only from TensorBackend ops, head by head. Any backend gets a correct kernel
 * from this; backends with a fused kernel register their own. Soft-capping goes through
 * genericTanh (softmax-based) and the sliding window through the shared additive mask. Long
 * prompts run in query blocks (query-blocks.ts) and each head's scores are released before the
 * next head's, so at most one [rows, keys] score matrix is alive at a time.
 */
import type { AttentionKernel, AttentionOptions } from '../interfaces/attention-kernel.js';
import type { Tensor, TensorBackend } from '../interfaces/tensor-backend.js';
import { additiveMask, kvHeadFor } from './attention-mask.js';
import { softCap } from './generic-tanh.js';
import { DEFAULT_ATTENTION_BLOCK_ELEMENTS, queryBlocks } from './query-blocks.js';

export class PlainAttentionKernel implements AttentionKernel {
  readonly name = 'plain';

  /** @param blockElements score elements per query block (heads × rows × keys); 0: one block. */
  constructor(private readonly blockElements = DEFAULT_ATTENTION_BLOCK_ELEMENTS) {}

  attend(backend: TensorBackend, q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor {
    const [tq, hq, d] = q.shape;
    const hkv = k.shape[1];
    const kvLength = opts.kvLength ?? k.shape[0];
    const off = opts.queryOffset ?? 0;
    const live: Tensor[] = [];
    const keep = <T extends Tensor>(t: T, into: Tensor[] = live): T => { into.push(t); return t; };

    const kValid = kvLength === k.shape[0] ? k : keep(backend.slice(k, 0, 0, kvLength));
    const vValid = kvLength === v.shape[0] ? v : keep(backend.slice(v, 0, 0, kvLength));
    const kh = keep(backend.transpose(kValid, [1, 0, 2]));               // [Hkv, Tk, D]
    const vh = keep(backend.transpose(vValid, [1, 0, 2]));               // [Hkv, Tk, D]
    const kvHead = (t: Tensor, g: number) => keep(backend.reshape(keep(backend.slice(t, 0, g, g + 1)), [kvLength, d]));
    const ks = Array.from({ length: hkv }, (_, g) => kvHead(kh, g));    // [Tk, D] each
    const vs = Array.from({ length: hkv }, (_, g) => kvHead(vh, g));

    const blocks: Tensor[] = [];
    for (const [s, e] of queryBlocks(tq, hq, kvLength, this.blockElements)) {
      const rows = e - s, block: Tensor[] = [];
      const qb = s === 0 && e === tq ? q : keep(backend.slice(q, 0, s, e), block);           // [rows, Hq, D]
      const qh = keep(backend.transpose(qb, [1, 0, 2]), block);                              // [Hq, rows, D]
      const mask = keep(backend.upload(additiveMask(rows, kvLength, { ...opts, queryOffset: off + s }), [rows, kvLength]), block);
      const heads: Tensor[] = [];
      for (let h = 0; h < hq; h++) {
        const g = kvHeadFor(h, hq, hkv), head: Tensor[] = [];
        const qi = keep(backend.reshape(keep(backend.slice(qh, 0, h, h + 1), head), [rows, d]), head);  // [rows, D]
        let scores = keep(backend.scale(keep(backend.matmul(qi, ks[g], { transposeB: true }), head), opts.scale), head); // [rows, Tk]
        // Gemma 2 soft-caps the scaled scores before the mask is added.
        if (opts.softCap !== undefined) scores = keep(softCap(backend, scores, opts.softCap), head);
        const probs = keep(backend.softmax(keep(backend.add(scores, mask), head)), head);           // [rows, Tk]
        heads.push(backend.reshape(keep(backend.matmul(probs, vs[g]), head), [rows, 1, d]));       // [rows, 1, D]
        backend.dispose(head);
      }
      blocks.push(backend.concat(heads, 1));                                                   // [rows, Hq, D]
      backend.dispose([...heads, ...block]);
    }
    const out = blocks.length === 1 ? blocks[0] : backend.concat(blocks, 0);                   // [Tq, Hq, D]
    if (blocks.length > 1) backend.dispose(blocks);
    backend.dispose(live);
    return out;
  }
}
