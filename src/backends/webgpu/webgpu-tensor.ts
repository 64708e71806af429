/// <reference types="@webgpu/types" />
import type { DType, Tensor } from '../../interfaces/tensor-backend.js';

/**
 * One device buffer shared by every handle that views it (reshape makes a second handle onto
 * the same storage). The storage goes back to the pool when its last handle is disposed.
 *
 * f32 storage holds one float per element. f16 and bf16 storage is packed: two halves per u32
 * word, element 2w in the low half of word w (the buffer is padded to whole words).
 *
 * `buffer`, `bytes` and `dtype` change once at most: when an uploaded f32 weight is narrowed to
 * f16 (the backend's `weights: 'f16'` option). Because every alias holds this same object, all
 * of them see the narrowed storage at once; nothing can keep the old buffer by accident.
 */
export class GpuStorage {
  /** Live handles onto this storage. */
  refs = 1;
  /**
   * Made by `upload` as f32 and never written since (writeRows clears it): the backend may
   * narrow it to f16 on its first use as a weight operand.
   */
  narrowable = false;
  constructor(
    public buffer: GpuBufferRecord,
    /** Bytes of tensor data (the buffer may be larger: pooled buffers are size classes). */
    public bytes: number,
    /** How the elements are stored. */
    public dtype: DType = 'f32',
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
  disposed = false;
  constructor(
    readonly shape: readonly number[],
    readonly storage: GpuStorage,
    /** The backend that owns it (tensors must not cross backends). */
    readonly owner: object,
  ) {}

  /** The storage dtype: 'f32', or 'f16'/'bf16' for packed 16-bit storage. */
  get dtype(): DType {
    return this.storage.dtype;
  }

  get size(): number {
    return sizeOf(this.shape);
  }

  get buffer(): GpuBufferRecord {
    return this.storage.buffer;
  }
}

/** Bytes that `n` elements of `dtype` take on the device: 4 each, or 2 each rounded up to words. */
export function storageBytes(n: number, dtype: DType): number {
  return dtype === 'f32' ? n * 4 : Math.ceil(n / 2) * 4;
}

export function sizeOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
