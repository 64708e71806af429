/// <reference types="@webgpu/types" />
/**
 * Reuses storage buffers by size class, so a decode step does not create and zero-fill a fresh
 * device buffer for every intermediate. Sizes are rounded up to m·2^e with m in [8, 16) (at most
 * 12.5% slack).
 *
 * Reuse is safe inside one command stream: WebGPU orders the dispatches of a queue, so a buffer
 * released after being read by a recorded dispatch may be written by a later one. The exception
 * is `queue.writeBuffer`, which lands before the whole pending command buffer; uploads therefore
 * ask for a buffer that the pending commands do not reference (`notInEpoch`).
 *
 * Buffers beyond the byte cap, and everything at close, are destroyed, but never while pending
 * commands reference them: those wait for the next submit.
 */
import type { GpuBufferRecord } from './webgpu-tensor.js';

export function sizeClass(bytes: number): number {
  const b = Math.max(16, Math.ceil(bytes / 16) * 16);
  const e = Math.max(0, Math.floor(Math.log2(b)) - 3);
  const step = 2 ** e;
  return Math.max(16, Math.ceil(b / step) * step);
}

export class BufferPool {
  private readonly free = new Map<number, GpuBufferRecord[]>();
  private freeBytes = 0;
  private freeCount = 0;
  /** Buffers this pool created and has not destroyed (in use or free). */
  private existing = 0;
  /** Every buffer not yet destroyed, handed out or free, so close() can destroy them all. */
  private readonly all = new Set<GpuBufferRecord>();
  private readonly deferred: GPUBuffer[] = [];

  constructor(
    private readonly device: GPUDevice,
    private readonly usage: number,
    /** Most bytes kept free for reuse. */
    private readonly capBytes: number,
  ) {}

  /** Device buffers alive: handed out, pooled, or waiting to be destroyed. */
  get allocated(): number { return this.existing; }
  get pooled(): number { return this.freeCount; }
  get pooledBytes(): number { return this.freeBytes; }

  /**
   * A buffer of at least `bytes`. `notInEpoch`: refuse pooled buffers referenced by that
   * (pending) epoch. `fresh` buffers are new, hence zero-filled (WebGPU zero-initialises).
   */
  acquire(bytes: number, opts: { notInEpoch?: number; label?: string } = {}): { record: GpuBufferRecord; fresh: boolean } {
    const size = sizeClass(bytes);
    const list = this.free.get(size);
    if (list) {
      for (let i = list.length - 1; i >= 0; i--) {
        if (opts.notInEpoch !== undefined && list[i].epoch === opts.notInEpoch) continue;
        const [record] = list.splice(i, 1);
        this.freeBytes -= size;
        this.freeCount--;
        return { record, fresh: false };
      }
    }
    const record = { gpu: this.device.createBuffer({ size, usage: this.usage, label: opts.label }), size, epoch: -1 };
    this.existing++;
    this.all.add(record);
    return { record, fresh: true };
  }

  /** Takes a buffer back; `pendingEpoch` is the epoch not yet submitted. */
  release(record: GpuBufferRecord, pendingEpoch: number): void {
    if (this.freeBytes + record.size > this.capBytes) {
      this.destroy(record, pendingEpoch);
      return;
    }
    let list = this.free.get(record.size);
    if (!list) { list = []; this.free.set(record.size, list); }
    list.push(record);
    this.freeBytes += record.size;
    this.freeCount++;
  }

  /** Destroys now, or after the next submit if pending commands reference it. */
  destroy(record: GpuBufferRecord, pendingEpoch: number): void {
    this.existing--;
    this.all.delete(record);
    if (record.epoch === pendingEpoch) this.deferred.push(record.gpu);
    else record.gpu.destroy();
  }

  /** After a submit: destroys what waited for it. */
  afterSubmit(): void {
    for (const b of this.deferred.splice(0)) b.destroy();
  }

  /** Destroys every free buffer (the in-use ones belong to live tensors). */
  trim(pendingEpoch: number): void {
    for (const list of this.free.values()) for (const r of list) this.destroy(r, pendingEpoch);
    this.free.clear();
    this.freeBytes = 0;
    this.freeCount = 0;
  }

  /** Destroys every buffer, in use or not; for close(), after the last submit. */
  destroyAll(): void {
    this.afterSubmit();
    for (const r of this.all) r.gpu.destroy();
    this.all.clear();
    this.free.clear();
    this.freeBytes = 0;
    this.freeCount = 0;
    this.existing = 0;
  }
}
