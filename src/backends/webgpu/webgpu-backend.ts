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
 * Numerics: compute is float32 throughout. 16-bit uploads (f16, bf16 bits) stay 16-bit on the
 * device, packed two per u32 word (half the bytes of f32). matmul reads a packed B and the
 * embedding kernel a packed table directly, widening each element as it loads it; every other
 * op that meets a 16-bit tensor gets a temporary f32 copy made by a small widening kernel.
 * Widening is exact, so results are those of widening on the host. Optionally (`weights: 'f16'`,
 * or 'auto' on an adapter with 'shader-f16') float32 weights are stored lossily as f16: an f32
 * tensor made by `upload` and never written is narrowed on the device on its first use as
 * matmul's transposed B or as an embedding table, and `lossyWeights` says 'f16'. RoPE's cos/sin
 * table is computed on the host in float64 (angles reach ~1000 rad, where float32 pow/sin on
 * some drivers drift).
 */
import type { AttentionOptions } from '../../interfaces/attention-kernel.js';
import type { BackendOptions } from '../../interfaces/contributions.js';
import { PaliGemmaError } from '../../interfaces/errors.js';
import type {
  DType, LossyWeights, MatmulOptions, OpName, Tensor, TensorBackend,
} from '../../interfaces/tensor-backend.js';
import {
  attentionDims, checkBroadcast, checkReshape, checkVector, checkWriteRows, concatShape, embeddingDims,
  matmulDims, patchEmbedDims, ropeDims, sizeOf, sliceShape, transposeShape,
} from '../../tensor/op-shapes.js';
import { BufferPool } from './buffer-pool.js';
import {
  ATTN_BLOCK, FLAT_WG, MASK_KIND, MAX_RANK, TILE_LARGE, TILE_SKINNY, attentionShader, binaryShader,
  gatherShader, im2colShader, matmulShader, packF16Shader, ropeShader, rowShader, stridedCopyShader,
  transposeShader, unaryShader, widenShader, type MatmulTile, type StorageKind,
} from './shaders.js';
import { openDevice, type OpenedDevice } from './webgpu-device.js';
import { GpuStorage, WebGpuTensor, storageBytes, type GpuBufferRecord } from './webgpu-tensor.js';

/** How float32 weights are stored; see WebGpuBackendOptions.weights. */
export type WebGpuWeights = 'auto' | 'f32' | 'f16';
const WEIGHTS: readonly WebGpuWeights[] = ['auto', 'f32', 'f16'];

export interface WebGpuBackendOptions extends BackendOptions {
  /** Most bytes of freed buffers kept for reuse (default 512 MiB). */
  poolBytes?: number;
  /** Submit after this many recorded dispatches even without a read (default 128). */
  flushEvery?: number;
  /** Extra Dawn instance options, e.g. ['enable-dawn-features=...']. */
  dawnOptions?: string[];
  /**
   * Storage of float32 weights. 'f32' keeps them exact. 'f16' narrows an uploaded f32 tensor
   * to IEEE half on its first use as matmul's transposed B or as an embedding table: lossy,
   * half the memory and bandwidth. 'auto' (default): 'f16' when the adapter has the
   * 'shader-f16' feature, else 'f32'. f16/bf16 uploads are kept as they are either way.
   */
  weights?: WebGpuWeights;
}

/** The `weights` option, checked: a PaliGemmaError names the allowed values. */
export function parseWeightsOption(value: unknown): WebGpuWeights {
  if (value === undefined) return 'auto';
  if (typeof value === 'string' && (WEIGHTS as readonly string[]).includes(value)) return value as WebGpuWeights;
  throw new PaliGemmaError(`webgpu backend: unknown weights '${String(value)}' (use ${WEIGHTS.join(', ')})`);
}

/** What `weights` means on an adapter with these features: 'auto' is 'f16' where it has 'shader-f16'. */
export function resolveWeights(option: WebGpuWeights, adapterFeatures: { has(feature: string): boolean }): 'f32' | 'f16' {
  if (option !== 'auto') return option;
  return adapterFeatures.has('shader-f16') ? 'f16' : 'f32';
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

interface AllocateOptions {
  /** The buffer is written by queue.writeBuffer: it must not be one the pending commands use. */
  forUpload?: boolean;
  /** Storage dtype (default f32); 16-bit storage is packed. */
  dtype?: DType;
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
  private readonly weights: WebGpuWeights;
  /** Storage of uploaded f32 weights once used as weights; 'auto' is decided by init(). */
  private weightStorage: 'f32' | 'f16' = 'f32';

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
    this.storageUsage = U.STORAGE | U.COPY_SRC | U.COPY_DST;
    this.readUsage = U.MAP_READ | U.COPY_DST;
    this.mapRead = dev.globals.GPUMapMode.READ;
    this.pool = new BufferPool(this.device, this.storageUsage, this.poolBytes);
    this.arena = new UniformArena(this.device, U.UNIFORM | U.COPY_DST, this.device.limits.minUniformBufferOffsetAlignment);
    this.weightStorage = resolveWeights(this.weights, dev.adapter.features);
    this.engine = `webgpu (${dev.adapterName}${dev.software ? ', software' : ''}${this.weightStorage === 'f16' ? ', f16 weights' : ''})`;
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
    // Every op exists for every dtype: 16-bit tensors are read packed or widened on the device.
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
    if (dtype === 'f32') {
      if (!(data instanceof Float32Array)) throw new Error('f32 upload needs a Float32Array');
    } else if (dtype === 'f16' || dtype === 'bf16') {
      if (!(data instanceof Uint16Array)) throw new Error(`${dtype} upload needs the raw bits as a Uint16Array`);
    } else {
      throw new Error(`webgpu: unknown dtype ${String(dtype)}`);
    }
    if (data.length !== n) throw new Error(`upload of shape [${shape}] needs ${n} values, got ${data.length}`);
    const t = this.allocate(shape, { forUpload: true, dtype });
    t.storage.narrowable = dtype === 'f32';
    if (n > 0) this.writeBuffer(t.buffer, data instanceof Uint16Array ? wholeWords(data) : data);
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
    const temps: WebGpuTensor[] = [];
    const x = this.asF32(this.own(t), temps);
    const bytes = x.size * 4;
    if (bytes === 0) { this.dispose(temps); await this.checkErrors(); return new Float32Array(0); }
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
      this.dispose(temps);
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
    const transposeB = opts.transposeB === true;
    const A0 = this.own(a), B = this.own(b);
    const bias0 = opts.bias ? this.own(opts.bias) : undefined;
    const { m, k, n } = matmulDims(A0.shape, B.shape, transposeB, bias0?.size);
    if (transposeB) this.narrowWeight(B);                  // before A: a may be the same tensor
    // B is read packed when 16-bit; A and the bias are f32 in the kernel.
    const out = this.allocate([m, n]);
    this.withF32(bias0 ? [A0, bias0] : [A0], ([A, bias]) =>
      this.matmulInto(A.buffer, B.buffer, B.dtype, bias?.buffer, out.buffer, m, k, n, transposeB));
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
    return this.rowOp('layerNorm', X, [W, B], eps);
  }

  rmsNorm(x: Tensor, w: Tensor, eps: number): Tensor {
    const X = this.own(x), W = this.own(w);
    const d = lastDim(X);
    checkVector('rmsNorm weight', W.size, d);
    return this.rowOp('rmsNorm', X, [W], eps);
  }

  softmax(x: Tensor): Tensor {
    return this.rowOp('softmax', this.own(x), [], 0);
  }

  rope(x: Tensor, positions: Int32Array, theta: number): Tensor {
    this.ensureOpen();
    const X0 = this.own(x);
    const { t, h, d } = ropeDims(X0.shape, positions.length);
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
    const out = this.allocate(X0.shape);
    const n = t * h * half;
    if (n === 0) return out;
    const cs = this.upload(table, [table.length]) as WebGpuTensor;
    this.withF32([X0], ([X]) => this.dispatch('rope', () => ropeShader, [n, h, half], [X.buffer, cs.buffer, out.buffer], flatGrid(n)));
    this.dispose(cs);
    return out;
  }

  // ── indexing and layout ───────────────────────────────────────────────────
  embedding(table: Tensor, ids: Int32Array): Tensor {
    this.ensureOpen();
    const T = this.own(table);
    const { h } = embeddingDims(T.shape, ids);
    this.narrowWeight(T);
    const out = this.allocate([ids.length, h]);
    const n = ids.length * h;
    if (n === 0) return out;
    const idBuf = this.uploadRaw(new Uint32Array(ids.buffer, ids.byteOffset, ids.length));
    const kind = T.dtype;                                  // a 16-bit table is gathered packed
    this.dispatch(`gather:${kind}`, () => gatherShader(kind), [n, h], [T.buffer, idBuf, out.buffer], flatGrid(n));
    this.releaseRaw(idBuf);
    return out;
  }

  concat(ts: readonly Tensor[], axis: number): Tensor {
    this.ensureOpen();
    const owned = ts.map((t) => this.own(t));
    const shape = concatShape(owned.map((p) => p.shape), axis);
    const out = this.allocate(shape);
    const outer = sizeOf(shape.slice(0, axis));
    const rowOut = sizeOf(shape.slice(axis));
    this.withF32(owned, (parts) => {
      let off = 0;
      for (const p of parts) {
        const inner = sizeOf(p.shape.slice(axis));
        this.stridedCopy(p.buffer, out.buffer, outer, inner, inner, 0, rowOut, off);
        off += inner;
      }
    });
    return out;
  }

  slice(x: Tensor, axis: number, start: number, end: number): Tensor {
    this.ensureOpen();
    const X0 = this.own(x);
    const shape = sliceShape(X0.shape, axis, start, end);
    const outer = sizeOf(X0.shape.slice(0, axis));
    const inner = sizeOf(X0.shape.slice(axis + 1));
    const len = end - start;
    const out = this.allocate(shape);
    if (out.size === 0) return out;
    this.withF32([X0], ([X]) =>
      this.stridedCopy(X.buffer, out.buffer, outer, len * inner, X.shape[axis] * inner, start * inner, len * inner, 0));
    return out;
  }

  reshape(x: Tensor, shape: readonly number[]): Tensor {
    this.ensureOpen();
    const X = this.own(x);
    checkReshape(X.shape, shape);
    X.storage.refs++;                                      // same storage, so same dtype
    return new WebGpuTensor([...shape], X.storage, this);
  }

  transpose(x: Tensor, perm: readonly number[]): Tensor {
    this.ensureOpen();
    const X0 = this.own(x);
    const rank = X0.shape.length;
    const shape = transposeShape(X0.shape, perm);
    if (rank > MAX_RANK) throw new Error(`transpose supports rank ≤ ${MAX_RANK}, got ${rank}`);
    const inStrides = strides(X0.shape);
    const out = this.allocate(shape);
    const n = X0.size;
    if (n === 0) return out;
    const pad = (a: number[]) => [...a, ...new Array<number>(MAX_RANK - a.length).fill(1)];
    const params: Param[] = [n, rank, 0, 0, ...pad(shape), ...pad(perm.map((p) => inStrides[p]))];
    this.withF32([X0], ([X]) => this.dispatch('transpose', () => transposeShader, params, [X.buffer, out.buffer], flatGrid(n)));
    return out;
  }

  writeRows(dst: Tensor, src: Tensor, offset: number): void {
    this.ensureOpen();
    const D = this.own(dst), S0 = this.own(src);
    checkWriteRows(D.shape, S0.shape, offset);
    if (D.dtype !== 'f32') throw new Error(`writeRows: the destination is stored as ${D.dtype}; only f32 tensors are writable`);
    D.storage.narrowable = false;                          // written: no longer an uploaded weight
    const row = sizeOf(D.shape.slice(1));
    if (S0.size === 0) return;
    this.withF32([S0], ([S]) => {
      this.endPass();
      this.openEncoder().copyBufferToBuffer(S.buffer.gpu, 0, D.buffer.gpu, offset * row * 4, S.size * 4);
      S.buffer.epoch = D.buffer.epoch = this.epoch;
      this.countRecorded();
    });
  }

  // ── vision ────────────────────────────────────────────────────────────────
  patchEmbed(pixels: Tensor, weight: Tensor, bias: Tensor, patch: number): Tensor {
    this.ensureOpen();
    const X0 = this.own(pixels), W = this.own(weight), B0 = this.own(bias);
    const { c, h, w, o, gw, gh } = patchEmbedDims(X0.shape, W.shape, B0.size, patch);
    const k = c * patch * patch, rows = gh * gw;
    const out = this.allocate([rows, o]);
    if (rows * k === 0) return out;
    this.withF32([X0, B0], ([X, B]) => {
      const cols = this.allocate([rows, k]);                               // [N, C·P·P]
      this.dispatch('im2col', () => im2colShader, [rows * k, c, h, w, patch, gw], [X.buffer, cols.buffer], flatGrid(rows * k));
      // The weight [O, C, P, P] is B [O, C·P·P] transposed, read packed when 16-bit.
      this.matmulInto(cols.buffer, W.buffer, W.dtype, B.buffer, out.buffer, rows, k, o, true);
      this.dispose(cols);
    });
    return out;
  }

  // ── fused attention (used by WebGpuAttentionKernel) ───────────────────────
  /** q [Tq, Hq, D], k/v [Tk, Hkv, D] → [Tq, Hq, D]; see AttentionKernel. */
  attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor {
    this.ensureOpen();
    const Q0 = this.own(q), K0 = this.own(k), V0 = this.own(v);
    const { tq, hq, d, hkv, kvLength } = attentionDims(Q0.shape, K0.shape, V0.shape, opts.kvLength);
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
    this.withF32([Q0, K0, V0], ([Q, K, V]) => this.dispatch(`attention:${dims}`, () => attentionShader(dims), params,
      [Q.buffer, K.buffer, V.buffer, out.buffer], [hq, tq, 1]));
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

  private allocate(shape: readonly number[], opts: AllocateOptions = {}): WebGpuTensor {
    return this.allocateEx(shape, opts).tensor;
  }

  private allocateEx(shape: readonly number[], opts: AllocateOptions = {}): { tensor: WebGpuTensor; fresh: boolean } {
    const dtype = opts.dtype ?? 'f32';
    const bytes = storageBytes(sizeOf(shape), dtype);
    this.checkBufferLimit(shape, dtype, bytes);
    const { record, fresh } = this.pool.acquire(bytes, opts.forUpload && this.encoder ? { notInEpoch: this.epoch } : {});
    this.live++;
    this.liveBytes += bytes;
    return { tensor: new WebGpuTensor([...shape], new GpuStorage(record, bytes, dtype), this), fresh };
  }

  /** A tensor's storage must fit one storage binding; 16-bit storage is checked on its packed bytes. */
  private checkBufferLimit(shape: readonly number[], dtype: DType, bytes: number): void {
    const max = this.device.limits.maxStorageBufferBindingSize;
    if (bytes > max) {
      throw new PaliGemmaError(`webgpu: a tensor of [${shape}] (${dtype}) needs ${bytes} bytes, over this device's ${max}-byte buffer limit`);
    }
  }

  /**
   * x itself when it is stored as f32, else a temporary f32 copy widened on the device, pushed
   * to `temps`. The caller disposes `temps` once its op is recorded: the buffers go back to the
   * pool in this epoch, where later dispatches (ordered after this op) may reuse them.
   */
  private asF32(x: WebGpuTensor, temps: WebGpuTensor[]): WebGpuTensor {
    const kind = x.dtype;
    if (kind === 'f32') return x;
    const out = this.allocate(x.shape);
    const n = x.size;
    if (n > 0) this.dispatch(`widen:${kind}`, () => widenShader(kind), [n], [x.buffer, out.buffer], flatGrid(n));
    temps.push(out);
    return out;
  }

  /**
   * Records an op on f32 views of `xs`: each 16-bit tensor is widened into a temporary (asF32)
   * and the temporaries are disposed once `record` has recorded the op, also when it throws.
   */
  private withF32<R>(xs: readonly WebGpuTensor[], record: (f32: WebGpuTensor[]) => R): R {
    const temps: WebGpuTensor[] = [];
    try {
      return record(xs.map((x) => this.asF32(x, temps)));
    } finally {
      this.dispose(temps);
    }
  }

  /**
   * With f16 weights, narrows an uploaded, never-written f32 tensor (GpuStorage.narrowable) to
   * packed f16 on the device, in place: the pack kernel is recorded now, the storage object,
   * which every reshape alias shares, takes the packed buffer and dtype, and the f32 buffer is
   * destroyed (after the submit that runs the pack, if it is still pending). Everything
   * recorded later reads the f16 storage; everything recorded earlier read the f32 buffer.
   */
  private narrowWeight(x: WebGpuTensor): void {
    const s = x.storage;
    if (this.weightStorage !== 'f16' || !s.narrowable || s.dtype !== 'f32') return;
    s.narrowable = false;
    const n = x.size, words = Math.ceil(n / 2);
    const bytes = storageBytes(n, 'f16');
    const { record } = this.pool.acquire(bytes);
    if (words > 0) this.dispatch('pack:f16', () => packF16Shader, [n, words], [s.buffer, record], flatGrid(words));
    this.pool.destroy(s.buffer, this.epoch);
    this.liveBytes += bytes - s.bytes;
    s.buffer = record;
    s.bytes = bytes;
    s.dtype = 'f16';
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
    const A0 = this.own(a), B0 = this.own(b);
    checkBroadcast(op, A0.shape, B0.shape);
    const out = this.allocate(A0.shape);
    const n = A0.size;
    if (n === 0) return out;
    this.withF32([A0, B0], ([A, B]) => this.dispatch(op, () => binaryShader(op), [n, B.size], [A.buffer, B.buffer, out.buffer], flatGrid(n)));
    return out;
  }

  private unary(op: 'scale' | 'gelu', a: Tensor, s: number): Tensor {
    this.ensureOpen();
    const A0 = this.own(a);
    const out = this.allocate(A0.shape);
    const n = A0.size;
    if (n === 0) return out;
    this.withF32([A0], ([A]) => this.dispatch(op, () => unaryShader(op), [n, f32(s)], [A.buffer, out.buffer], flatGrid(n)));
    return out;
  }

  private fill(record: GpuBufferRecord, n: number, value: number): void {
    this.dispatch('fill', () => unaryShader('fill'), [n, f32(value)], [record], flatGrid(n));
  }

  /** A row kernel over X's last axis; X and the per-column vectors (`extra`) may be 16-bit. */
  private rowOp(op: 'layerNorm' | 'rmsNorm' | 'softmax', X0: WebGpuTensor, extra: WebGpuTensor[], eps: number): Tensor {
    this.ensureOpen();
    const d = lastDim(X0);
    const out = this.allocate(X0.shape);
    const rows = d === 0 ? 0 : X0.size / d;
    if (rows === 0) return out;
    this.withF32([X0, ...extra], ([X, ...vectors]) =>
      this.dispatch(op, () => rowShader(op), [rows, d, f32(eps)], [X.buffer, ...vectors.map((v) => v.buffer), out.buffer], groupGrid(rows)));
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

  /** out [M, N] = a [M, K] · b (+ bias): a, bias and out f32; b stored as `bKind`. */
  private matmulInto(
    a: GpuBufferRecord, b: GpuBufferRecord, bKind: StorageKind, bias: GpuBufferRecord | undefined, out: GpuBufferRecord,
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
    const key = `matmul:${tm}x${tn}:${transposeB ? 't' : 'n'}:${bias ? 'b' : '-'}:${bKind}`;
    const gx = Math.ceil(n / tn), gy = Math.ceil(m / tm);
    if (gx > 65535 || gy > 65535) throw new Error(`matmul [${m}, ${k}]·[${k}, ${n}] exceeds the dispatch grid`);
    this.dispatch(key, () => matmulShader(tile, transposeB, bias !== undefined, bKind), [m, n, k],
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

/** 16-bit bits padded to whole u32 words (writeBuffer copies multiples of 4 bytes). */
function wholeWords(bits: Uint16Array): Uint16Array {
  if (bits.length % 2 === 0) return bits;
  const out = new Uint16Array(bits.length + 1);
  out.set(bits);
  return out;
}
