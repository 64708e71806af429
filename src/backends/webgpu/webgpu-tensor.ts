/// <reference types="@webgpu/types" />
import type { DType, Tensor } from '../../interfaces/tensor-backend.js';

/**
 * One device buffer shared by every handle that views it (reshape makes a second handle onto
 * the same storage). The storage goes back to the pool when its last handle is disposed.
 */
export class GpuStorage {
  /** Live handles onto this storage. */
  refs = 1;
  constructor(
    readonly buffer: GpuBufferRecord,
    /** Bytes of tensor data (the buffer may be larger: pooled buffers are size classes). */
    readonly bytes: number,
  ) {}
}

/** A device buffer plus the bookkeeping the pool and the recorder need. */
export interface GpuBufferRecord {
  readonly gpu: GPUBuffer;
  /** Allocated size in bytes (a pool size class). */
  readonly size: number;
  /** Recording epoch in which commands last referenced it (see WebGpuBackend.epoch). */
  epoch: number;
}

/** A WebGPU backend tensor: a shape and a handle on a storage. */
export class WebGpuTensor implements Tensor {
  readonly dtype: DType = 'f32';
  disposed = false;
  constructor(
    readonly shape: readonly number[],
    readonly storage: GpuStorage,
    /** The backend that owns it (tensors must not cross backends). */
    readonly owner: object,
  ) {}

  get size(): number {
    return sizeOf(this.shape);
  }

  get buffer(): GpuBufferRecord {
    return this.storage.buffer;
  }
}

export function sizeOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
