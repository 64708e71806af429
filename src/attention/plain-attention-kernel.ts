/**
 * The attention kernels bound by name. `attend` (also registered as 'onnx', 'tfjs' and 'webgpu',
 * the names those backends' kernels had) runs the backend's fused attention when it declares
 * one, else attention from core ops; `plain` always builds it from core ops, whatever the
 * backend declares (a baseline, and what a profiler shows op by op).
 */
import type { AttentionKernel, AttentionOptions } from '../interfaces/attention-kernel.js';
import type { Tensor, TensorBackend } from '../interfaces/tensor-backend.js';
import { attend, attendFromCore } from './attend.js';
import { DEFAULT_ATTENTION_BLOCK_ELEMENTS } from './query-blocks.js';

export class AttendKernel implements AttentionKernel {
  /** @param blockElements score elements per query block of the core-op path; 0: one block. */
  constructor(readonly name = 'attend', private readonly blockElements = DEFAULT_ATTENTION_BLOCK_ELEMENTS) {}

  attend(backend: TensorBackend, q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor {
    return attend(backend, q, k, v, opts, this.blockElements);
  }
}

export class PlainAttentionKernel implements AttentionKernel {
  readonly name = 'plain';

  /** @param blockElements score elements per query block (heads × rows × keys); 0: one block. */
  constructor(private readonly blockElements = DEFAULT_ATTENTION_BLOCK_ELEMENTS) {}

  attend(backend: TensorBackend, q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor {
    return attendFromCore(backend, q, k, v, opts, this.blockElements);
  }
}
