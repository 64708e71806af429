/**
 * The WebGPU backend's fused attention: one WGSL kernel with an online (flash-style) softmax,
 * every mask kind, sliding windows, soft-capping and grouped-query heads. See attentionShader.
 */
import { BackendAttentionKernel } from '../../attention/backend-attention-kernel.js';
import { WebGpuBackend } from './webgpu-backend.js';

export class WebGpuAttentionKernel extends BackendAttentionKernel<WebGpuBackend> {
  constructor() {
    super('webgpu', (b): b is WebGpuBackend => b instanceof WebGpuBackend);
  }
}
