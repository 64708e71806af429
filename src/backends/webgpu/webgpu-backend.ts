/// <reference types="@webgpu/types" />
/**
 * The WebGPU backend: every op is a WGSL compute kernel run through Dawn (the `webgpu` package).
 *
 * Recording model. Ops do not wait for the device: each records one dispatch (or a buffer copy)
 * into the current command encoder, and the encoder is submitted when a `read()` needs results
 * or after `flushEvery` dispatches. Only `read()` maps memory back. An "epoch" is the span of
 * recording between two submits; buffers remember the last epoch that referenced them so that
 * uploads (queue.writeBuffer, which lands before the pending commands) never write into a
 * buffer those commands still read, and destruction waits for the submit.
 *
 * Memory. Tensor storage comes from a size-class pool (buffer-pool.ts); reshape shares storage
 * with a reference count, so disposing either handle is safe. `liveBuffers` counts the storages
 * held by live tensors; `stats()` also reports the pool. `close()` destroys every buffer and the
 * device and drops the Dawn instance so the process can exit.
 *
 * Numerics: float32 throughout. 16-bit uploads (f16, bf16 bits) are widened to float32 on the
 * host, so the device only ever sees f32. RoPE's cos/sin table is computed on the host in
 * float64 (angles reach ~1000 rad, where float32 pow/sin on some drivers drift).
 */
import type { AttentionOptions } from '../../interfaces/attention-kernel.js';
import type { BackendOptions } from '../../interfaces/contributions.js';
import { PaliGemmaError } from '../../interfaces/errors.js';
import type {
  DType, MatmulOptions, OpName, Tensor, TensorBackend,
} from '../../interfaces/tensor-backend.js';
import {
  attentionDims, checkBroadcast, checkReshape, checkVector, checkWriteRows, concatShape, embeddingDims,
  matmulDims, patchEmbedDims, ropeDims, sizeOf, sliceShape, transposeShape,
} from '../op-shapes.js';
import { BufferPool } from './buffer-pool.js';
import {
  ATTN_BLOCK, FLAT_WG, MASK_KIND, MAX_RANK, TILE_LARGE, TILE_SKINNY, attentionShader, binaryShader,
  gatherShader, im2colShader, matmulShader, ropeShader, rowShader, stridedCopyShader, transposeShader,
  unaryShader, type MatmulTile,
} from './shaders.js';
import { openDevice, type OpenedDevice } from './webgpu-device.js';
import { GpuStorage, WebGpuTensor, type GpuBufferRecord } from './webgpu-tensor.js';

export interface WebGpuBackendOptions extends BackendOptions {
  /** Most bytes of freed buffers kept for reuse (default 512 MiB). */
  poolBytes?: number;
  /** Submit after this many recorded dispatches even without a read (default 128). */
  flushEvery?: number;
  /** Extra Dawn instance options, e.g. ['enable-dawn-features=...']. */
  dawnOptions?: string[];
}

/** Counts a test or a user can watch for leaks. */
export interface WebGpuStats {
  /** Storages held by live tensors (reshape views share one). */
  liveBuffers: number;
  liveBytes: number;
  /** Free buffers kept for reuse, and their bytes. */
  pooledBuffers: number;
  pooledBytes: number;
  /** Tensor buffers existing on the device (live + pooled + awaiting destruction). */
  deviceBuffers: number;
  /** Compute pipelines compiled so far. */
  pipelines: number;
  /** Command buffers submitted so far. */
  submits: number;
}

/** A uniform value: plain numbers are u32, `f32(x)` marks a float. */
type Param = number | { f: number };
const f32 = (x: number): { f: number } => ({ f: x });

const UNIFORM_ARENA_BYTES = 64 * 1024;

/**
 * Uniform parameters of one epoch, packed into a few big uniform buffers at aligned offsets and
 * written with one writeBuffer each just before the submit.
 */
class UniformArena {
  private readonly buffers: Array<{ gpu: GPUBuffer; data: Uint8Array }> = [];
  private current = 0;
  private offset = 0;

  constructor(private readonly device: GPUDevice, private readonly usage: number, private readonly align: number) {}

  alloc(params: readonly Param[]): { buffer: GPUBuffer; offset: number; size: number } {
    const size = Math.max(16, Math.ceil((params.length * 4) / 16) * 16);
    if (this.offset + size > UNIFORM_ARENA_BYTES) { this.current++; this.offset = 0; }
    if (this.current === this.buffers.length) {
      this.buffers.push({
        gpu: this.device.createBuffer({ size: UNIFORM_ARENA_BYTES, usage: this.usage, label: 'uniforms' }),
        data: new Uint8Array(UNIFORM_ARENA_BYTES),
      });
    }
    const slot = this.buffers[this.current];
    const view = new DataView(slot.data.buffer, this.offset, size);
    params.forEach((p, i) => {
      if (typeof p === 'number') view.setUint32(i * 4, p >>> 0, true);
      else view.setFloat32(i * 4, p.f, true);
    });
    const out = { buffer: slot.gpu, offset: this.offset, size };
    this.offset += Math.ceil(size / this.align) * this.align;
    return out;
  }

  /** Writes this epoch's parameters; call right before submitting. */
  upload(queue: GPUQueue): void {
    for (let i = 0; i <= this.current && i < this.buffers.length; i++) {
      const used = i < this.current ? UNIFORM_ARENA_BYTES : this.offset;
      if (used > 0) queue.writeBuffer(this.buffers[i].gpu, 0, this.buffers[i].data, 0, used);
    }
    this.current = 0;
    this.offset = 0;
  }

  destroy(): void {
    for (const b of this.buffers) b.gpu.destroy();
    this.buffers.length = 0;
  }
}

export class WebGpuBackend implements TensorBackend {
  readonly name = 'webgpu';
  engine = 'webgpu';

  private dev: OpenedDevice | undefined;
  private device!: GPUDevice;
  private pool!: BufferPool;
  private arena!: UniformArena;
  private storageUsage = 0;
  private readUsage = 0;
  private mapRead = 0;

  /** Epoch being recorded (not submitted yet). */
  private epoch = 1;
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private recorded = 0;
  private submits = 0;
  private readonly flushEvery: number;
  private readonly poolBytes: number;

  private readonly pipelines = new Map<string, { pipeline: GPUComputePipeline; layout: GPUBindGroupLayout }>();
  private live = 0;
  private liveBytes = 0;

  /** Error scopes of submitted epochs, checked by read(). */
  private scopes: Array<Promise<GPUError | null>> = [];
  private scopeOpen = false;
  private deviceError: string | null = null;
  private closed = false;

  constructor(private readonly options: WebGpuBackendOptions = {}) {
    this.flushEvery = options.flushEvery ?? 128;
    this.poolBytes = options.poolBytes ?? 512 * 1024 * 1024;
  }

  // ── lifecycle ─────────────────────────────────────────────────────────────
  async init(): Promise<void> {
    if (this.dev) return;
    if (this.closed) throw new Error('the webgpu backend is closed');
    const dev = await openDevice({ dawnOptions: this.options.dawnOptions });
    this.dev = dev;
    this.device = dev.device;
    const U = dev.globals.GPUBufferUsage;
    this.storageUsage = U.STORAGE | U.COPY_SRC | U.COPY_DST;
    this.readUsage = U.MAP_READ | U.COPY_DST;
    this.mapRead = dev.globals.GPUMapMode.READ;
    this.pool = new BufferPool(this.device, this.storageUsage, this.poolBytes);
    this.arena = new UniformArena(this.device, U.UNIFORM | U.COPY_DST, this.device.limits.minUniformBufferOffsetAlignment);
    this.engine = `webgpu (${dev.adapterName}${dev.software ? ', software' : ''})`;
    this.device.onuncapturederror = (e) => { this.deviceError ??= (e as GPUUncapturedErrorEvent).error.message; };
    void this.device.lost.then((info) => {
      if (!this.closed) this.deviceError ??= `device lost: ${info.message}`;
    });
  }

  /** The adapter init() chose, e.g. 'google/swiftshader'. */
  get adapterName(): string | undefined {
    return this.dev?.adapterName;
  }

  /** Whether init() pointed VK_ICD_FILENAMES at SwiftShader itself. */
  get selectedSwiftShader(): boolean {
    return this.dev?.selectedSwiftShader ?? false;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (!this.dev) return;
    try {
      this.flush();
      await this.device.queue.onSubmittedWorkDone();
    } catch {
      // Closing must not fail on a broken device.
    }
    this.pool.destroyAll();
    this.arena.destroy();
    this.pipelines.clear();
    this.device.destroy();
    this.dev = undefined;                     // drops Dawn's instance: the process may exit
    this.live = 0;
    this.liveBytes = 0;
  }

  supports(op: OpName, dtype: DType = 'f32'): boolean {
    // Every op exists; 16-bit data is widened at upload, so every op sees f32 storage.
    return op !== undefined && (dtype === 'f32' || dtype === 'f16' || dtype === 'bf16');
  }

  /** Storages held by live tensors; returns to its old value once they are all disposed. */
  get liveBuffers(): number {
    return this.live;
  }

  stats(): WebGpuStats {
    return {
      liveBuffers: this.live,
      liveBytes: this.liveBytes,
      pooledBuffers: this.pool?.pooled ?? 0,
      pooledBytes: this.pool?.pooledBytes ?? 0,
      deviceBuffers: this.pool?.allocated ?? 0,
      pipelines: this.pipelines.size,
      submits: this.submits,
    };
  }

  /** Frees the pooled (unused) buffers. */
  trim(): void {
    this.ensureOpen();
    this.pool.trim(this.epoch);
  }

  // ── memory ────────────────────────────────────────────────────────────────
  upload(data: Float32Array | Uint16Array, shape: readonly number[], dtype: DType = 'f32'): Tensor {
    this.ensureOpen();
    const n = sizeOf(shape);
    let values: Float32Array;
    if (dtype === 'f32') {
      if (!(data instanceof Float32Array)) throw new Error('f32 upload needs a Float32Array');
      values = data;
    } else {
      if (!(data instanceof Uint16Array)) throw new Error(`${dtype} upload needs the raw bits as a Uint16Array`);
      values = dtype === 'bf16' ? bf16ToF32(data) : f16ToF32(data);
    }
    if (values.length !== n) throw new Error(`upload of shape [${shape}] needs ${n} values, got ${values.length}`);
    const t = this.allocate(shape, { forUpload: true });
    if (n > 0) this.writeBuffer(t.buffer, values);
    return t;
  }

  zeros(shape: readonly number[]): Tensor {
    this.ensureOpen();
    const { tensor, fresh } = this.allocateEx(shape);
    // Fresh device buffers are zero already; pooled ones are cleared in the command stream.
    if (tensor.size > 0 && !fresh) this.fill(tensor.buffer, tensor.size, 0);
    return tensor;
  }

  async read(t: Tensor): Promise<Float32Array> {
    this.ensureOpen();
    const x = this.own(t);
    const bytes = x.size * 4;
    if (bytes === 0) { await this.checkErrors(); return new Float32Array(0); }
    const staging = this.device.createBuffer({ size: Math.ceil(bytes / 4) * 4, usage: this.readUsage, label: 'readback' });
    try {
      this.endPass();
      this.openEncoder().copyBufferToBuffer(x.buffer.gpu, 0, staging, 0, bytes);
      x.buffer.epoch = this.epoch;
      this.flush();
      await staging.mapAsync(this.mapRead);
      const out = new Float32Array(staging.getMappedRange(0, bytes).slice(0));
      staging.unmap();
      await this.checkErrors();
      return out;
    } catch (e) {
      await this.checkErrors();
      throw e;
    } finally {
      staging.destroy();
    }
  }

  dispose(t: Tensor | readonly Tensor[]): void {
    if (this.closed) return;
    const list = Array.isArray(t) ? (t as readonly Tensor[]) : [t as Tensor];
    for (const one of list) {
      const x = this.own(one, true);
      if (x.disposed) continue;
      x.disposed = true;
      const s = x.storage;
      if (--s.refs > 0) continue;
      this.live--;
      this.liveBytes -= s.bytes;
      this.pool.release(s.buffer, this.epoch);
    }
  }

  // ── linear algebra ────────────────────────────────────────────────────────
  matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
    this.ensureOpen();
    const A = this.own(a), B = this.own(b);
    const bias = opts.bias ? this.own(opts.bias) : undefined;
    const { m, k, n } = matmulDims(A.shape, B.shape, opts.transposeB, bias?.size);
    const out = this.allocate([m, n]);
    this.matmulInto(A.buffer, B.buffer, bias?.buffer, out.buffer, m, k, n, opts.transposeB === true);
    return out;
  }

  // ── elementwise ───────────────────────────────────────────────────────────
  add(a: Tensor, b: Tensor): Tensor {
    return this.binary('add', a, b);
  }

  mul(a: Tensor, b: Tensor): Tensor {
    return this.binary('mul', a, b);
  }

  scale(a: Tensor, s: number): Tensor {
    return this.unary('scale', a, s);
  }

  gelu(a: Tensor): Tensor {
    return this.unary('gelu', a, 0);
  }

  // ── normalisation over the last axis ──────────────────────────────────────
  layerNorm(x: Tensor, w: Tensor, b: Tensor, eps: number): Tensor {
    const X = this.own(x), W = this.own(w), B = this.own(b);
    const d = lastDim(X);
    checkVector('layerNorm weight', W.size, d);
    checkVector('layerNorm bias', B.size, d);
    return this.rowOp('layerNorm', X, [W.buffer, B.buffer], eps);
  }

  rmsNorm(x: Tensor, w: Tensor, eps: number): Tensor {
    const X = this.own(x), W = this.own(w);
    const d = lastDim(X);
    checkVector('rmsNorm weight', W.size, d);
    return this.rowOp('rmsNorm', X, [W.buffer], eps);
  }

  softmax(x: Tensor): Tensor {
    return this.rowOp('softmax', this.own(x), [], 0);
  }

  rope(x: Tensor, positions: Int32Array, theta: number): Tensor {
    this.ensureOpen();
    const X = this.own(x);
    const { t, h, d } = ropeDims(X.shape, positions.length);
    const half = d / 2;
    // cos/sin in float64 on the host, the same formula as the reference backend.
    const table = new Float32Array(t * half * 2);
    for (let ti = 0; ti < t; ti++) {
      for (let i = 0; i < half; i++) {
        const angle = positions[ti] * Math.pow(theta, (-2 * i) / d);
        table[(ti * half + i) * 2] = Math.cos(angle);
        table[(ti * half + i) * 2 + 1] = Math.sin(angle);
      }
    }
    const out = this.allocate(X.shape);
    const n = t * h * half;
    if (n === 0) return out;
    const cs = this.upload(table, [table.length]) as WebGpuTensor;
    this.dispatch('rope', () => ropeShader, [n, h, half], [X.buffer, cs.buffer, out.buffer], flatGrid(n));
    this.dispose(cs);
    return out;
  }

  // ── indexing and layout ───────────────────────────────────────────────────
  embedding(table: Tensor, ids: Int32Array): Tensor {
    this.ensureOpen();
    const T = this.own(table);
    const { h } = embeddingDims(T.shape, ids);
    const out = this.allocate([ids.length, h]);
    const n = ids.length * h;
    if (n === 0) return out;
    const idBuf = this.uploadRaw(new Uint32Array(ids.buffer, ids.byteOffset, ids.length));
    this.dispatch('gather', () => gatherShader, [n, h], [T.buffer, idBuf, out.buffer], flatGrid(n));
    this.releaseRaw(idBuf);
    return out;
  }

  concat(ts: readonly Tensor[], axis: number): Tensor {
    this.ensureOpen();
    const parts = ts.map((t) => this.own(t));
    const shape = concatShape(parts.map((p) => p.shape), axis);
    const out = this.allocate(shape);
    const outer = sizeOf(shape.slice(0, axis));
    const rowOut = sizeOf(shape.slice(axis));
    let off = 0;
    for (const p of parts) {
      const inner = sizeOf(p.shape.slice(axis));
      this.stridedCopy(p.buffer, out.buffer, outer, inner, inner, 0, rowOut, off);
      off += inner;
    }
    return out;
  }

  slice(x: Tensor, axis: number, start: number, end: number): Tensor {
    this.ensureOpen();
    const X = this.own(x);
    const shape = sliceShape(X.shape, axis, start, end);
    const outer = sizeOf(X.shape.slice(0, axis));
    const inner = sizeOf(X.shape.slice(axis + 1));
    const len = end - start;
    const out = this.allocate(shape);
    this.stridedCopy(X.buffer, out.buffer, outer, len * inner, X.shape[axis] * inner, start * inner, len * inner, 0);
    return out;
  }

  reshape(x: Tensor, shape: readonly number[]): Tensor {
    this.ensureOpen();
    const X = this.own(x);
    checkReshape(X.shape, shape);
    X.storage.refs++;
    return new WebGpuTensor([...shape], X.storage, this);
  }

  transpose(x: Tensor, perm: readonly number[]): Tensor {
    this.ensureOpen();
    const X = this.own(x);
    const rank = X.shape.length;
    const shape = transposeShape(X.shape, perm);
    if (rank > MAX_RANK) throw new Error(`transpose supports rank ≤ ${MAX_RANK}, got ${rank}`);
    const inStrides = strides(X.shape);
    const out = this.allocate(shape);
    const n = X.size;
    if (n === 0) return out;
    const pad = (a: number[]) => [...a, ...new Array<number>(MAX_RANK - a.length).fill(1)];
    const params: Param[] = [n, rank, 0, 0, ...pad(shape), ...pad(perm.map((p) => inStrides[p]))];
    this.dispatch('transpose', () => transposeShader, params, [X.buffer, out.buffer], flatGrid(n));
    return out;
  }

  writeRows(dst: Tensor, src: Tensor, offset: number): void {
    this.ensureOpen();
    const D = this.own(dst), S = this.own(src);
    checkWriteRows(D.shape, S.shape, offset);
    const row = sizeOf(D.shape.slice(1));
    if (S.size === 0) return;
    this.endPass();
    this.openEncoder().copyBufferToBuffer(S.buffer.gpu, 0, D.buffer.gpu, offset * row * 4, S.size * 4);
    S.buffer.epoch = D.buffer.epoch = this.epoch;
    this.countRecorded();
  }

  // ── vision ────────────────────────────────────────────────────────────────
  patchEmbed(pixels: Tensor, weight: Tensor, bias: Tensor, patch: number): Tensor {
    this.ensureOpen();
    const X = this.own(pixels), W = this.own(weight), B = this.own(bias);
    const { c, h, w, o, gw, gh } = patchEmbedDims(X.shape, W.shape, B.size, patch);
    const k = c * patch * patch, rows = gh * gw;
    const out = this.allocate([rows, o]);
    if (rows * k === 0) return out;
    const cols = this.allocate([rows, k]);                               // [N, C·P·P]
    this.dispatch('im2col', () => im2colShader, [rows * k, c, h, w, patch, gw], [X.buffer, cols.buffer], flatGrid(rows * k));
    this.matmulInto(cols.buffer, W.buffer, B.buffer, out.buffer, rows, k, o, true);
    this.dispose(cols);
    return out;
  }

  // ── fused attention (used by WebGpuAttentionKernel) ───────────────────────
  /** q [Tq, Hq, D], k/v [Tk, Hkv, D] → [Tq, Hq, D]; see AttentionKernel. */
  attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor {
    this.ensureOpen();
    const Q = this.own(q), K = this.own(k), V = this.own(v);
    const { tq, hq, d, hkv, kvLength } = attentionDims(Q.shape, K.shape, V.shape, opts.kvLength);
    const queryOffset = opts.queryOffset ?? 0;
    if (tq > 65535 || hq > 65535) throw new Error(`attention: at most 65535 query rows and heads per call, got ${tq} × ${hq}`);
    const out = this.allocate([tq, hq, d]);
    if (out.size === 0) return out;
    const mask = opts.mask;
    const params: Param[] = [
      tq, hq, hkv, d,
      kvLength, queryOffset, MASK_KIND[mask.kind], mask.kind === 'prefixLm' ? mask.prefixLength : 0,
      opts.slidingWindow ?? 0, f32(opts.scale), f32(opts.softCap ?? 0),
    ];
    const dims = Math.max(1, Math.ceil(d / ATTN_BLOCK));
    this.dispatch(`attention:${dims}`, () => attentionShader(dims), params,
      [Q.buffer, K.buffer, V.buffer, out.buffer], [hq, tq, 1]);
    return out;
  }

  // ── internals ─────────────────────────────────────────────────────────────
  private ensureOpen(): void {
    if (this.closed) throw new Error('the webgpu backend is closed');
    if (!this.dev) throw new Error('the webgpu backend is not initialised: await backend.init() first');
  }

  private own(t: Tensor, allowDisposed = false): WebGpuTensor {
    if (!(t instanceof WebGpuTensor) || t.owner !== this) throw new Error('tensor does not belong to this webgpu backend');
    if (t.disposed && !allowDisposed) throw new Error(`tensor [${t.shape}] was used after dispose`);
    return t;
  }

  private allocate(shape: readonly number[], opts: { forUpload?: boolean } = {}): WebGpuTensor {
    return this.allocateEx(shape, opts).tensor;
  }

  private allocateEx(shape: readonly number[], opts: { forUpload?: boolean } = {}): { tensor: WebGpuTensor; fresh: boolean } {
    const bytes = sizeOf(shape) * 4;
    const max = this.device.limits.maxStorageBufferBindingSize;
    if (bytes > max) {
      throw new PaliGemmaError(`webgpu: a tensor of [${shape}] needs ${bytes} bytes, over this device's ${max}-byte buffer limit`);
    }
    const { record, fresh } = this.pool.acquire(bytes, opts.forUpload && this.encoder ? { notInEpoch: this.epoch } : {});
    this.live++;
    this.liveBytes += bytes;
    return { tensor: new WebGpuTensor([...shape], new GpuStorage(record, bytes), this), fresh };
  }

  private writeBuffer(record: GpuBufferRecord, values: ArrayBufferView): void {
    this.openScope();
    this.device.queue.writeBuffer(record.gpu, 0, values.buffer, values.byteOffset, values.byteLength);
  }

  /** A small internal buffer (ids) written before the pending commands; see BufferPool. */
  private uploadRaw(values: Uint32Array): GpuBufferRecord {
    const { record } = this.pool.acquire(values.byteLength, this.encoder ? { notInEpoch: this.epoch } : {});
    this.writeBuffer(record, values);
    return record;
  }

  private releaseRaw(record: GpuBufferRecord): void {
    this.pool.release(record, this.epoch);
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

  private dispatch(key: string, code: () => string, params: readonly Param[], buffers: GpuBufferRecord[], grid: readonly number[]): void {
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

  private countRecorded(): void {
    if (++this.recorded >= this.flushEvery) this.flush();
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

  /** Submits everything recorded so far and starts a new epoch. */
  private flush(): void {
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

  /** Keeps a popped error scope for the next read(); old ones report through deviceError. */
  private trackScope(scope: Promise<GPUError | null>): void {
    this.scopes.push(scope.catch(() => null));
    if (this.scopes.length > 64) {
      void this.scopes.shift()!.then((e) => { if (e) this.deviceError ??= e.message; });
    }
  }

  private async checkErrors(): Promise<void> {
    const scopes = this.scopes.splice(0);
    const errors = await Promise.all(scopes);
    const first = errors.find((e) => e !== null);
    if (first) throw new Error(`webgpu: ${first.message}`);
    if (this.deviceError) throw new Error(`webgpu: ${this.deviceError}`);
  }

  private binary(op: 'add' | 'mul', a: Tensor, b: Tensor): Tensor {
    this.ensureOpen();
    const A = this.own(a), B = this.own(b);
    checkBroadcast(op, A.shape, B.shape);
    const out = this.allocate(A.shape);
    const n = A.size;
    if (n === 0) return out;
    this.dispatch(op, () => binaryShader(op), [n, B.size], [A.buffer, B.buffer, out.buffer], flatGrid(n));
    return out;
  }

  private unary(op: 'scale' | 'gelu', a: Tensor, s: number): Tensor {
    this.ensureOpen();
    const A = this.own(a);
    const out = this.allocate(A.shape);
    const n = A.size;
    if (n === 0) return out;
    this.dispatch(op, () => unaryShader(op), [n, f32(s)], [A.buffer, out.buffer], flatGrid(n));
    return out;
  }

  private fill(record: GpuBufferRecord, n: number, value: number): void {
    this.dispatch('fill', () => unaryShader('fill'), [n, f32(value)], [record], flatGrid(n));
  }

  private rowOp(op: 'layerNorm' | 'rmsNorm' | 'softmax', X: WebGpuTensor, extra: GpuBufferRecord[], eps: number): Tensor {
    this.ensureOpen();
    const d = lastDim(X);
    const out = this.allocate(X.shape);
    const rows = d === 0 ? 0 : X.size / d;
    if (rows === 0) return out;
    this.dispatch(op, () => rowShader(op), [rows, d, f32(eps)], [X.buffer, ...extra, out.buffer], groupGrid(rows));
    return out;
  }

  private stridedCopy(
    src: GpuBufferRecord, dst: GpuBufferRecord, outer: number, inner: number,
    srcStride: number, srcOff: number, dstStride: number, dstOff: number,
  ): void {
    const n = outer * inner;
    if (n === 0) return;
    this.dispatch('copy', () => stridedCopyShader, [n, inner, srcStride, srcOff, dstStride, dstOff], [src, dst], flatGrid(n));
  }

  private matmulInto(
    a: GpuBufferRecord, b: GpuBufferRecord, bias: GpuBufferRecord | undefined, out: GpuBufferRecord,
    m: number, k: number, n: number, transposeB: boolean,
  ): void {
    if (m * n === 0) return;
    if (k === 0) {
      if (bias) this.stridedCopy(bias, out, m, n, 0, 0, n, 0);
      else this.fill(out, m * n, 0);
      return;
    }
    const tile: MatmulTile = m <= TILE_SKINNY.wy * TILE_SKINNY.rm ? TILE_SKINNY : TILE_LARGE;
    const tm = tile.wy * tile.rm, tn = tile.wx * tile.rn;
    const key = `matmul:${tm}x${tn}:${transposeB ? 't' : 'n'}:${bias ? 'b' : '-'}`;
    const gx = Math.ceil(n / tn), gy = Math.ceil(m / tm);
    if (gx > 65535 || gy > 65535) throw new Error(`matmul [${m}, ${k}]·[${k}, ${n}] exceeds the dispatch grid`);
    this.dispatch(key, () => matmulShader(tile, transposeB, bias !== undefined), [m, n, k],
      bias ? [a, b, bias, out] : [a, b, out], [gx, gy, 1]);
  }
}

/** Workgroups for n elements, FLAT_WG per group, folded into 2-D past 65535. */
function flatGrid(n: number): number[] {
  return groupGrid(Math.ceil(n / FLAT_WG));
}

function groupGrid(groups: number): number[] {
  if (groups <= 65535) return [groups, 1, 1];
  return [65535, Math.ceil(groups / 65535), 1];
}

function lastDim(t: WebGpuTensor): number {
  return t.shape[t.shape.length - 1] ?? 1;
}

function strides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let d = shape.length - 1; d >= 0; d--) { s[d] = acc; acc *= shape[d]; }
  return s;
}

const cvt = new Float32Array(1);
const cvtBits = new Uint32Array(cvt.buffer);

/** bfloat16 bits → float32 (the high half of the float32 bits). */
export function bf16ToF32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  const u = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) u[i] = bits[i] << 16;
  return out;
}

/** IEEE half bits → float32, subnormals, infinities and NaN included. */
export function f16ToF32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) {
    const h = bits[i];
    const sign = (h & 0x8000) << 16;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    if (exp === 0) {
      out[i] = (sign ? -1 : 1) * frac * 2 ** -24;                         // zero or subnormal
    } else if (exp === 31) {
      cvtBits[0] = (sign | 0x7f800000 | (frac << 13)) >>> 0;
      out[i] = cvt[0];
    } else {
      cvtBits[0] = (sign | ((exp + 112) << 23) | (frac << 13)) >>> 0;
      out[i] = cvt[0];
    }
  }
  return out;
}
