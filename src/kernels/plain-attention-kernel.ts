/**
 * Attention built only from TensorBackend ops, head by head. Any backend gets a correct kernel
 * from this; backends with a fused kernel register their own. Soft-capping goes through
 * genericTanh (softmax-based) and the sliding window through the shared additive mask.
 */
import type { AttentionKernel, AttentionOptions } from '../interfaces/attention-kernel.js';
import type { Tensor, TensorBackend } from '../interfaces/tensor-backend.js';
import { additiveMask, kvHeadFor } from './attention-mask.js';
import { softCap } from './generic-tanh.js';

export class PlainAttentionKernel implements AttentionKernel {
  readonly name = 'plain';

  attend(backend: TensorBackend, q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor {
    const [tq, hq, d] = q.shape;
    const hkv = k.shape[1];
    const kvLength = opts.kvLength ?? k.shape[0];
    const live: Tensor[] = [];
    const keep = <T extends Tensor>(t: T): T => { live.push(t); return t; };

    const qh = keep(backend.transpose(q, [1, 0, 2]));                    // [Hq, Tq, D]
    const kValid = kvLength === k.shape[0] ? k : keep(backend.slice(k, 0, 0, kvLength));
    const vValid = kvLength === v.shape[0] ? v : keep(backend.slice(v, 0, 0, kvLength));
    const kh = keep(backend.transpose(kValid, [1, 0, 2]));               // [Hkv, Tk, D]
    const vh = keep(backend.transpose(vValid, [1, 0, 2]));               // [Hkv, Tk, D]
    const mask = keep(backend.upload(additiveMask(tq, kvLength, opts), [tq, kvLength]));

    const heads: Tensor[] = [];
    for (let h = 0; h < hq; h++) {
      const g = kvHeadFor(h, hq, hkv);
      const qi = keep(backend.reshape(keep(backend.slice(qh, 0, h, h + 1)), [tq, d]));       // [Tq, D]
      const ki = keep(backend.reshape(keep(backend.slice(kh, 0, g, g + 1)), [kvLength, d])); // [Tk, D]
      const vi = keep(backend.reshape(keep(backend.slice(vh, 0, g, g + 1)), [kvLength, d])); // [Tk, D]
      let scores = keep(backend.scale(keep(backend.matmul(qi, ki, { transposeB: true })), opts.scale)); // [Tq, Tk]
      // Gemma 2 soft-caps the scaled scores before the mask is added.
      if (opts.softCap !== undefined) scores = keep(softCap(backend, scores, opts.softCap));
      const probs = keep(backend.softmax(keep(backend.add(scores, mask))));                 // [Tq, Tk]
      heads.push(keep(backend.reshape(keep(backend.matmul(probs, vi)), [tq, 1, d])));       // [Tq, 1, D]
    }
    const out = backend.concat(heads, 1);                                 // [Tq, Hq, D]
    backend.dispose(live);
    return out;
  }
}
