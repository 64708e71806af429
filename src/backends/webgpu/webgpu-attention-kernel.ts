/**
 * The WebGPU backend's fused attention: one WGSL kernel with an online (flash-style) softmax,
 * every mask kind, sliding windows, soft-capping and grouped-query heads. See attentionShader.
 */
import type { AttentionKernel, AttentionOptions } from '../../interfaces/attention-kernel.js';
import type { Tensor, TensorBackend } from '../../interfaces/tensor-backend.js';
import { WebGpuBackend } from './webgpu-backend.js';

export class WebGpuAttentionKernel implements AttentionKernel {
  readonly name = 'webgpu';

  attend(backend: TensorBackend, q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor {
    if (!(backend instanceof WebGpuBackend)) {
      throw new Error(`the webgpu attention kernel runs only on the webgpu backend, not '${backend.name}'`);
    }
    return backend.attention(q, k, v, opts);
  }
}
