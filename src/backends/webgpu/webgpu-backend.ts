/// <reference types="@webgpu/types" />
/**
 * The WebGPU backend: every op is a WGSL compute kernel run through Dawn (the `webgpu` package).
 *
 * The parts, one module each:
 * - gpu-recorder.ts: the recording model. Ops do not wait for the device: each records one
 *   dispatch (or a buffer copy), submitted when `read()` needs results or after `flushEvery`
 *   dispatches; only `read()` maps memory back. Epochs keep uploads off pending buffers.
 * - gpu-memory.ts, buffer-pool.ts, webgpu-tensor.ts: tensor storage from a size-class pool;
 *   reshape shares storage with a reference count. `stats()` reports live and pooled buffers.
 *   `close()` destroys every buffer and the device and drops the Dawn instance so the process
 *   can exit.
 * - half-storage.ts: 16-bit uploads (f16, bf16 bits) stay 16-bit on the device, packed two per
 *   u32 word. matmul reads a packed B and the embedding kernel a packed table directly; every
 *   other op that meets a 16-bit tensor gets a temporary f32 copy made by a widening kernel
 *   (exact). Optionally (`weights: 'f16'`, or 'auto' on an adapter with 'shader-f16') float32
 *   weights are stored lossily as f16: an f32 tensor made by `upload` and never written is
 *   narrowed on the device on its first use as matmul's transposed B or as an embedding
 *   table, and `lossyWeights` says 'f16'.
 * - shaders.ts (WGSL sources), op-encoders.ts (fill, strided copy, tiled matmul),
 *   webgpu-attention.ts (fused attention), uniform-arena.ts, dispatch-grid.ts.
 *
 * Numerics: compute is float32 throughout. RoPE's cos/sin table is computed on the host in
 * float64 (angles reach ~1000 rad, where float32 pow/sin on some drivers drift).
 */
import type { AttentionOptions } from '../../interfaces/attention-kernel.js';
import type {
  DType, LossyWeights, MatmulOptions, OpName, ReduceOp, Tensor, TensorBackend, UnaryOp,
} from '../../interfaces/tensor-backend.js';
import {
  broadcastKind, checkReshape, checkVector, checkWriteRows, concatShape, embeddingDims,
  matmulDims, patchEmbedDims, reduceShape, ropeDims, sizeOf, sliceShape, transposeShape,
} from '../../tensor/op-shapes.js';
import { ropeTable } from '../../tensor/rope-table.js';
import { BufferPool } from './buffer-pool.js';
import { flatGrid, groupGrid, lastDim, strides, wholeWords } from './dispatch-grid.js';
import { GpuMemory } from './gpu-memory.js';
import { GpuRecorder } from './gpu-recorder.js';
import { asF32, narrowToF16, withF32 } from './half-storage.js';
import { recordFill, recordMatmul, recordStridedCopy } from './op-encoders.js';
import {
  MAX_RANK, binaryShader, gatherShader, im2colShader, ropeShader, rowShader, transposeShader, unaryShader,
  type UnaryShaderOp,
} from './shaders.js';
import { UniformArena, f32, type Param } from './uniform-arena.js';
import { recordAttention } from './webgpu-attention.js';
import { openDevice, type OpenedDevice } from './webgpu-device.js';
import {
  parseWeightsOption, resolveWeights, type WebGpuBackendOptions, type WebGpuStats, type WebGpuWeights,
} from './webgpu-options.js';
import type { WebGpuTensor } from './webgpu-tensor.js';

export {
  parseWeightsOption, resolveWeights, type WebGpuBackendOptions, type WebGpuStats, type WebGpuWeights,
} from './webgpu-options.js';

export class WebGpuBackend implements TensorBackend {
  readonly name = 'webgpu';
  engine = 'webgpu';

  private dev: OpenedDevice | undefined;
  private device!: GPUDevice;
  private pool!: BufferPool;
  private rec!: GpuRecorder;
  private readonly mem = new GpuMemory(this);
  private readUsage = 0;
  private mapRead = 0;

  private readonly flushEvery: number;
  private readonly poolBytes: number;
  private readonly weights: WebGpuWeights;
  /** Storage of uploaded f32 weights once used as weights; 'auto' is decided by init(). */
  private weightStorage: 'f32' | 'f16' = 'f32';
  private closed = false;

  constructor(private readonly options: WebGpuBackendOptions = {}) {
    this.flushEvery = options.flushEvery ?? 128;
    this.poolBytes = options.poolBytes ?? 512 * 1024 * 1024;
    this.weights = parseWeightsOption(options.weights);
    if (this.weights !== 'auto') this.weightStorage = this.weights;
  }

  /** 'f16' when float32 weights are narrowed to f16 (see WebGpuBackendOptions.weights). */
  get lossyWeights(): LossyWeights | undefined {
    return this.weightStorage === 'f16' ? 'f16' : undefined;
  }

  // ── lifecycle ─────────────────────────────────────────────────────────────
  async init(): Promise<void> {
    if (this.dev) return;
    if (this.closed) throw new Error('the webgpu backend is closed');
    const dev = await openDevice({ dawnOptions: this.options.dawnOptions });
    this.dev = dev;
    this.device = dev.device;
    const U = dev.globals.GPUBufferUsage;
    const storageUsage = U.STORAGE | U.COPY_SRC | U.COPY_DST;
    this.readUsage = U.MAP_READ | U.COPY_DST;
    this.mapRead = dev.globals.GPUMapMode.READ;
    this.pool = new BufferPool(this.device, storageUsage, this.poolBytes);
    const arena = new UniformArena(this.device, U.UNIFORM | U.COPY_DST, this.device.limits.minUniformBufferOffsetAlignment);
    const rec = this.rec = new GpuRecorder(this.device, this.pool, arena, this.flushEvery);
    this.mem.rec = rec;
    this.weightStorage = resolveWeights(this.weights, dev.adapter.features);
    this.engine = `webgpu (${dev.adapterName}${dev.software ? ', software' : ''}${this.weightStorage === 'f16' ? ', f16 weights' : ''})`;
    this.device.onuncapturederror = (e) => { rec.deviceError ??= (e as GPUUncapturedErrorEvent).error.message; };
    void this.device.lost.then((info) => {
      if (!this.closed) rec.deviceError ??= `device lost: ${info.message}`;
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
      this.rec.flush();
      await this.device.queue.onSubmittedWorkDone();
    } catch {
      // Closing must not fail on a broken device.
    }
    this.pool.destroyAll();
    this.rec.destroy();
    this.device.destroy();
    this.dev = undefined;                     // drops Dawn's instance: the process may exit
    this.mem.live = 0;
    this.mem.liveBytes = 0;
  }

  supports(op: OpName, dtype: DType = 'f32'): boolean {
    // Every op it declares (all seven fused ones too) takes every dtype: 16-bit tensors are read
    // packed or widened on the device.
    return typeof this[op] === 'function' && (dtype === 'f32' || dtype === 'f16' || dtype === 'bf16');
  }

  /** Storages held by live tensors; returns to its old value once they are all disposed. */
  get liveBuffers(): number {
    return this.mem.live ?? 0;
  }

  stats(): WebGpuStats {
    return {
      liveBuffers: this.mem.live ?? 0,
      liveBytes: this.mem.liveBytes ?? 0,
      pooledBuffers: this.pool?.pooled ?? 0,
      pooledBytes: this.pool?.pooledBytes ?? 0,
      deviceBuffers: this.pool?.allocated ?? 0,
      pipelines: this.rec?.pipelineCount ?? 0,
      submits: this.rec?.submits ?? 0,
    };
  }

  /** Frees the pooled (unused) buffers. */
  trim(): void {
    this.ensureOpen();
    this.pool.trim(this.rec.epoch);
  }

  // ── memory ────────────────────────────────────────────────────────────────
  upload(data: Float32Array | Uint16Array, shape: readonly number[], dtype: DType = 'f32'): Tensor {
    this.ensureOpen();
    const n = sizeOf(shape);
    if (dtype === 'f32') {
      if (!(data instanceof Float32Array)) throw new Error('f32 upload needs a Float32Array');
    } else if (dtype === 'f16' || dtype === 'bf16') {
      if (!(data instanceof Uint16Array)) throw new Error(`${dtype} upload needs the raw bits as a Uint16Array`);
    } else {
      throw new Error(`webgpu: unknown dtype ${String(dtype)}`);
    }
    if (data.length !== n) throw new Error(`upload of shape [${shape}] needs ${n} values, got ${data.length}`);
    const t = this.mem.allocate(shape, { forUpload: true, dtype });
    t.storage.narrowable = dtype === 'f32';
    if (n > 0) this.rec.writeBuffer(t.buffer, data instanceof Uint16Array ? wholeWords(data) : data);
    return t;
  }

  zeros(shape: readonly number[]): Tensor {
    this.ensureOpen();
    const { tensor, fresh } = this.mem.allocateEx(shape);
    // Fresh device buffers are zero already; pooled ones are cleared in the command stream.
    if (tensor.size > 0 && !fresh) recordFill(this.rec, tensor.buffer, tensor.size, 0);
    return tensor;
  }

  async read(t: Tensor): Promise<Float32Array> {
    this.ensureOpen();
    const temps: WebGpuTensor[] = [];
    const x = asF32(this.mem, this.mem.own(t), temps);
    const bytes = x.size * 4;
    if (bytes === 0) { this.dispose(temps); await this.rec.checkErrors(); return new Float32Array(0); }
    const staging = this.device.createBuffer({ size: Math.ceil(bytes / 4) * 4, usage: this.readUsage, label: 'readback' });
    try {
      this.rec.copyBuffer(x.buffer.gpu, 0, staging, 0, bytes);
      x.buffer.epoch = this.rec.epoch;
      this.rec.flush();
      await staging.mapAsync(this.mapRead);
      const out = new Float32Array(staging.getMappedRange(0, bytes).slice(0));
      staging.unmap();
      await this.rec.checkErrors();
      return out;
    } catch (e) {
      await this.rec.checkErrors();
      throw e;
    } finally {
      staging.destroy();
      this.dispose(temps);
    }
  }

  dispose(t: Tensor | readonly Tensor[]): void {
    if (this.closed) return;
    this.mem.release(Array.isArray(t) ? (t as readonly Tensor[]) : [t as Tensor]);
  }

  // ── linear algebra ────────────────────────────────────────────────────────
  matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
    this.ensureOpen();
    const transposeB = opts.transposeB === true;
    const A0 = this.mem.own(a), B = this.mem.own(b);
    const bias0 = opts.bias ? this.mem.own(opts.bias) : undefined;
    const { m, k, n } = matmulDims(A0.shape, B.shape, transposeB, bias0?.size);
    if (transposeB) this.narrowWeight(B);                  // before A: a may be the same tensor
    // B is read packed when 16-bit; A and the bias are f32 in the kernel.
    const out = this.mem.allocate([m, n]);
    withF32(this.mem, bias0 ? [A0, bias0] : [A0], ([A, bias]) =>
      recordMatmul(this.rec, A.buffer, B.buffer, B.dtype, bias?.buffer, out.buffer, m, k, n, transposeB));
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
    return this.map('scale', a, s);
  }

  unary(op: UnaryOp, x: Tensor): Tensor {
    if (!UNARY_OPS.has(op)) throw new Error(`webgpu: unknown unary op '${op}'`);
    return this.map(op, x, 0);
  }

  reduce(op: ReduceOp, x: Tensor): Tensor {
    this.ensureOpen();
    const X0 = this.mem.own(x), d = lastDim(X0);
    const out = this.mem.allocate(reduceShape(X0.shape));
    const rows = out.size;
    if (rows === 0 || d === 0) return out;
    withF32(this.mem, [X0], ([X]) =>
      this.rec.dispatch(`reduce:${op}`, () => rowShader(op), [rows, d, f32(0)], [X.buffer, out.buffer], groupGrid(rows)));
    return out;
  }

  gelu(a: Tensor): Tensor {
    return this.map('gelu', a, 0);
  }

  // ── normalisation over the last axis ──────────────────────────────────────
  layerNorm(x: Tensor, w: Tensor, b: Tensor, eps: number): Tensor {
    const X = this.mem.own(x), W = this.mem.own(w), B = this.mem.own(b);
    const d = lastDim(X);
    checkVector('layerNorm weight', W.size, d);
    checkVector('layerNorm bias', B.size, d);
    return this.rowOp('layerNorm', X, [W, B], eps);
  }

  rmsNorm(x: Tensor, w: Tensor, eps: number): Tensor {
    const X = this.mem.own(x), W = this.mem.own(w);
    const d = lastDim(X);
    checkVector('rmsNorm weight', W.size, d);
    return this.rowOp('rmsNorm', X, [W], eps);
  }

  softmax(x: Tensor): Tensor {
    return this.rowOp('softmax', this.mem.own(x), [], 0);
  }

  rope(x: Tensor, positions: Int32Array, theta: number): Tensor {
    this.ensureOpen();
    const X0 = this.mem.own(x);
    const { t, h, d } = ropeDims(X0.shape, positions.length);
    const half = d / 2;
    // cos/sin in float64 on the host (the shared table), interleaved [T, D/2, 2] for the kernel.
    const { cos, sin } = ropeTable(positions, theta, d);
    const table = new Float32Array(t * half * 2);
    for (let j = 0; j < t * half; j++) { table[j * 2] = cos[j]; table[j * 2 + 1] = sin[j]; }
    const out = this.mem.allocate(X0.shape);
    const n = t * h * half;
    if (n === 0) return out;
    const cs = this.upload(table, [table.length]) as WebGpuTensor;
    withF32(this.mem, [X0], ([X]) => this.rec.dispatch('rope', () => ropeShader, [n, h, half], [X.buffer, cs.buffer, out.buffer], flatGrid(n)));
    this.dispose(cs);
    return out;
  }

  // ── indexing and layout ───────────────────────────────────────────────────
  embedding(table: Tensor, ids: Int32Array): Tensor {
    this.ensureOpen();
    const T = this.mem.own(table);
    const { h } = embeddingDims(T.shape, ids);
    this.narrowWeight(T);
    const out = this.mem.allocate([ids.length, h]);
    const n = ids.length * h;
    if (n === 0) return out;
    const idBuf = this.rec.uploadRaw(new Uint32Array(ids.buffer, ids.byteOffset, ids.length));
    const kind = T.dtype;                                  // a 16-bit table is gathered packed
    this.rec.dispatch(`gather:${kind}`, () => gatherShader(kind), [n, h], [T.buffer, idBuf, out.buffer], flatGrid(n));
    this.rec.releaseRaw(idBuf);
    return out;
  }

  concat(ts: readonly Tensor[], axis: number): Tensor {
    this.ensureOpen();
    const owned = ts.map((t) => this.mem.own(t));
    const shape = concatShape(owned.map((p) => p.shape), axis);
    const out = this.mem.allocate(shape);
    const outer = sizeOf(shape.slice(0, axis));
    const rowOut = sizeOf(shape.slice(axis));
    withF32(this.mem, owned, (parts) => {
      let off = 0;
      for (const p of parts) {
        const inner = sizeOf(p.shape.slice(axis));
        recordStridedCopy(this.rec, p.buffer, out.buffer, outer, inner, inner, 0, rowOut, off);
        off += inner;
      }
    });
    return out;
  }

  slice(x: Tensor, axis: number, start: number, end: number): Tensor {
    this.ensureOpen();
    const X0 = this.mem.own(x);
    const shape = sliceShape(X0.shape, axis, start, end);
    const outer = sizeOf(X0.shape.slice(0, axis));
    const inner = sizeOf(X0.shape.slice(axis + 1));
    const len = end - start;
    const out = this.mem.allocate(shape);
    if (out.size === 0) return out;
    withF32(this.mem, [X0], ([X]) =>
      recordStridedCopy(this.rec, X.buffer, out.buffer, outer, len * inner, X.shape[axis] * inner, start * inner, len * inner, 0));
    return out;
  }

  reshape(x: Tensor, shape: readonly number[]): Tensor {
    this.ensureOpen();
    const X = this.mem.own(x);
    checkReshape(X.shape, shape);
    return this.mem.alias(X, shape);                       // same storage, so same dtype
  }

  transpose(x: Tensor, perm: readonly number[]): Tensor {
    this.ensureOpen();
    const X0 = this.mem.own(x);
    const rank = X0.shape.length;
    const shape = transposeShape(X0.shape, perm);
    if (rank > MAX_RANK) throw new Error(`transpose supports rank ≤ ${MAX_RANK}, got ${rank}`);
    const inStrides = strides(X0.shape);
    const out = this.mem.allocate(shape);
    const n = X0.size;
    if (n === 0) return out;
    const pad = (a: number[]) => [...a, ...new Array<number>(MAX_RANK - a.length).fill(1)];
    const params: Param[] = [n, rank, 0, 0, ...pad(shape), ...pad(perm.map((p) => inStrides[p]))];
    withF32(this.mem, [X0], ([X]) => this.rec.dispatch('transpose', () => transposeShader, params, [X.buffer, out.buffer], flatGrid(n)));
    return out;
  }

  writeRows(dst: Tensor, src: Tensor, offset: number): void {
    this.ensureOpen();
    const D = this.mem.own(dst), S0 = this.mem.own(src);
    checkWriteRows(D.shape, S0.shape, offset);
    if (D.dtype !== 'f32') throw new Error(`writeRows: the destination is stored as ${D.dtype}; only f32 tensors are writable`);
    D.storage.narrowable = false;                          // written: no longer an uploaded weight
    const row = sizeOf(D.shape.slice(1));
    if (S0.size === 0) return;
    withF32(this.mem, [S0], ([S]) => {
      this.rec.copyBuffer(S.buffer.gpu, 0, D.buffer.gpu, offset * row * 4, S.size * 4);
      S.buffer.epoch = D.buffer.epoch = this.rec.epoch;
      this.rec.countRecorded();
    });
  }

  // ── vision ────────────────────────────────────────────────────────────────
  patchEmbed(pixels: Tensor, weight: Tensor, bias: Tensor, patch: number): Tensor {
    this.ensureOpen();
    const X0 = this.mem.own(pixels), W = this.mem.own(weight), B0 = this.mem.own(bias);
    const { c, h, w, o, gw, gh } = patchEmbedDims(X0.shape, W.shape, B0.size, patch);
    const k = c * patch * patch, rows = gh * gw;
    const out = this.mem.allocate([rows, o]);
    if (rows * k === 0) return out;
    withF32(this.mem, [X0, B0], ([X, B]) => {
      const cols = this.mem.allocate([rows, k]);                           // [N, C·P·P]
      this.rec.dispatch('im2col', () => im2colShader, [rows * k, c, h, w, patch, gw], [X.buffer, cols.buffer], flatGrid(rows * k));
      // The weight [O, C, P, P] is B [O, C·P·P] transposed, read packed when 16-bit.
      recordMatmul(this.rec, cols.buffer, W.buffer, W.dtype, B.buffer, out.buffer, rows, k, o, true);
      this.dispose(cols);
    });
    return out;
  }

  // ── fused attention (attend() in src/attention calls it) ──────────────────
  /** q [Tq, Hq, D], k/v [Tk, Hkv, D] → [Tq, Hq, D]; see AttentionKernel. */
  /** One kernel launch covers at most 65535 query rows and heads (a dispatch dimension). */
  attentionHandles(q: Tensor): boolean {
    return q.shape[0] <= 65535 && q.shape[1] <= 65535;
  }

  attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor {
    this.ensureOpen();
    return recordAttention(this.mem, this.mem.own(q), this.mem.own(k), this.mem.own(v), opts);
  }

  // ── internals ─────────────────────────────────────────────────────────────
  private ensureOpen(): void {
    if (this.closed) throw new Error('the webgpu backend is closed');
    if (!this.dev) throw new Error('the webgpu backend is not initialised: await backend.init() first');
  }

  /** With f16 weights, an uploaded f32 weight is narrowed on its first use (half-storage.ts). */
  private narrowWeight(x: WebGpuTensor): void {
    if (this.weightStorage === 'f16') narrowToF16(this.mem, x);
  }

  private binary(op: 'add' | 'mul', a: Tensor, b: Tensor): Tensor {
    this.ensureOpen();
    const A0 = this.mem.own(a), B0 = this.mem.own(b);
    const kind = broadcastKind(A0.shape, B0.shape);
    if (!kind) throw new Error(`${op}: [${B0.shape.join(', ')}] does not broadcast onto [${A0.shape.join(', ')}]`);
    const out = this.mem.allocate(A0.shape);
    const n = A0.size;
    if (n === 0) return out;
    const d = kind === 'rows' ? lastDim(A0) : 0;
    withF32(this.mem, [A0, B0], ([A, B]) => this.rec.dispatch(`${op}:${kind}`, () => binaryShader(op, kind), [n, B.size, d], [A.buffer, B.buffer, out.buffer], flatGrid(n)));
    return out;
  }

  private map(op: UnaryShaderOp, a: Tensor, s: number): Tensor {
    this.ensureOpen();
    const A0 = this.mem.own(a);
    const out = this.mem.allocate(A0.shape);
    const n = A0.size;
    if (n === 0) return out;
    withF32(this.mem, [A0], ([A]) => this.rec.dispatch(op, () => unaryShader(op), [n, f32(s)], [A.buffer, out.buffer], flatGrid(n)));
    return out;
  }

  /** A row kernel over X's last axis; X and the per-column vectors (`extra`) may be 16-bit. */
  private rowOp(op: 'layerNorm' | 'rmsNorm' | 'softmax', X0: WebGpuTensor, extra: WebGpuTensor[], eps: number): Tensor {
    this.ensureOpen();
    const d = lastDim(X0);
    const out = this.mem.allocate(X0.shape);
    const rows = d === 0 ? 0 : X0.size / d;
    if (rows === 0) return out;
    withF32(this.mem, [X0, ...extra], ([X, ...vectors]) =>
      this.rec.dispatch(op, () => rowShader(op), [rows, d, f32(eps)], [X.buffer, ...vectors.map((v) => v.buffer), out.buffer], groupGrid(rows)));
    return out;
  }
}

const UNARY_OPS: ReadonlySet<string> = new Set<UnaryOp>(['tanh', 'exp', 'sigmoid', 'rsqrt', 'reciprocal']);
