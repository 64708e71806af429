/**
 * The TensorFlow.js backend: every op is one `tf.tidy` over TensorFlow.js ops on the engine
 * picked at `init()` (tfjs-node-gpu → tfjs-node → wasm → plain JavaScript; see tfjs-engine.ts,
 * which also explains why a process runs one engine).
 *
 * Memory: each handle owns one TensorFlow.js tensor; intermediates of an op die with its tidy,
 * and `dispose` releases the handle's tensor, so `tf.memory().numTensors` returns to where it
 * was once the pipeline has disposed what it made. `close()` releases every handle still open.
 *
 * TensorFlow.js tensors are immutable. `writeRows` (the KV cache write) therefore builds the
 * new buffer value (rows before, the new rows, rows after) and swaps it into the handle, and
 * into every reshape view of it; the cache keeps its shape and the handle stays valid.
 *
 * The wasm engine's fast matmul (XNNPACK) is the plain one: a transposed operand or a batch
 * falls back to a naive loop about ten times slower. So on that engine an uploaded tensor that
 * is used as a transposed operand (every PyTorch-layout weight) is stored transposed from its
 * first such use, and attention runs one plain 2-D matmul per kv head.
 *
 * ```ts
 * const b = new TfjsBackend({ engine: 'wasm' });
 * await b.init();
 * console.log(b.engine);                                  // 'tfjs (wasm)'
 * const y = b.gelu(b.upload(x, [4, 8]));
 * const data = await b.read(y);
 * b.dispose(y);
 * ```
 */
import type { AttentionOptions } from '../../interfaces/attention-kernel.js';
import type { BackendOptions } from '../../interfaces/contributions.js';
import { PaliGemmaError } from '../../interfaces/errors.js';
import type {
  DType, MatmulOptions, OpName, ReduceOp, Tensor, TensorBackend, UnaryOp,
} from '../../interfaces/tensor-backend.js';
import { additiveMask } from '../../attention/attention-mask.js';
import { blockElementsOption, queryBlocks } from '../../attention/query-blocks.js';
import {
  attentionDims, checkBroadcast, reduceShape, checkReshape, checkVector, checkWriteRows, concatShape, embeddingDims,
  matmulDims, patchEmbedDims, ropeDims, sizeOf, sliceShape, transposeShape,
} from '../../tensor/op-shapes.js';
import { ropeTable } from '../../tensor/rope-table.js';
import {
  acquireEngine, ENGINE_ORDER, isEngineKind, releaseEngine,
  type TfjsEngine, type TfjsEngineKind, type TfModule, type TfTensor,
} from './tfjs-engine.js';
import { TfjsTensor } from './tfjs-tensor.js';

export interface TfjsBackendOptions extends BackendOptions {
  /** Force one engine; missing packages fail with a PaliGemmaError. Default: the best installed. */
  engine?: TfjsEngineKind;
  /** 'cpu' keeps auto-selection off the GPU engine; 'cuda' or 'gpu' means engine 'node-gpu'. */
  device?: string;
  /**
   * Attention as one batched matmul over kv heads (true) or one 2-D matmul per kv head (false).
   * Default: batched on the libtensorflow engines, per kv head on wasm and cpu.
   */
  batchedAttention?: boolean;
  /**
   * wasm engine: the most tensor bytes it may hold (default 3.75 GiB). The wasm heap ends at
   * 4 GiB, and an allocation past it is not reported by TensorFlow.js: it writes to address 0
   * and corrupts the heap. Uploads and op outputs that would pass this limit throw instead.
   */
  wasmHeapLimitBytes?: number;
  /** Score elements per attention query block (query-blocks.ts; default 2²²); 0: no tiling. */
  attentionBlockElements?: number;
}

/** Counters for tests and benchmarks. */
export interface TfjsBackendStats {
  /** Handles created and not yet disposed. */
  liveTensors: number;
  /** Uploaded tensors now stored transposed for the plain matmul. */
  transposedUploads: number;
  /** writeRows calls. */
  rowWrites: number;
}

/** Rows of a below which a transposed intermediate operand is multiplied as is, not transposed first. */
const TRANSPOSE_FIRST_MIN_ROWS = 16;
const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);
const DEFAULT_WASM_HEAP_LIMIT = 3.75 * 2 ** 30;

export class TfjsBackend implements TensorBackend {
  readonly name = 'tfjs';
  readonly stats: TfjsBackendStats = { liveTensors: 0, transposedUploads: 0, rowWrites: 0 };

  private readonly wanted: TfjsEngineKind | undefined;
  private readonly allowed: readonly TfjsEngineKind[];
  private readonly batchedOption: boolean | undefined;
  private readonly heapLimit: number;
  private readonly attentionBlockElements: number;
  private started: TfjsEngine | undefined;
  private tfm: TfModule | undefined;
  private closed = false;
  private readonly live = new Set<TfjsTensor>();
  /** Store uploaded transposed-matmul operands transposed (engines whose fast matmul is plain). */
  private plainMatmulFast = false;
  /** Engines other than wasm may keep the array given to tf.tensor, or hand out their own on read. */
  private copyHost = true;
  private wasmHeap = false;
  private batched = true;
  private lastRope: { key: string; cos: Float32Array; sin: Float32Array } | undefined;
  private lastMask: { key: string; data: Float32Array | null } | undefined;
  /** Tensors an op replaced and that may still be its inputs: released once the op is done. */
  private readonly retired: TfTensor[] = [];

  constructor(options: TfjsBackendOptions = {}) {
    const engine = options.engine;
    if (engine !== undefined && !isEngineKind(engine)) {
      throw new PaliGemmaError(`tfjs backend: unknown engine '${String(engine)}' (use ${ENGINE_ORDER.join(', ')})`);
    }
    const device = options.device?.toLowerCase();
    if (device !== undefined && !['cpu', 'cuda', 'gpu'].includes(device)) {
      throw new PaliGemmaError(`tfjs backend: unknown device '${options.device}' (use cpu, cuda or gpu)`);
    }
    if (engine && device) {
      const gpu = engine === 'node-gpu';
      if (gpu !== (device !== 'cpu')) {
        throw new PaliGemmaError(`tfjs backend: engine '${engine}' does not run on device '${options.device}'`);
      }
    }
    this.wanted = engine ?? (device === 'cuda' || device === 'gpu' ? 'node-gpu' : undefined);
    this.allowed = device === 'cpu' ? ENGINE_ORDER.filter((k) => k !== 'node-gpu') : ENGINE_ORDER;
    this.batchedOption = typeof options.batchedAttention === 'boolean' ? options.batchedAttention : undefined;
    this.heapLimit = typeof options.wasmHeapLimitBytes === 'number' ? options.wasmHeapLimitBytes : DEFAULT_WASM_HEAP_LIMIT;
    this.attentionBlockElements = blockElementsOption(options.attentionBlockElements, 'tfjs backend');
  }

  /** What runs, e.g. 'tfjs (wasm)'; 'tfjs (not started)' before init(). */
  get engine(): string {
    return this.started?.label ?? 'tfjs (not started)';
  }

  /** The engine kind running, once started. */
  get engineKind(): TfjsEngineKind | undefined {
    return this.started?.kind;
  }

  /** The TensorFlow.js namespace in use (for tests and tools that inspect tf.memory()). */
  get tf(): TfModule {
    if (!this.tfm) throw new Error('tfjs backend: call init() first');
    return this.tfm;
  }

  async init(): Promise<void> {
    if (this.closed) throw new Error('tfjs backend: init() after close()');
    if (this.started) return;
    const engine = await acquireEngine(this, this.wanted, this.allowed);
    this.started = engine;
    this.tfm = engine.tf;
    this.plainMatmulFast = engine.kind === 'wasm';
    this.wasmHeap = engine.kind === 'wasm';
    this.copyHost = engine.kind !== 'wasm';
    this.batched = this.batchedOption ?? (engine.kind === 'node' || engine.kind === 'node-gpu');
  }

  supports(op: OpName, dtype: DType = 'f32'): boolean {
    // TensorFlow.js has no 16-bit float storage (the checkpoint loader widens such weights);
    // every op it declares, fused ones included, runs as TensorFlow.js ops.
    return dtype === 'f32' && typeof this[op] === 'function';
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.dispose([...this.live]);
    this.closed = true;
    releaseEngine(this);
    this.tfm = undefined;
  }

  // ── memory ──────────────────────────────────────────────────────────────
  upload(data: Float32Array | Uint16Array, shape: readonly number[], dtype: DType = 'f32'): Tensor {
    const tf = this.ready();
    if (dtype !== 'f32' || !(data instanceof Float32Array)) {
      throw new Error(`tfjs backend stores only f32 tensors (got ${dtype})`);
    }
    if (data.length !== sizeOf(shape)) throw new Error(`upload: shape [${shape}] needs ${sizeOf(shape)} elements, got ${data.length}`);
    this.checkHeap(shape, 'upload');
    // wasm copies into its heap; the other engines keep the given array as (or until) storage.
    const values = this.copyHost ? new Float32Array(data) : data;
    return this.wrap(tf.tensor(values, [...shape], 'float32'), shape, true);
  }

  zeros(shape: readonly number[]): Tensor {
    const tf = this.ready();
    this.checkHeap(shape, 'zeros');
    return this.wrap(tf.zeros([...shape], 'float32'), shape);
  }

  async read(t: Tensor): Promise<Float32Array> {
    const tf = this.ready();
    const x = this.own(t);
    const value = x.value ?? tf.tidy(() => this.val(x));
    try {
      const data = await value.data() as Float32Array;
      if (x.disposed) throw new Error('tfjs backend: tensor disposed while being read');
      // wasm reads out a fresh copy; the others may hand out the tensor's own storage.
      return this.copyHost ? new Float32Array(data) : data;
    } finally {
      if (value !== x.value) value.dispose();
    }
  }

  dispose(t: Tensor | readonly Tensor[]): void {
    const list = Array.isArray(t) ? t as readonly Tensor[] : [t as Tensor];
    for (const one of list) {
      if (!(one instanceof TfjsTensor) || one.owner !== this || one.disposed) continue;
      one.disposed = true;
      one.value?.dispose();
      one.transposed?.dispose();
      one.value = one.transposed = undefined;
      one.family?.delete(one);
      one.family = undefined;
      this.live.delete(one);
      this.stats.liveTensors--;
    }
  }

  // ── linear algebra ──────────────────────────────────────────────────────
  matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
    const A = this.own(a), B = this.own(b);
    const bias = opts.bias ? this.own(opts.bias) : undefined;
    const { m, n } = matmulDims(A.shape, B.shape, opts.transposeB, bias ? sizeOf(bias.shape) : undefined);
    return this.op([m, n], (tf) => {
      const out = opts.transposeB ? this.timesTransposed(this.val(A), B) : tf.matMul(this.val(A), this.val(B));
      return bias ? tf.add(out, tf.reshape(this.val(bias), [n])) : out;
    });
  }

  // ── elementwise ─────────────────────────────────────────────────────────
  add(a: Tensor, b: Tensor): Tensor {
    return this.broadcast(a, b, 'add');
  }

  mul(a: Tensor, b: Tensor): Tensor {
    return this.broadcast(a, b, 'mul');
  }

  scale(a: Tensor, s: number): Tensor {
    const A = this.own(a);
    return this.op(A.shape, (tf) => tf.mul(this.val(A), tf.scalar(s, 'float32')));
  }

  unary(op: UnaryOp, x: Tensor): Tensor {
    const X = this.own(x);
    return this.op(X.shape, (tf) => tf[op](this.val(X)));
  }

  reduce(op: ReduceOp, x: Tensor): Tensor {
    const X = this.own(x);
    return this.op(reduceShape(X.shape), (tf) => tf[op](this.val(X), -1, true));
  }

  gelu(a: Tensor): Tensor {
    // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), the tanh form; tfjs's own gelu is the erf one.
    const A = this.own(a);
    return this.op(A.shape, (tf) => {
      const x = this.val(A);
      const inner = tf.mul(tf.add(x, tf.mul(tf.mul(tf.mul(x, x), x), 0.044715)), SQRT_2_OVER_PI);
      return tf.mul(tf.mul(x, 0.5), tf.add(tf.tanh(inner), 1));
    });
  }

  // ── normalisation over the last axis ────────────────────────────────────
  layerNorm(x: Tensor, w: Tensor, b: Tensor, eps: number): Tensor {
    const X = this.own(x), W = this.own(w), B = this.own(b);
    const d = lastDim(X);
    checkVector('layerNorm weight', sizeOf(W.shape), d);
    checkVector('layerNorm bias', sizeOf(B.shape), d);
    return this.op(X.shape, (tf) => {
      const v = this.val(X);
      const centred = tf.sub(v, tf.mean(v, -1, true));
      const variance = tf.mean(tf.square(centred), -1, true);
      const normed = tf.mul(centred, tf.rsqrt(tf.add(variance, eps)));
      return tf.add(tf.mul(normed, tf.reshape(this.val(W), [d])), tf.reshape(this.val(B), [d]));
    });
  }

  rmsNorm(x: Tensor, w: Tensor, eps: number): Tensor {
    const X = this.own(x), W = this.own(w);
    const d = lastDim(X);
    checkVector('rmsNorm weight', sizeOf(W.shape), d);
    return this.op(X.shape, (tf) => {
      const v = this.val(X);
      const inv = tf.rsqrt(tf.add(tf.mean(tf.square(v), -1, true), eps));
      return tf.mul(tf.mul(v, inv), tf.add(tf.reshape(this.val(W), [d]), 1));
    });
  }

  softmax(x: Tensor): Tensor {
    const X = this.own(x);
    return this.op(X.shape, (tf) => tf.softmax(this.val(X), -1));
  }

  rope(x: Tensor, positions: Int32Array, theta: number): Tensor {
    const X = this.own(x);
    const { t, h, d } = ropeDims(X.shape, positions.length);
    const half = d / 2;
    const { cos, sin } = this.ropeTables(positions, theta, d);
    return this.op(X.shape, (tf) => {
      const v = this.val(X);
      const c = tf.tensor3d(cos, [t, 1, half]), s = tf.tensor3d(sin, [t, 1, half]);
      const x1 = tf.slice(v, [0, 0, 0], [t, h, half]);
      const x2 = tf.slice(v, [0, 0, half], [t, h, half]);
      return tf.concat([tf.sub(tf.mul(x1, c), tf.mul(x2, s)), tf.add(tf.mul(x2, c), tf.mul(x1, s))], 2);
    });
  }

  // ── indexing and layout ─────────────────────────────────────────────────
  embedding(table: Tensor, ids: Int32Array): Tensor {
    const T = this.own(table);
    const { h } = embeddingDims(T.shape, ids);
    return this.op([ids.length, h], (tf) => {
      const index = tf.tensor1d(Int32Array.from(ids), 'int32');
      // A tied table may be stored transposed ([H, V]) for the lm_head matmul: gather columns.
      if (!T.value && T.transposed) return tf.transpose(tf.gather(T.transposed, index, 1));
      return tf.gather(this.val(T), index, 0);
    });
  }

  concat(ts: readonly Tensor[], axis: number): Tensor {
    const parts = ts.map((t) => this.own(t));
    const shape = concatShape(parts.map((p) => p.shape), axis);
    return this.op(shape, (tf) => (parts.length === 1 ? tf.clone(this.val(parts[0])) : tf.concat(parts.map((p) => this.val(p)), axis)));
  }

  slice(x: Tensor, axis: number, start: number, end: number): Tensor {
    const X = this.own(x);
    const size = sliceShape(X.shape, axis, start, end);
    const begin = X.shape.map((_, i) => (i === axis ? start : 0));
    return this.op(size, (tf) => tf.slice(this.val(X), begin, size));
  }

  reshape(x: Tensor, shape: readonly number[]): Tensor {
    const X = this.own(x);
    checkReshape(X.shape, shape);
    const out = this.op(shape, (tf) => tf.reshape(this.val(X), [...shape])) as TfjsTensor;
    if (X.value) {
      // Same storage: a later writeRows on either handle must show through the other.
      X.family ??= new Set([X]);
      X.family.add(out);
      out.family = X.family;
    }
    return out;
  }

  transpose(x: Tensor, perm: readonly number[]): Tensor {
    const X = this.own(x);
    return this.op(transposeShape(X.shape, perm), (tf) => tf.transpose(this.val(X), [...perm]));
  }

  writeRows(dst: Tensor, src: Tensor, offset: number): void {
    const D = this.own(dst), S = this.own(src);
    checkWriteRows(D.shape, S.shape, offset);
    const rows = D.shape[0], n = S.shape[0];
    const row = sizeOf(D.shape.slice(1));
    this.stats.rowWrites++;
    if (n === 0) return;
    const tf = this.tf;
    const next = tf.tidy(() => {
      const flat = tf.reshape(this.val(D), [rows, row]);
      const parts: TfTensor[] = [];
      if (offset > 0) parts.push(tf.slice(flat, [0, 0], [offset, row]));
      parts.push(tf.reshape(this.val(S), [n, row]));
      if (offset + n < rows) parts.push(tf.slice(flat, [offset + n, 0], [rows - offset - n, row]));
      return parts.length === 1 ? parts[0] : tf.concat(parts, 0);
    });
    for (const h of D.family ?? [D]) {
      const old = [h.value, h.transposed];
      h.value = tf.reshape(next, [...h.shape]);
      h.transposed = undefined;
      for (const o of old) o?.dispose();
    }
    next.dispose();
  }

  // ── vision ──────────────────────────────────────────────────────────────
  patchEmbed(pixels: Tensor, weight: Tensor, bias: Tensor, patch: number): Tensor {
    const X = this.own(pixels), W = this.own(weight), B = this.own(bias);
    const { c, o, gh, gw } = patchEmbedDims(X.shape, W.shape, sizeOf(B.shape), patch);
    return this.op([gh * gw, o], (tf) => {
      // Each patch becomes a row in (channel, y, x) order, then one matmul with W [O, C·P·P]ᵀ.
      const cols = tf.reshape(
        tf.transpose(tf.reshape(this.val(X), [c, gh, patch, gw, patch]), [1, 3, 0, 2, 4]),
        [gh * gw, c * patch * patch]);
      return tf.add(this.timesTransposed(cols, W), tf.reshape(this.val(B), [o]));
    });
  }

  // ── attention (the 'tfjs' kernel) ───────────────────────────────────────
  /**
   * softmax(Q·Kᵀ·scale [soft-capped] + mask)·V with grouped-query heads, over the first
   * kvLength rows of k/v. q [Tq, Hq, D], k/v [Tk, Hkv, D] → [Tq, Hq, D].
   */
  attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor {
    const Q = this.own(q), K = this.own(k), V = this.own(v);
    const { tq, hq, d, tk: cap, hkv, kvLength: len } = attentionDims(Q.shape, K.shape, V.shape, opts.kvLength);
    // Long prompts: one tidy per block of query rows (query-blocks.ts), so only one block's
    // [Hkv, G·rows, L] scores are alive at a time.
    const blocks = queryBlocks(tq, hq, len, this.attentionBlockElements);
    if (blocks.length > 1) {
      const parts = blocks.map(([s, e]) => {
        const qb = this.slice(q, 0, s, e);                                    // [rows, Hq, D]
        try { return this.attention(qb, k, v, { ...opts, queryOffset: (opts.queryOffset ?? 0) + s }); } finally { this.dispose(qb); }
      });
      try { return this.concat(parts, 0); } finally { this.dispose(parts); }  // [Tq, Hq, D]
    }
    const g = hq / hkv;
    const mask = this.maskFor(tq, len, opts);
    return this.op([tq, hq, d], (tf) => {
      let kv = this.val(K), vv = this.val(V);
      if (len < cap) {
        kv = tf.slice(kv, [0, 0, 0], [len, hkv, d]);
        vv = tf.slice(vv, [0, 0, 0], [len, hkv, d]);
      }
      // Query rows grouped by the kv head they read: [Hkv, G·Tq, D], row = r·Tq + i for head kv·G + r.
      const qv = this.val(Q);
      const qg = tq === 1
        ? tf.reshape(qv, [hkv, g, d])
        : tf.reshape(tf.transpose(tf.reshape(qv, [tq, hkv, g, d]), [1, 2, 0, 3]), [hkv, g * tq, d]);
      const kh = hkv === 1 ? tf.reshape(kv, [1, len, d]) : tf.transpose(kv, [1, 0, 2]);   // [Hkv, L, D]
      const vh = hkv === 1 ? tf.reshape(vv, [1, len, d]) : tf.transpose(vv, [1, 0, 2]);   // [Hkv, L, D]
      const maskT = mask ? tf.tensor2d(mask, [tq, len]) : undefined;

      const weigh = (scores: TfTensor): TfTensor => {                     // [..., G·Tq, L] → probabilities
        let s = tf.mul(scores, opts.scale);
        if (opts.softCap !== undefined) s = tf.mul(tf.tanh(tf.div(s, opts.softCap)), opts.softCap);
        if (maskT) {
          const shape = s.shape;
          s = tf.reshape(tf.add(tf.reshape(s, [...shape.slice(0, -2), g, tq, len]), maskT), shape);
        }
        return tf.softmax(s, -1);
      };

      let heads: TfTensor;                                                // [Hkv, G·Tq, D]
      if (this.batched) {
        heads = tf.matMul(weigh(tf.matMul(qg, kh, false, true)), vh);
      } else {
        const perHead: TfTensor[] = [];
        for (let kvh = 0; kvh < hkv; kvh++) {
          const pick = (t: TfTensor, rows: number) => tf.reshape(hkv === 1 ? t : tf.slice(t, [kvh, 0, 0], [1, rows, d]), [rows, d]);
          const qs = pick(qg, g * tq), ks = pick(kh, len), vs = pick(vh, len);
          perHead.push(tf.matMul(weigh(this.timesTransposedTensor(qs, ks)), vs));   // [G·Tq, D]
        }
        heads = perHead.length === 1 ? tf.reshape(perHead[0], [1, g * tq, d]) : tf.stack(perHead, 0);
      }
      return tq === 1
        ? tf.reshape(heads, [tq, hq, d])
        : tf.reshape(tf.transpose(tf.reshape(heads, [hkv, g, tq, d]), [2, 0, 1, 3]), [tq, hq, d]);
    });
  }

  // ── internals ───────────────────────────────────────────────────────────
  private ready(): TfModule {
    if (this.closed) throw new Error('tfjs backend: used after close()');
    if (!this.tfm || !this.started) throw new Error('tfjs backend: call init() first');
    const current = this.tfm.getBackend();
    if (current !== this.started.tfBackendName) {
      throw new Error(`tfjs backend: TensorFlow.js was switched to its '${current}' backend by other code in this process; ` +
        `this tfjs backend runs on '${this.started.tfBackendName}' (TensorFlow.js has one engine per process)`);
    }
    return this.tfm;
  }

  private own(t: Tensor): TfjsTensor {
    if (this.closed) throw new Error('tfjs backend: used after close()');
    if (!(t instanceof TfjsTensor) || t.owner !== this) throw new Error('tensor does not belong to this tfjs backend');
    if (t.disposed) throw new Error('tfjs backend: tensor used after dispose');
    return t;
  }

  private wrap(value: TfTensor, shape: readonly number[], uploaded = false): TfjsTensor {
    const t = new TfjsTensor(this, [...shape], value, uploaded);
    this.live.add(t);
    this.stats.liveTensors++;
    return t;
  }

  /** Runs `f` in a tidy and wraps its result, whose shape must be `shape`. */
  private op(shape: readonly number[], f: (tf: TfModule) => TfTensor): Tensor {
    const tf = this.tf;
    if (this.closed) throw new Error('tfjs backend: used after close()');
    this.checkHeap(shape, 'op output');
    let out: TfTensor;
    try {
      out = tf.tidy(() => f(tf));
    } finally {
      for (const r of this.retired.splice(0)) r.dispose();
    }
    if (out.shape.length !== shape.length || out.shape.some((d, i) => d !== shape[i])) {
      out.dispose();
      throw new Error(`tfjs backend: internal shape error, [${out.shape}] where [${shape}] was expected`);
    }
    return this.wrap(out, shape);
  }

  /** The handle's value in its own layout (inside a tidy: a transposed-only one costs a temporary). */
  private val(t: TfjsTensor): TfTensor {
    if (t.value) return t.value;
    if (!t.transposed) throw new Error('tfjs backend: tensor has no value');
    return this.tf.reshape(this.tf.transpose(t.transposed), [...t.shape]);
  }

  /** a [M, K] · (b viewed as [N, K])ᵀ → [M, N]; b may be any rank whose rows are N. */
  private timesTransposed(a: TfTensor, b: TfjsTensor): TfTensor {
    const tf = this.tf;
    const n = b.shape[0], k = sizeOf(b.shape) / n;
    if (this.plainMatmulFast && b.uploaded && !b.family) {
      if (!b.transposed) {
        // First use as a transposed operand: keep the [K, N] copy instead of the original.
        b.transposed = tf.keep(tf.transpose(tf.reshape(b.value!, [n, k])));
        this.retired.push(b.value!);                       // `a` may be made from it in this op
        b.value = undefined;
        this.stats.transposedUploads++;
      }
      return tf.matMul(a, b.transposed);
    }
    return this.timesTransposedTensor(a, tf.reshape(this.val(b), [n, k]));
  }

  /** a [M, K] · b [N, K]ᵀ for a tensor made inside the op. */
  private timesTransposedTensor(a: TfTensor, b: TfTensor): TfTensor {
    const tf = this.tf;
    if (this.plainMatmulFast && a.shape[0] >= TRANSPOSE_FIRST_MIN_ROWS) return tf.matMul(a, tf.transpose(b));
    return tf.matMul(a, b, false, true);
  }

  private broadcast(a: Tensor, b: Tensor, op: 'add' | 'mul'): Tensor {
    const A = this.own(a), B = this.own(b);
    checkBroadcast(op, A.shape, B.shape);
    return this.op(A.shape, (tf) => tf[op](this.val(A), this.val(B)));
  }

  /** cos/sin [T, D/2] in float64, rounded once; the last table is reused (q and k, every layer). */
  private ropeTables(positions: Int32Array, theta: number, d: number): { cos: Float32Array; sin: Float32Array } {
    const key = `${theta}|${d}|${positions.join(',')}`;
    if (this.lastRope?.key === key) return this.lastRope;
    const table = ropeTable(positions, theta, d);
    this.lastRope = { key, cos: Float32Array.from(table.cos), sin: Float32Array.from(table.sin) };
    return this.lastRope;
  }

  /** Additive mask [Tq, L], or null when every key is visible; the last one is reused across layers. */
  private maskFor(tq: number, len: number, opts: AttentionOptions): Float32Array | null {
    const m = opts.mask;
    const key = `${m.kind}|${m.kind === 'prefixLm' ? m.prefixLength : ''}|${tq}|${len}|${opts.queryOffset ?? 0}|${opts.slidingWindow ?? ''}`;
    if (this.lastMask?.key === key) return this.lastMask.data;
    const data = additiveMask(tq, len, opts);
    this.lastMask = { key, data: data.includes(-Infinity) ? data : null };
    return this.lastMask.data;
  }

  /** wasm engine: refuse an allocation that would run past the heap (see wasmHeapLimitBytes). */
  private checkHeap(shape: readonly number[], what: string): void {
    if (!this.wasmHeap) return;
    const bytes = 4 * sizeOf(shape);
    const held = this.tf.memory().numBytes;
    if (held + bytes > this.heapLimit) {
      const gib = (n: number) => `${(n / 2 ** 30).toFixed(2)} GiB`;
      throw new PaliGemmaError(
        `tfjs backend: the wasm engine cannot hold ${gib(held + bytes)} (${what} [${shape}] on top of ${gib(held)}); ` +
        `its heap ends at 4 GiB (limit ${gib(this.heapLimit)}): for larger models use engine 'node' (npm install @tensorflow/tfjs-node) or another backend`,
        'out_of_memory');
    }
  }
}

function lastDim(t: TfjsTensor): number {
  if (t.shape.length === 0) throw new Error('expected a tensor of rank ≥ 1, got a scalar');
  return t.shape[t.shape.length - 1];
}
