/**
 * The one attention path: softmax(Q·Kᵀ·scale [soft-capped] + mask) · V, grouped-query aware.
 * `attend` calls the backend's fused `attention` when it declares one that handles the call
 * (`attentionHandles`), else `attendFromCore` builds it from core ops, head by head. Both follow
 * one mask rule (keyVisible / additiveMask in attention-mask.ts). Long prompts run in query
 * blocks (query-blocks.ts) and each head's scores are released before the next head's, so at
 * most one [rows, keys] score matrix is alive at a time.
 */
import type { AttentionOptions } from '../interfaces/attention-kernel.js';
import type { Tensor, TensorBackend } from '../interfaces/tensor-backend.js';
import { defaultSoftmax } from '../ops/default-ops.js';
import { TensorScope } from '../tensor/tensor-scope.js';
import { additiveMask, kvHeadFor } from './attention-mask.js';
import { DEFAULT_ATTENTION_BLOCK_ELEMENTS, queryBlocks } from './query-blocks.js';

/** q [Tq, Hq, D], k/v [Tk, Hkv, D] → [Tq, Hq, D]: fused when the backend can, else from core ops. */
export function attend(
  backend: TensorBackend, q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions,
  blockElements = DEFAULT_ATTENTION_BLOCK_ELEMENTS,
): Tensor {
  if (backend.attention && (backend.attentionHandles?.(q, k, opts) ?? true)) return backend.attention(q, k, v, opts);
  return attendFromCore(backend, q, k, v, opts, blockElements);
}

/** cap · tanh(x / cap), Gemma 2's logit soft-cap, through the core `unary('tanh')`. */
export function softCap(backend: TensorBackend, x: Tensor, cap: number): Tensor {
  const inner = backend.scale(x, 1 / cap);
  const t = backend.unary('tanh', inner);
  backend.dispose(inner);
  const out = backend.scale(t, cap);
  backend.dispose(t);
  return out;
}

/**
 * Attention from core ops (and the backend's softmax, fused or default). `blockElements`: score
 * elements per query block (heads × rows × keys); 0: one block.
 */
export function attendFromCore(
  backend: TensorBackend, q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions,
  blockElements = DEFAULT_ATTENTION_BLOCK_ELEMENTS,
): Tensor {
  const b = backend;
  // The one composite used here: the backend's own softmax, else the default from core ops.
  const softmax = (x: Tensor) => (b.softmax ? b.softmax(x) : defaultSoftmax(b, x));
  const [tq, hq, d] = q.shape;
  const hkv = k.shape[1];
  const kvLength = opts.kvLength ?? k.shape[0];
  const off = opts.queryOffset ?? 0;
  const s = new TensorScope(b);

  const kValid = kvLength === k.shape[0] ? k : s.track(b.slice(k, 0, 0, kvLength));
  const vValid = kvLength === v.shape[0] ? v : s.track(b.slice(v, 0, 0, kvLength));
  const kh = s.track(b.transpose(kValid, [1, 0, 2]));                     // [Hkv, Tk, D]
  const vh = s.track(b.transpose(vValid, [1, 0, 2]));                     // [Hkv, Tk, D]
  const kvHead = (t: Tensor, g: number) => s.track(b.reshape(s.track(b.slice(t, 0, g, g + 1)), [kvLength, d]));
  const ks = Array.from({ length: hkv }, (_, g) => kvHead(kh, g));       // [Tk, D] each
  const vs = Array.from({ length: hkv }, (_, g) => kvHead(vh, g));

  const blocks: Tensor[] = [];
  for (const [start, end] of queryBlocks(tq, hq, kvLength, blockElements)) {
    const rows = end - start, block = new TensorScope(b);
    const qb = start === 0 && end === tq ? q : block.track(b.slice(q, 0, start, end));          // [rows, Hq, D]
    const qh = block.track(b.transpose(qb, [1, 0, 2]));                                         // [Hq, rows, D]
    const mask = block.track(b.upload(additiveMask(rows, kvLength, { ...opts, queryOffset: off + start }), [rows, kvLength]));
    const heads: Tensor[] = [];
    for (let h = 0; h < hq; h++) {
      const g = kvHeadFor(h, hq, hkv), head = new TensorScope(b);
      const qi = head.track(b.reshape(head.track(b.slice(qh, 0, h, h + 1)), [rows, d]));       // [rows, D]
      let scores = head.track(b.scale(head.track(b.matmul(qi, ks[g], { transposeB: true })), opts.scale)); // [rows, Tk]
      // Gemma 2 soft-caps the scaled scores before the mask is added.
      if (opts.softCap !== undefined) scores = head.track(softCap(b, scores, opts.softCap));
      const probs = head.track(softmax(head.track(b.add(scores, mask))));                     // [rows, Tk]
      heads.push(b.reshape(head.track(b.matmul(probs, vs[g])), [rows, 1, d]));                  // [rows, 1, D]
      head.dispose();
    }
    blocks.push(b.concat(heads, 1));                                                            // [rows, Hq, D]
    b.dispose(heads);
    block.dispose();
  }
  const out = blocks.length === 1 ? blocks[0] : b.concat(blocks, 0);                            // [Tq, Hq, D]
  if (blocks.length > 1) b.dispose(blocks);
  s.dispose();
  return out;
}
