/**
 * The ONNX backend's attention kernel: one fused subgraph per call (batched over kv heads,
 * GQA-aware), attending over every row of the preallocated cache with an additive mask fed as
 * an input, so prefill and decode graphs keep their shapes as the cache fills.
 * On another backend it falls back to the plain, op-by-op kernel.
 */
import type { AttentionKernel, AttentionOptions } from '../../interfaces/attention-kernel.js';
import type { Tensor, TensorBackend } from '../../interfaces/tensor-backend.js';
import { PlainAttentionKernel } from '../../kernels/plain-attention-kernel.js';
import { OnnxBackend } from './onnx-backend.js';

export class OnnxAttentionKernel implements AttentionKernel {
  readonly name = 'onnx';
  private readonly fallback = new PlainAttentionKernel();

  attend(backend: TensorBackend, q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor {
    if (backend instanceof OnnxBackend) return backend.attention(q, k, v, opts);
    return this.fallback.attend(backend, q, k, v, opts);
  }
}
