/// <reference types="@webgpu/types" />
/**
 * The recording model of the webgpu backend. Ops do not wait for the device: each records one
 * dispatch (or a buffer copy) into the current command encoder, and the encoder is submitted
 * when a read needs results or after `flushEvery` dispatches. An "epoch" is the span of
 * recording between two submits; buffers remember the last epoch that referenced them so that
 * uploads (queue.writeBuffer, which lands before the pending commands) never write into a
 * buffer those commands still read, and destruction waits for the submit (see BufferPool).
 * Validation and out-of-memory errors are caught in one error scope per epoch and reported by
 * the next `checkErrors()`.
 */
import type { BufferPool } from './buffer-pool.js';
import type { Param, UniformArena } from './uniform-arena.js';
import type { GpuBufferRecord } from './webgpu-tensor.js';

export class GpuRecorder {
  /** Epoch being recorded (not submitted yet). */
  epoch = 1;
  /** Command buffers submitted so far. */
  submits = 0;
  /** The first uncaptured error or device loss, reported by checkErrors(). */
  deviceError: string | null = null;

  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private recorded = 0;
  private readonly pipelines = new Map<string, { pipeline: GPUComputePipeline; layout: GPUBindGroupLayout }>();
  /** Error scopes of submitted epochs, checked by checkErrors(). */
  private scopes: Array<Promise<GPUError | null>> = [];
  private scopeOpen = false;

  constructor(
    readonly device: GPUDevice,
    readonly pool: BufferPool,
    private readonly arena: UniformArena,
    private readonly flushEvery: number,
  ) {}

  /** Whether commands are pending in this epoch (an upload must then avoid their buffers). */
  get recording(): boolean {
    return this.encoder !== null;
  }

  /** Compute pipelines compiled so far. */
  get pipelineCount(): number {
    return this.pipelines.size;
  }

  writeBuffer(record: GpuBufferRecord, values: ArrayBufferView): void {
    this.openScope();
    this.device.queue.writeBuffer(record.gpu, 0, values.buffer, values.byteOffset, values.byteLength);
  }

  /** A small internal buffer (ids) written before the pending commands; see BufferPool. */
  uploadRaw(values: Uint32Array): GpuBufferRecord {
    const { record } = this.pool.acquire(values.byteLength, this.encoder ? { notInEpoch: this.epoch } : {});
    this.writeBuffer(record, values);
    return record;
  }

  releaseRaw(record: GpuBufferRecord): void {
    this.pool.release(record, this.epoch);
  }

  /** Records one compute dispatch: uniforms `params` at binding 0, `buffers` from binding 1. */
  dispatch(key: string, code: () => string, params: readonly Param[], buffers: GpuBufferRecord[], grid: readonly number[]): void {
    const { pipeline, layout } = this.pipeline(key, code);
    const u = this.arena.alloc(params);
    const bindGroup = this.device.createBindGroup({
      layout,
      entries: [
        { binding: 0, resource: { buffer: u.buffer, offset: u.offset, size: u.size } },
        ...buffers.map((b, i) => ({ binding: i + 1, resource: { buffer: b.gpu } })),
      ],
    });
    const pass = this.openPass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(grid[0], grid[1] ?? 1, grid[2] ?? 1);
    for (const b of buffers) b.epoch = this.epoch;
    this.countRecorded();
  }

  /** Records a buffer-to-buffer copy outside any compute pass (the caller stamps epochs). */
  copyBuffer(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    this.endPass();
    this.openEncoder().copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
  }

  countRecorded(): void {
    if (++this.recorded >= this.flushEvery) this.flush();
  }

  /** Submits everything recorded so far and starts a new epoch. */
  flush(): void {
    this.endPass();
    if (this.encoder) {
      this.arena.upload(this.device.queue);
      this.device.queue.submit([this.encoder.finish()]);
      this.encoder = null;
      this.submits++;
    }
    if (this.scopeOpen) {
      this.trackScope(this.device.popErrorScope());             // validation
      this.trackScope(this.device.popErrorScope());             // out-of-memory
      this.scopeOpen = false;
    }
    this.recorded = 0;
    this.epoch++;
    this.pool.afterSubmit();
  }

  /** Throws the first error of the epochs submitted since the last check, or the device's. */
  async checkErrors(): Promise<void> {
    const scopes = this.scopes.splice(0);
    const errors = await Promise.all(scopes);
    const first = errors.find((e) => e !== null);
    if (first) throw new Error(`webgpu: ${first.message}`);
    if (this.deviceError) throw new Error(`webgpu: ${this.deviceError}`);
  }

  /** Drops the uniform buffers and the compiled pipelines (the device goes with close()). */
  destroy(): void {
    this.arena.destroy();
    this.pipelines.clear();
  }

  private pipeline(key: string, code: () => string): { pipeline: GPUComputePipeline; layout: GPUBindGroupLayout } {
    let p = this.pipelines.get(key);
    if (!p) {
      this.openScope();
      const module = this.device.createShaderModule({ code: code(), label: key });
      const pipeline = this.device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' }, label: key });
      p = { pipeline, layout: pipeline.getBindGroupLayout(0) };
      this.pipelines.set(key, p);
    }
    return p;
  }

  private openScope(): void {
    if (this.scopeOpen) return;
    this.device.pushErrorScope('out-of-memory');
    this.device.pushErrorScope('validation');
    this.scopeOpen = true;
  }

  private openEncoder(): GPUCommandEncoder {
    this.openScope();
    this.encoder ??= this.device.createCommandEncoder();
    return this.encoder;
  }

  private openPass(): GPUComputePassEncoder {
    this.pass ??= this.openEncoder().beginComputePass();
    return this.pass;
  }

  private endPass(): void {
    if (this.pass) { this.pass.end(); this.pass = null; }
  }

  /** Keeps a popped error scope for the next checkErrors(); old ones report through deviceError. */
  private trackScope(scope: Promise<GPUError | null>): void {
    this.scopes.push(scope.catch(() => null));
    if (this.scopes.length > 64) {
      void this.scopes.shift()!.then((e) => { if (e) this.deviceError ??= e.message; });
    }
  }
}
