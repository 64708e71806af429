/**
 * A backend's own fused attention, exposed as an AttentionKernel: when the tensors belong to
 * that backend it calls `backend.attention`; otherwise it hands off to `fallback` (the plain
 * kernel for backends whose ops work anywhere), or refuses when there is none.
 */
import type { AttentionKernel, AttentionOptions } from '../interfaces/attention-kernel.js';
import type { Tensor, TensorBackend } from '../interfaces/tensor-backend.js';

/** A backend with a fused attention entry point. */
export interface FusedAttentionBackend extends TensorBackend {
  attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor;
}

export class BackendAttentionKernel<B extends FusedAttentionBackend> implements AttentionKernel {
  constructor(
    readonly name: string,
    private readonly owns: (backend: TensorBackend) => backend is B,
    private readonly fallback?: AttentionKernel,
  ) {}

  attend(backend: TensorBackend, q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor {
    if (this.owns(backend)) return backend.attention(q, k, v, opts);
    if (!this.fallback) {
      throw new Error(`the ${this.name} attention kernel runs only on the ${this.name} backend, not '${backend.name}'`);
    }
    return this.fallback.attend(backend, q, k, v, opts);
  }
}
