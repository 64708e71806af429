/**
 * The reference backend's own attention: direct loops over the float32 buffers, one query row
 * at a time, float64 softmax. Supports every mask kind, GQA, soft-capping and sliding windows.
 */
import type { AttentionKernel, AttentionOptions } from '../../interfaces/attention-kernel.js';
import type { Tensor, TensorBackend } from '../../interfaces/tensor-backend.js';
import { keyVisible, kvHeadFor } from '../../attention/attention-mask.js';
import { attentionDims } from '../../tensor/op-shapes.js';
import { ReferenceTensor, widen } from './reference-tensor.js';

export class ReferenceAttentionKernel implements AttentionKernel {
  readonly name = 'reference';

  attend(_backend: TensorBackend, q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor {
    return referenceAttention(q, k, v, opts);
  }
}

/** The oracle's loops, also the reference backend's fused `attention`. */
export function referenceAttention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor {
  const Q = widen(asRef(q)), K = widen(asRef(k)), V = widen(asRef(v));
  const { tq, hq, d, hkv, kvLength } = attentionDims(q.shape, k.shape, v.shape, opts.kvLength);
  const off = opts.queryOffset ?? 0;
  const out = new Float32Array(tq * hq * d);                            // [Tq, Hq, D]
  const scores = new Float64Array(kvLength);
  for (let i = 0; i < tq; i++) {
    for (let h = 0; h < hq; h++) {
      const g = kvHeadFor(h, hq, hkv);
      const qo = (i * hq + h) * d;
      let max = -Infinity;
      for (let j = 0; j < kvLength; j++) {
        if (!keyVisible(opts.mask, off + i, j, opts.slidingWindow)) { scores[j] = -Infinity; continue; }
        const ko = (j * hkv + g) * d;
        let s = 0;
        for (let x = 0; x < d; x++) s += Q[qo + x] * K[ko + x];
        s *= opts.scale;
        if (opts.softCap !== undefined) s = opts.softCap * Math.tanh(s / opts.softCap);
        scores[j] = s;
        if (s > max) max = s;
      }
      let sum = 0;
      for (let j = 0; j < kvLength; j++) { scores[j] = Math.exp(scores[j] - max); sum += scores[j]; }
      for (let j = 0; j < kvLength; j++) {
        const p = scores[j] / sum;
        if (p === 0) continue;
        const vo = (j * hkv + g) * d;
        for (let x = 0; x < d; x++) out[qo + x] += p * V[vo + x];
      }
    }
  }
  return new ReferenceTensor([tq, hq, d], out);
}

function asRef(t: Tensor): ReferenceTensor {
  if (!(t instanceof ReferenceTensor)) throw new Error('reference attention got a tensor from another backend');
  return t;
}
