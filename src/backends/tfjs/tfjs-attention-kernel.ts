/**
 * The tfjs backend's attention: a few TensorFlow.js ops per layer (grouped-query heads batched
 * by kv head, an additive mask only when some key is hidden). Tensors of another backend go
 * to the plain kernel built from backend ops.
 */
import type { AttentionKernel, AttentionOptions } from '../../interfaces/attention-kernel.js';
import type { Tensor, TensorBackend } from '../../interfaces/tensor-backend.js';
import { PlainAttentionKernel } from '../../kernels/plain-attention-kernel.js';
import { TfjsBackend } from './tfjs-backend.js';

export class TfjsAttentionKernel implements AttentionKernel {
  readonly name = 'tfjs';
  private readonly plain = new PlainAttentionKernel();

  attend(backend: TensorBackend, q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor {
    if (backend instanceof TfjsBackend) return backend.attention(q, k, v, opts);
    return this.plain.attend(backend, q, k, v, opts);
  }
}
