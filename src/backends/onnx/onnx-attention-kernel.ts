/**
 * The ONNX backend's attention kernel: one fused subgraph per call (batched over kv heads,
 * GQA-aware), attending over every row of the preallocated cache with an additive mask fed as
 * an input, so prefill and decode graphs keep their shapes as the cache fills.
 * On another backend it falls back to the plain, op-by-op kernel.
 */
import { BackendAttentionKernel } from '../../attention/backend-attention-kernel.js';
import { PlainAttentionKernel } from '../../attention/plain-attention-kernel.js';
import { OnnxBackend } from './onnx-backend.js';

export class OnnxAttentionKernel extends BackendAttentionKernel<OnnxBackend> {
  constructor() {
    super('onnx', (b): b is OnnxBackend => b instanceof OnnxBackend, new PlainAttentionKernel());
  }
}
