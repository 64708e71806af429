/// <reference types="@webgpu/types" />
/**
 * Tensor memory of the webgpu backend. Storage comes from a size-class pool (buffer-pool.ts);
 * reshape shares storage with a reference count, so disposing either handle is safe. `live`
 * counts the storages held by live tensors and `liveBytes` their bytes.
 */
import { PaliGemmaError } from '../../interfaces/errors.js';
import type { DType, Tensor } from '../../interfaces/tensor-backend.js';
import { sizeOf } from '../../tensor/op-shapes.js';
import type { GpuRecorder } from './gpu-recorder.js';
import { GpuStorage, WebGpuTensor, storageBytes } from './webgpu-tensor.js';

export interface AllocateOptions {
  /** The buffer is written by queue.writeBuffer: it must not be one the pending commands use. */
  forUpload?: boolean;
  /** Storage dtype (default f32); 16-bit storage is packed. */
  dtype?: DType;
}

export class GpuMemory {
  /** Storages held by live tensors (reshape views share one). */
  live = 0;
  liveBytes = 0;

  /** Set by the backend's init(); ownership checks work before it. */
  rec!: GpuRecorder;

  constructor(private readonly owner: object) {}

  /** `t` as this backend's tensor; a foreign or disposed one is refused. */
  own(t: Tensor, allowDisposed = false): WebGpuTensor {
    if (!(t instanceof WebGpuTensor) || t.owner !== this.owner) throw new Error('tensor does not belong to this webgpu backend');
    if (t.disposed && !allowDisposed) throw new Error(`tensor [${t.shape}] was used after dispose`);
    return t;
  }

  allocate(shape: readonly number[], opts: AllocateOptions = {}): WebGpuTensor {
    return this.allocateEx(shape, opts).tensor;
  }

  /** A new tensor and whether its buffer is fresh from the device (hence zero). */
  allocateEx(shape: readonly number[], opts: AllocateOptions = {}): { tensor: WebGpuTensor; fresh: boolean } {
    const dtype = opts.dtype ?? 'f32';
    const bytes = storageBytes(sizeOf(shape), dtype);
    this.checkBufferLimit(shape, dtype, bytes);
    const { record, fresh } = this.rec.pool.acquire(bytes, opts.forUpload && this.rec.recording ? { notInEpoch: this.rec.epoch } : {});
    this.live++;
    this.liveBytes += bytes;
    return { tensor: new WebGpuTensor([...shape], new GpuStorage(record, bytes, dtype), this.owner), fresh };
  }

  /** A view of the same storage (reshape): one more reference, same dtype. */
  alias(x: WebGpuTensor, shape: readonly number[]): WebGpuTensor {
    x.storage.refs++;
    return new WebGpuTensor([...shape], x.storage, this.owner);
  }

  /** Drops the handles; a storage goes back to the pool with its last handle. */
  release(list: readonly Tensor[]): void {
    for (const one of list) {
      const x = this.own(one, true);
      if (x.disposed) continue;
      x.disposed = true;
      const s = x.storage;
      if (--s.refs > 0) continue;
      this.live--;
      this.liveBytes -= s.bytes;
      this.rec.pool.release(s.buffer, this.rec.epoch);
    }
  }

  /** A tensor's storage must fit one storage binding; 16-bit storage is checked on its packed bytes. */
  private checkBufferLimit(shape: readonly number[], dtype: DType, bytes: number): void {
    const max = this.rec.device.limits.maxStorageBufferBindingSize;
    if (bytes > max) {
      throw new PaliGemmaError(`webgpu: a tensor of [${shape}] (${dtype}) needs ${bytes} bytes, over this device's ${max}-byte buffer limit`);
    }
  }
}
