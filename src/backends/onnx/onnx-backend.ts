/**
 * The ONNX Runtime backend: a lazy backend. Ops record ONNX nodes and return handles; `read()`
 * compiles every pending result into one ONNX model, runs it with onnxruntime-node and keeps
 * the results on the host. Sessions are cached by the graph's structure (ops, attributes,
 * shapes, constants — not data), so a decode step, whose structure repeats, builds its session
 * once and reuses it every step.
 *
 * Memory model: every concrete tensor is a host array (a Storage), fed to the graph as an input
 * without copying; weights stay where the upload put them. Compute is float32, but weights may
 * stay narrow on the host: f16 uploads are kept as their raw bits (half the bytes) and widened
 * by a Cast inside the graph where used (an embedding gathers the f16 rows first, then casts
 * only those; a matmul widens its weight only once its input exists, and the lm_head in row
 * chunks: see widenAfter); bf16 uploads are kept as f16 bits where that is exact, with the rare
 * elements f16 cannot hold (tiny or huge magnitudes) kept as exact float32 values and put back
 * in-graph (a matmul adds their products, see addPatchProducts), since onnxruntime-node cannot
 * feed bfloat16. With `quantize: 'int8' | 'int4'`, a weight's first use as the transposed operand
 * of a matmul replaces it by block-wise codes (32 per float32 scale, symmetric), computed by
 * onnxruntime's MatMulNBits (matmul-nbits.ts); see `matmul`. `writeRows` (the KV cache
 * write) is recorded too: the cache's current value inside the graph becomes
 * ScatterND(cache, rows, src), and after the run the new rows are copied into the cache's host
 * buffer, so the cache is allocated once and the graph keeps one shape whatever the length.
 *
 * ```ts
 * const b = new OnnxBackend({ device: 'cpu' });
 * await b.init();
 * const y = b.gelu(b.upload(x, [4, 8]));       // recorded, not run
 * const data = await b.read(y);                // one session.run for everything pending
 * ```
 */
import type { AttentionOptions } from '../../interfaces/attention-kernel.js';
import type { BackendOptions } from '../../interfaces/contributions.js';
import { PaliGemmaError } from '../../interfaces/errors.js';
import type {
  BlockQuantizedWeight, DType, LossyWeights, MatmulOptions, OpName, ReduceOp, Reservation, Tensor, TensorBackend, UnaryOp,
} from '../../interfaces/tensor-backend.js';
import { additiveMask } from '../../attention/attention-mask.js';
import { blockElementsOption, queryBlocks } from '../../attention/query-blocks.js';
import {
  attentionDims, checkBroadcast, reduceShape, checkReshape, checkWriteRows, concatShape, embeddingDims, matmulDims,
  patchEmbedDims, ropeDims, sizeOf, sliceShape, transposeShape,
} from '../../tensor/op-shapes.js';
import {
  compileGraph, ConstLeaf, DataLeaf, type ElemType, GraphNode, HostNode, type Operand, resolve, Storage, type StorageLeaf,
} from './onnx-graph.js';
import { type HalfEncoding, HalfWeights } from './half-weights.js';
import { runStaged, ScratchPool } from './staged-flush.js';
import { SessionCache } from './session-cache.js';
import { ONNX_FLOAT, ONNX_INT64, type AttrValue } from './onnx-proto.js';
import { executionProviders, loadOrt, type OnnxDevice, type OrtModule } from './onnx-runtime.js';
import { MAX_EMBEDDED_BYTES, matMulNBits, type NBitsWeight, quantizeStorageNBits } from './matmul-nbits.js';
import { dequantizeBlockwise } from '../../tensor/block-quantization.js';
import {
  bf16Storage, exactElement, f16Storage, hostValues, patchProducts, type PatchProducts, rowPatchIndex,
} from './narrow-storage.js';
import {
  attachCopy, blockQuantizedStorage, checkBlockQuantized, tiedCopy, tiedQuantized, tiedQuantizedBytes,
} from './tied-weights.js';

/** ONNX opset and IR version of the generated models (LayerNormalization needs 17, ReduceMean with axes as an input 18). */
export const ONNX_OPSET = 21;

/** ONNX operator of each `unary` op (rsqrt is Reciprocal(Sqrt)). */
const ONNX_UNARY: Record<Exclude<UnaryOp, 'rsqrt'>, string> = { tanh: 'Tanh', exp: 'Exp', sigmoid: 'Sigmoid', reciprocal: 'Reciprocal' };
export const ONNX_IR_VERSION = 10;

export interface OnnxBackendOptions extends BackendOptions {
  /** 'cpu' (default) or 'cuda' (needs onnxruntime-node's CUDA provider installed). */
  device?: string;
  /**
   * Largest float32 copy of a 16-bit weight that one matmul makes at once (default 256 MiB);
   * a bigger weight used transposed (the lm_head) is widened and multiplied in row chunks.
   */
  widenChunkBytes?: number;
  /** onnxruntime intra-op threads (default: onnxruntime's choice, one per physical core). */
  threads?: number;
  /** Compiled sessions kept (least recently used are released). Default 32. */
  maxSessions?: number;
  /** onnxruntime graph optimisation level. Default 'all'. */
  graphOptimizationLevel?: 'disabled' | 'basic' | 'extended' | 'all';
  /**
   * Extra onnxruntime session options, merged last, e.g.
   * `{ extra: { session: { intra_op: { allow_spinning: '0' } } } }` on a shared machine.
   */
  sessionOptions?: Record<string, unknown>;
  /**
   * 'int8' | 'int4': weight-only quantization. An uploaded 2-D weight (f32, f16 or bf16), on
   * its first use as the transposed operand of a matmul (the [N, K] Linear layout) and if
   * nothing else has read it yet, is replaced by block-wise codes along K (blocks of 32, one
   * float32 scale each, symmetric) and computed with MatMulNBits at accuracy_level 4 (each
   * activation block quantized to int8 per call). Lossy; embeddings and norms stay 16-bit/float;
   * a tied lm_head that the embedding read first gets a quantized copy (tied-weights.ts) while
   * the table stays as it is for the gather. Default 'none'.
   */
  quantize?: 'none' | 'int8' | 'int4';
  /** Score elements per attention query block (query-blocks.ts; default 2²²); 0: no tiling. */
  attentionBlockElements?: number;
  /**
   * Products of at most this many rows with a 16-bit weight (decode steps, the prompt's last
   * row through the lm_head) run in the backend's own kernel straight from the 16-bit bits
   * (half-weights.ts, gemv16-kernel.ts) instead of a Cast + float32 Gemm in onnxruntime; 2-D
   * 16-bit weights then live in the half memory (half-memory.ts). Default 16; 0 turns it off.
   */
  halfGemvRows?: number;
  /**
   * Quantized-weight bytes one ONNX model embeds (default MAX_EMBEDDED_BYTES, under protobuf's
   * 2 GiB); a graph's weights past it are handed to onnxruntime as in-memory external data.
   */
  embeddedWeightBytes?: number;
}

/** Counters for tests and benchmarks. */
export interface OnnxBackendStats {
  /** InferenceSessions built (cache misses). */
  sessionsCreated: number;
  /** Flushes that found their session in the cache. */
  sessionHits: number;
  /** session.run calls. */
  runs: number;
  /** Handles created and not yet disposed. */
  liveTensors: number;
  /** Nodes, inputs and outputs of the last graph run. */
  lastGraph: { nodes: number; inputs: number; outputs: number };
  /** Milliseconds spent building sessions (model encoding + onnxruntime session creation). */
  compileMs: number;
  /** Milliseconds spent inside session.run. */
  runMs: number;
  /** Products computed by gemv16 (few rows, 16-bit weight) instead of onnxruntime. */
  halfGemvCalls: number;
  /** Milliseconds spent in host nodes (gemv16, widening 16-bit weights, gathers). */
  hostMs: number;
}

/** A handle: the pending node that will compute it, or the host storage that holds it. */
export class OnnxTensor implements Tensor {
  disposed = false;
  constructor(
    readonly owner: OnnxBackend, readonly shape: readonly number[], public ref: GraphNode | StorageLeaf,
    readonly dtype: DType = 'f32',
  ) {}
}

/**
 * Largest float32 copy of a 16-bit weight one matmul makes at once; bigger weights (the lm_head)
 * are widened and multiplied in row chunks of this size.
 */
const DEFAULT_WIDEN_CHUNK_BYTES = 256 * 1024 * 1024;

/**
 * MatMulNBits' accuracy_level: 4 quantizes each activation block to int8 and uses integer dot
 * products (the fast path for one-row decode); the added activation rounding is covered by the
 * lossy-weight thresholds (src/conformance/lossy-weights.ts).
 */
const NBITS_ACCURACY_LEVEL = 4;

/** Rows up to which a product with a 16-bit weight runs in gemv16 (see halfGemvRows). */
const DEFAULT_HALF_GEMV_ROWS = 16;

export class OnnxBackend implements TensorBackend {
  readonly name = 'onnx';
  /** Set again when a quantized folder's weights arrive (takeQuantized). */
  engine: string;
  readonly device: OnnxDevice;
  lossyWeights?: LossyWeights;
  private readonly widenChunkBytes: number;
  /** zeroAfter's node per activation operand. */
  private readonly gates = new WeakMap<Operand, GraphNode>();
  readonly stats: OnnxBackendStats = {
    sessionsCreated: 0, sessionHits: 0, runs: 0, liveTensors: 0,
    lastGraph: { nodes: 0, inputs: 0, outputs: 0 }, compileMs: 0, runMs: 0, halfGemvCalls: 0, hostMs: 0,
  };

  private ort: OrtModule | undefined;
  private providers: string[] = ['cpu'];
  private readonly options: OnnxBackendOptions;
  /** Live handles whose value is still a pending node. */
  private readonly pending = new Set<OnnxTensor>();
  /** Storages with recorded row writes not yet applied. */
  private readonly dirty = new Set<Storage>();
  private readonly sessions: SessionCache;
  private flushTail: Promise<void> = Promise.resolve();
  private readonly consts = new Map<string, ConstLeaf>();
  private lastRope: { positions: Int32Array; theta: number; d: number; cos: DataLeaf; sin: DataLeaf } | undefined;
  private lastRows: { offset: number; t: number; leaf: DataLeaf } | undefined;
  private lastMask: { key: string; leaf: DataLeaf } | undefined;
  private closed = false;
  /** Storages some live handle references (for storedBytes). */
  private readonly live = new Set<Storage>();
  /** The dtype uploads were made with, for views of their storage. */
  private readonly dtypes = new WeakMap<Storage, DType>();

  private readonly attentionBlockElements: number;
  /** 2-D 16-bit weights in the half memory and their products (half-weights.ts). */
  private readonly half: HalfWeights;
  /** Buffers for the intermediate results of staged flushes (staged-flush.ts). */
  private readonly scratch = new ScratchPool();

  constructor(options: OnnxBackendOptions = {}) {
    this.options = options;
    const device = (options.device ?? 'cpu').toLowerCase();
    if (device !== 'cpu' && device !== 'cuda') {
      throw new PaliGemmaError(`onnx backend: unknown device '${options.device}' (use cpu or cuda)`);
    }
    this.device = device;
    const quantize = options.quantize ?? 'none';
    if (quantize !== 'none' && quantize !== 'int8' && quantize !== 'int4') {
      throw new PaliGemmaError(`onnx backend: unknown quantize '${String(options.quantize)}' (use none, int8 or int4)`);
    }
    this.engine = quantize !== 'none' ? `onnx (${device}, ${quantize} weights)` : `onnx (${device})`;
    if (quantize !== 'none') this.lossyWeights = quantize;
    const chunk = options.widenChunkBytes ?? DEFAULT_WIDEN_CHUNK_BYTES;
    if (!(Number.isInteger(chunk) && chunk > 0)) {
      throw new PaliGemmaError(`onnx backend: widenChunkBytes must be a positive integer, got ${String(options.widenChunkBytes)}`);
    }
    this.widenChunkBytes = chunk;
    this.attentionBlockElements = blockElementsOption(options.attentionBlockElements, 'onnx backend');
    this.sessions = new SessionCache(options.maxSessions ?? 32, this.stats);
    const rows = options.halfGemvRows ?? DEFAULT_HALF_GEMV_ROWS;
    if (!(Number.isInteger(rows) && rows >= 0)) {
      throw new PaliGemmaError(`onnx backend: halfGemvRows must be a whole number ≥ 0, got ${String(options.halfGemvRows)}`);
    }
    this.half = new HalfWeights(rows, {
      threads: options.threads, widenChunkBytes: this.widenChunkBytes, stats: this.stats,
      runOnnx: (nodes, into) => this.runOnnx(nodes, into),
    });
    const budget = options.embeddedWeightBytes;
    if (budget !== undefined && !(Number.isInteger(budget) && budget >= 0 && budget <= MAX_EMBEDDED_BYTES)) {
      throw new PaliGemmaError(`onnx backend: embeddedWeightBytes must be an integer from 0 to ${MAX_EMBEDDED_BYTES}, got ${String(budget)}`, 'invalid_option');
    }
  }

  async init(): Promise<void> {
    if (this.ort) return;
    const ort = await loadOrt();
    this.providers = executionProviders(ort, this.device);
    this.ort = ort;
  }

  supports(op: OpName, dtype: DType = 'f32'): boolean {
    // Every op takes every storage dtype: f16 is kept as f16; bf16 as f16 where exact (else
    // float32); either is widened in-graph, so compute is float32 throughout.
    // Every op it declares, fused ones included (all seven), is lowered here.
    return (dtype === 'f32' || dtype === 'f16' || dtype === 'bf16') && typeof this[op] === 'function';
  }

  /** Bytes of host memory held by live tensors' storages (weights, caches, results). */
  get storedBytes(): number {
    let n = 0;
    const seen = new Set<Storage>();
    for (const s of this.live) {
      if (seen.has(s)) continue;
      seen.add(s);
      n += s.data.byteLength;
      if (s.encoding?.kind === 'int8') n += s.encoding.scales.data.byteLength;
      if (s.encoding?.kind === 'nbits') n += s.encoding.weight.scales.data.byteLength;
      if (s.encoding?.kind === 'f16' && s.encoding.patches) n += s.encoding.patches.count * 12;
      n += tiedQuantizedBytes(s);
    }
    return n;
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.flushTail;
    this.pending.clear();
    this.dirty.clear();
    await this.sessions.clear();
    this.half.close();
  }

  /** Number of compiled sessions held. */
  get cachedSessions(): number { return this.sessions.size; }
  /** Live handles whose value has not been computed yet. */
  get pendingTensors(): number { return this.pending.size; }

  // ── memory ──────────────────────────────────────────────────────────────
  upload(data: Float32Array | Uint16Array, shape: readonly number[], dtype: DType = 'f32'): Tensor {
    if (data.length !== sizeOf(shape)) throw new Error(`upload: shape [${shape}] needs ${sizeOf(shape)} elements, got ${data.length}`);
    let s: Storage;
    if (dtype === 'f32') {
      if (!(data instanceof Float32Array)) throw new Error('upload: f32 data must be a Float32Array');
      s = new Storage(new Float32Array(data), [...shape]);
    } else if (dtype === 'f16' || dtype === 'bf16') {
      if (!(data instanceof Uint16Array)) throw new Error(`upload: ${dtype} data must be raw bits in a Uint16Array`);
      // 2-D weights go to the half memory unless that is off or quantization replaces them by codes.
      const placed = this.half.maxRows > 0 && (this.options.quantize ?? 'none') === 'none' ? this.half.place(data, shape, dtype) : undefined;
      s = placed ?? (dtype === 'f16' ? f16Storage(new Uint16Array(data), shape) : bf16Storage(data, shape));
    } else {
      throw new Error(`onnx backend: unknown dtype ${String(dtype)}`);
    }
    return this.uploaded(s, shape, dtype);
  }

  /** Room a loader fills in place: 2-D 16-bit weights straight in the half memory, the rest as `upload` would keep them, uncopied. */
  reserve(shape: readonly number[], dtype: DType = 'f32'): Reservation {
    const n = sizeOf(shape);
    let used = false;
    const once = () => { if (used) throw new Error('reserve: this reservation was already committed or discarded'); used = true; };
    if (dtype === 'f32') {
      const data = new Float32Array(n);
      return { data, commit: () => { once(); return this.uploaded(new Storage(data, [...shape]), shape, dtype); }, discard: once };
    }
    if (dtype !== 'f16' && dtype !== 'bf16') throw new Error(`onnx backend: unknown dtype ${String(dtype)}`);
    const room = this.half.maxRows > 0 && (this.options.quantize ?? 'none') === 'none' ? this.half.reserve(shape, dtype) : undefined;
    const data = room?.view ?? new Uint16Array(n);
    const keep = (bits: Uint16Array) => (dtype === 'f16' ? f16Storage(bits, shape) : bf16Storage(bits, shape));
    return {
      data,
      commit: () => {
        once();
        const placed = room?.settle();
        // An f16 weight the half memory refused (it holds ±Inf/NaN) is kept as a copy of its own.
        return this.uploaded(placed ?? keep(room ? new Uint16Array(data) : data), shape, dtype);
      },
      discard: () => { once(); room?.release(); },
    };
  }

  private uploaded(s: Storage, shape: readonly number[], dtype: DType): Tensor {
    s.quantizable = true;
    this.dtypes.set(s, dtype);
    return this.view(s, shape, dtype);
  }

  uploadBlockQuantized(q: BlockQuantizedWeight): Tensor {
    this.takeQuantized(q);
    const s = blockQuantizedStorage(q);
    return this.view(s, s.shape);
  }

  attachBlockQuantized(table: Tensor, q: BlockQuantizedWeight): void {
    const T = this.own(table);
    if (T.ref.kind !== 'storage') throw new Error('attachBlockQuantized: the table must be an uploaded tensor');
    this.takeQuantized(q);
    attachCopy(T.ref.storage, q);
  }

  /** Checks given codes against the quantize option, and reports them in engine and lossyWeights. */
  private takeQuantized(q: BlockQuantizedWeight): void {
    const mode = this.options.quantize;
    checkBlockQuantized(q, mode === 'int8' ? 8 : mode === 'int4' ? 4 : undefined);
    const kind = q.bits === 4 ? 'int4' : 'int8';
    if (this.lossyWeights && this.lossyWeights !== kind) {
      throw new PaliGemmaError(`onnx backend: int${q.bits} weights mixed with ${this.lossyWeights} ones in one model`, 'corrupt_checkpoint');
    }
    this.lossyWeights = kind;
    this.engine = `onnx (${this.device}, ${kind} weights)`;
  }

  zeros(shape: readonly number[]): Tensor {
    return this.hostTensor(new Float32Array(sizeOf(shape)), shape);
  }

  async read(t: Tensor): Promise<Float32Array> {
    const x = this.own(t);
    while (x.ref.kind === 'node' || x.ref.storage.pendingVersion) {
      await this.flush();
      if (x.disposed) throw new Error('onnx backend: tensor disposed while being read');
    }
    const s = x.ref.storage;
    return s.encoding ? hostValues(s) : new Float32Array(s.data as Float32Array);
  }

  dispose(t: Tensor | readonly Tensor[]): void {
    const list = Array.isArray(t) ? t as readonly Tensor[] : [t as Tensor];
    for (const one of list) {
      if (!(one instanceof OnnxTensor) || one.owner !== this || one.disposed) continue;
      one.disposed = true;
      this.stats.liveTensors--;
      if (one.ref.kind === 'node') { this.pending.delete(one); continue; }
      const s = one.ref.storage;
      if (--s.refs === 0) this.live.delete(s);
      if (s.refs === 0 && s.pendingVersion) {
        // Nobody can see this storage any more: its recorded writes need not land.
        s.pendingVersion = null;
        s.commits = [];
        this.dirty.delete(s);
      }
    }
  }

  // ── linear algebra ──────────────────────────────────────────────────────
  matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
    const A = this.own(a), B = this.own(b);
    const bt = opts.bias ? this.own(opts.bias) : undefined;
    const { m, k, n } = matmulDims(A.shape, B.shape, opts.transposeB, bt && sizeOf(bt.shape));
    const bias: Operand | undefined = bt && this.operandAs(bt, [n]);
    const q = opts.transposeB ? this.quantizedWeight(B) : undefined;
    if (q) return this.wrap(matMulNBits(this.operand(A), q, NBITS_ACCURACY_LEVEL, bias));
    const x = this.operand(A);
    const half = opts.transposeB ? this.halfWeight(B) : undefined;
    if (half) return this.wrap(this.half.product(x, half, m, n, k, bias));
    const f16 = this.narrowWeight(B);
    if (f16 && opts.transposeB && n * k * 4 > this.widenChunkBytes) return this.wrap(this.chunkedMatmul(x, f16, m, n, k, bias));
    const inputs = [x, f16 ? this.widenAfter(f16, x, B.shape) : this.operand(B)];
    if (bias) inputs.push(bias);
    const y = this.node('Gemm', inputs, { transB: int(opts.transposeB ? 1 : 0) }, [m, n]);
    const fix = f16 && patchProducts(f16, 0, B.shape as [number, number], opts.transposeB === true);
    return this.wrap(fix ? this.addPatchProducts(y, x, fix) : y);
  }

  /**
   * y + x·Dᵀ, where D holds a bf16 weight's patched elements (the values f16 cannot hold; their
   * f16 slots are 0): x's columns at the patches' k gathered, scaled by the values and added
   * into y's columns at their n. A few per million elements, against widening and patching the
   * whole weight in float32.
   */
  private addPatchProducts(y: GraphNode, x: Operand, p: PatchProducts): GraphNode {
    const [m, n] = y.shape;
    const count = p.values.shape[0];
    const cols = this.node('Gather', [x, p.k], { axis: int(1) }, [m, count]);                 // [M, P]
    const terms = this.node('Mul', [cols, p.values], {}, [m, count]);                         // [M, P]
    const at = this.node('Expand', [p.n, this.i64([m, count])], {}, [m, count], 'int64');      // [M, P]
    return this.node('ScatterElements', [y, at, terms], { axis: int(1), reduction: { kind: 'string', value: 'add' } }, [m, n]);
  }

  /**
   * x [M, K] · Wᵀ for a 16-bit weight W [N, K] too big to widen whole (the tied lm_head: 2.1 GB
   * as float32): the rows of W in chunks of `widenChunkBytes` (as float32), each widened only
   * after the previous chunk's product exists, so one chunk's float32 copy is alive at a time.
   * Slicing copies the 16-bit rows, an extra pass the size of W itself.
   */
  private chunkedMatmul(x: Operand, s: Storage, m: number, n: number, k: number, bias: Operand | undefined): GraphNode {
    const rows = Math.max(1, Math.floor(this.widenChunkBytes / (4 * k)));
    const parts: GraphNode[] = [];
    let after: Operand = x;
    for (let r0 = 0; r0 < n; r0 += rows) {
      const r1 = Math.min(n, r0 + rows);
      const slice = this.node('Slice', [s.leaf([n, k]), this.i64([r0]), this.i64([r1]), this.i64([0])], {}, [r1 - r0, k], 'float16');
      const w = this.widenAfter(s, after, [r1 - r0, k], slice);
      const y = this.node('Gemm', [x, w], { transB: int(1) }, [m, r1 - r0]);
      const fix = patchProducts(s, r0 * k, [r1 - r0, k], true);
      after = fix ? this.addPatchProducts(y, x, fix) : y;
      parts.push(after);
    }
    const y = parts.length === 1 ? parts[0] : this.node('Concat', parts, { axis: int(1) }, [m, n]);
    return bias ? this.node('Add', [y, bias], {}, [m, n]) : y;
  }

  /** The placed half storage behind a weight operand, when it is one. */
  private halfWeight(B: OnnxTensor): HalfEncoding | undefined {
    const r = B.ref;
    if (r.kind !== 'storage' || r.storage.pendingVersion || r.storage.encoding?.kind !== 'half') return undefined;
    r.storage.pinned = true;
    return r.storage.encoding;
  }

  /** The f16-encoded storage behind a weight operand, when it is one (unquantized, no pending writes). */
  private narrowWeight(B: OnnxTensor): Storage | undefined {
    const r = B.ref;
    if (r.kind !== 'storage' || r.storage.pendingVersion || r.storage.encoding?.kind !== 'f16') return undefined;
    r.storage.pinned = true;
    return r.storage;
  }

  /**
   * The float32 value of a 16-bit weight's f16 bits (or of a slice of them, `part`), widened
   * no earlier than `after` is computed; a bf16 weight's patched elements read 0 here and are
   * added by addPatchProducts. onnxruntime is free to run a node that hangs only off
   * graph inputs, like the Cast of a weight, whenever it likes, and it runs them early: every
   * layer's float32 copy would then be alive at once, the model twice over. Reshaping the weight
   * to its own shape, with the shape tensor made to depend on `after` (plus int64(after[0])·0,
   * which is 0 whatever the value), ties the Cast to the matmul that needs it; Reshape keeps the
   * buffer, so nothing is copied.
   */
  private widenAfter(s: Storage, after: Operand, shape: readonly number[], part?: GraphNode): GraphNode {
    const src: Operand = part ?? s.leaf(s.shape);
    const srcShape = part?.shape ?? s.shape;
    const gateShape = this.node('Add', [this.i64([...srcShape]), this.zeroAfter(after)], {}, [srcShape.length], 'int64');
    const gated = this.node('Reshape', [src, gateShape], {}, srcShape, 'float16');
    const d = this.node('Cast', [gated], { to: int(ONNX_FLOAT) }, srcShape);
    return sameShape(shape, d.shape) ? d : this.reshapeNode(d, shape);
  }

  /**
   * int64 [1] zero computed from `after` (int64(after[0])·0), one per operand: the weights
   * widened after the same activation (q, k, v; gate, up) share it.
   */
  private zeroAfter(after: Operand): GraphNode {
    let zero = this.gates.get(after);
    if (!zero) {
      const first = this.node('Slice', [this.reshapeNode(after, [sizeOf(after.shape)]), this.i64([0]), this.i64([1]), this.i64([0])], {}, [1]);
      zero = this.node('Mul', [this.node('Cast', [first], { to: int(ONNX_INT64) }, [1], 'int64'), this.i64([0])], {}, [1], 'int64');
      this.gates.set(after, zero);
    }
    return zero;
  }

  // ── elementwise ─────────────────────────────────────────────────────────
  add(a: Tensor, b: Tensor): Tensor { return this.binary('Add', a, b); }
  mul(a: Tensor, b: Tensor): Tensor { return this.binary('Mul', a, b); }

  unary(op: UnaryOp, x: Tensor): Tensor {
    const X = this.own(x), s = X.shape, xo = this.operand(X);
    if (op === 'rsqrt') return this.wrap(this.node('Reciprocal', [this.node('Sqrt', [xo], {}, s)], {}, s));
    return this.wrap(this.node(ONNX_UNARY[op], [xo], {}, s));
  }

  reduce(op: ReduceOp, x: Tensor): Tensor {
    const X = this.own(x);
    return this.wrap(this.node(op === 'sum' ? 'ReduceSum' : 'ReduceMax', [this.operand(X), this.i64([-1])], { keepdims: int(1) }, reduceShape(X.shape)));
  }

  scale(a: Tensor, s: number): Tensor {
    const A = this.own(a);
    return this.wrap(this.node('Mul', [this.operand(A), this.f32(s)], {}, A.shape));
  }

  /**
   * Tanh-GELU as x · sigmoid(2u) = x / (1 + exp(-2u)), u = √(2/π)·(x + 0.044715·x³), which is
   * 0.5·x·(1 + tanh u) without its cancellation: onnxruntime's own Gelu(approximate='tanh') in
   * float32 loses most digits of small negative outputs (x ≈ -5 → 6% off), this keeps ~1e-7.
   */
  gelu(a: Tensor): Tensor {
    const A = this.own(a), s = A.shape;
    const x = this.operand(A);
    const k = -2 * Math.sqrt(2 / Math.PI);
    const poly = this.node('Add', [this.node('Mul', [this.node('Mul', [x, x], {}, s), this.f32(k * 0.044715)], {}, s), this.f32(k)], {}, s);
    const e = this.node('Exp', [this.node('Mul', [x, poly], {}, s)], {}, s);                    // exp(-2u)
    return this.wrap(this.node('Div', [x, this.node('Add', [e, this.f32(1)], {}, s)], {}, s));
  }

  // ── normalisation over the last axis ────────────────────────────────────
  layerNorm(x: Tensor, w: Tensor, b: Tensor, eps: number): Tensor {
    const X = this.own(x), d = lastDim(X);
    return this.wrap(this.node('LayerNormalization',
      [this.operand(X), this.operandAs(this.own(w), [d]), this.operandAs(this.own(b), [d])],
      { axis: int(-1), epsilon: { kind: 'float', value: eps } }, X.shape));
  }

  rmsNorm(x: Tensor, w: Tensor, eps: number): Tensor {
    const X = this.own(x), d = lastDim(X);
    const xo = this.operand(X);
    const reduced = [...X.shape.slice(0, -1), 1];
    const sq = this.node('Mul', [xo, xo], {}, X.shape);
    const ms = this.node('ReduceMean', [sq, this.i64([-1])], { keepdims: int(1) }, reduced);
    const inv = this.node('Reciprocal', [this.node('Sqrt', [this.node('Add', [ms, this.f32(eps)], {}, reduced)], {}, reduced)], {}, reduced);
    const gain = this.node('Add', [this.operandAs(this.own(w), [d]), this.f32(1)], {}, [d]);
    return this.wrap(this.node('Mul', [this.node('Mul', [xo, inv], {}, X.shape), gain], {}, X.shape));
  }

  softmax(x: Tensor): Tensor {
    const X = this.own(x);
    return this.wrap(this.node('Softmax', [this.operand(X)], { axis: int(-1) }, X.shape));
  }

  rope(x: Tensor, positions: Int32Array, theta: number): Tensor {
    const X = this.own(x);
    const { d } = ropeDims(X.shape, positions.length);
    const half = d / 2;
    const { cos, sin } = this.ropeTables(positions, theta, d);
    const xo = this.operand(X);
    const halfShape = [X.shape[0], X.shape[1], half];
    const x1 = this.node('Slice', [xo, this.i64([0]), this.i64([half]), this.i64([2])], {}, halfShape);
    const x2 = this.node('Slice', [xo, this.i64([half]), this.i64([d]), this.i64([2])], {}, halfShape);
    const rot = this.node('Concat', [x2, x1], { axis: int(2) }, X.shape);            // [x2, x1]
    // out = x·cos + [x2, x1]·[-sin, sin]  ==  x·cos + rotate_half(x)·sin
    return this.wrap(this.node('Add', [
      this.node('Mul', [xo, cos], {}, X.shape),
      this.node('Mul', [rot, sin], {}, X.shape),
    ], {}, X.shape));
  }

  // ── indexing and layout ─────────────────────────────────────────────────
  embedding(table: Tensor, ids: Int32Array): Tensor {
    const T = this.own(table);
    const { h } = embeddingDims(T.shape, ids);
    const idx = BigInt64Array.from(ids, (id) => BigInt(id));
    const leaf = new DataLeaf(idx, [ids.length], 'int64');
    const s = T.ref.kind === 'storage' && !T.ref.storage.pendingVersion ? T.ref.storage : undefined;
    if (s?.encoding?.kind === 'half' && sameShape(s.shape, T.shape)) {
      // Widen only the gathered rows, on the host.
      s.pinned = true;
      return this.wrap(this.half.gather(s.encoding, ids, h));
    }
    if (s?.encoding?.kind === 'f16' && sameShape(s.shape, T.shape)) {
      // Gather the f16 rows, then widen only those (never the whole table).
      s.pinned = true;
      const rows = this.node('Gather', [s.leaf(s.shape), leaf], { axis: int(0) }, [ids.length, h], 'float16');
      let out: GraphNode = this.node('Cast', [rows], { to: int(ONNX_FLOAT) }, [ids.length, h]);
      const fix = s.encoding.patches ? this.rowPatches(s, ids, h) : undefined;
      if (fix) {
        const flat = this.reshapeNode(out, [ids.length * h]);
        out = this.reshapeNode(this.node('ScatterND', [flat, fix.index, fix.values], {}, [ids.length * h]), [ids.length, h]);
      }
      return this.wrap(out);
    }
    return this.wrap(this.node('Gather', [this.operand(T), leaf], { axis: int(0) }, [ids.length, h]));
  }

  concat(ts: readonly Tensor[], axis: number): Tensor {
    const parts = ts.map((t) => this.own(t));
    const rank = parts[0]?.shape.length ?? 0;
    const ax = axis < 0 ? axis + rank : axis;
    const shape = concatShape(parts.map((p) => p.shape), ax);
    if (parts.length === 1) return this.wrap(this.node('Identity', [this.operand(parts[0])], {}, shape));
    return this.wrap(this.node('Concat', parts.map((p) => this.operand(p)), { axis: int(ax) }, shape));
  }

  slice(x: Tensor, axis: number, start: number, end: number): Tensor {
    const X = this.own(x);
    const ax = axis < 0 ? axis + X.shape.length : axis;
    const shape = sliceShape(X.shape, ax, start, end);
    return this.wrap(this.node('Slice',
      [this.operand(X), this.i64([start]), this.i64([end]), this.i64([ax])], {}, shape));
  }

  reshape(x: Tensor, shape: readonly number[]): Tensor {
    const X = this.own(x);
    checkReshape(X.shape, shape);
    if (X.ref.kind === 'storage') return this.view(X.ref.storage, shape);   // shares storage
    return this.wrap(this.reshapeNode(X.ref, shape));
  }

  transpose(x: Tensor, perm: readonly number[]): Tensor {
    const X = this.own(x);
    const shape = transposeShape(X.shape, perm);
    return this.wrap(this.node('Transpose', [this.operand(X)], { perm: ints(perm) }, shape));
  }

  writeRows(dst: Tensor, src: Tensor, offset: number): void {
    const D = this.own(dst), S = this.own(src);
    const rowShape = D.shape.slice(1);
    const row = sizeOf(rowShape);
    const t = S.shape[0];
    checkWriteRows(D.shape, S.shape, offset);
    if (D.ref.kind === 'storage' && D.ref.storage.encoding) {
      throw new Error(`writeRows: the destination is stored as ${D.dtype}${D.ref.storage.encoding.kind === 'int8' ? ' (int8-quantized)' : ''}; only f32 tensors are writable`);
    }
    if (t === 0) return;
    const upd = this.operandAs(S, [t, ...rowShape]);
    const scatter = (base: Operand) => this.node('ScatterND', [base, this.rowIndices(offset, t), upd], {}, D.shape);
    if (D.ref.kind === 'node') {
      // A pending destination is simply replaced by its updated value.
      D.ref = scatter(D.ref);
      return;
    }
    const s = D.ref.storage;
    let version: GraphNode = scatter(this.operand(D));
    if (!sameShape(D.shape, s.shape)) version = this.reshapeNode(version, s.shape);
    s.pendingVersion = version;
    // The rows to copy into host memory after the next run (a snapshot when already concrete).
    const src0 = resolve(upd);
    const commitSrc: Operand = src0.kind === 'storage' && !src0.storage.pendingVersion
      ? new DataLeaf(new Float32Array(src0.storage.data as Float32Array), [t, ...rowShape], 'float32')
      : src0;
    s.commits.push({ src: commitSrc, offset: offset * row });
    this.dirty.add(s);
  }

  // ── vision ──────────────────────────────────────────────────────────────
  patchEmbed(pixels: Tensor, weight: Tensor, bias: Tensor, patch: number): Tensor {
    const X = this.own(pixels), W = this.own(weight), B = this.own(bias);
    const { c, h, w, o, gh, gw } = patchEmbedDims(X.shape, W.shape, sizeOf(B.shape), patch);
    const px4 = this.operandAs(X, [1, c, h, w]);
    const conv = this.node('Conv', [px4, this.operand(W), this.operandAs(B, [o])], {
      kernel_shape: ints([patch, patch]), strides: ints([patch, patch]),
    }, [1, o, gh, gw]);                                                      // [1, O, gh, gw]
    const flat = this.reshapeNode(conv, [o, gh * gw]);                       // [O, N]
    return this.wrap(this.node('Transpose', [flat], { perm: ints([1, 0]) }, [gh * gw, o]));  // [N, O]
  }

  // ── fused attention (attend() in src/attention calls it) ────────────────
  /**
   * softmax(Q·Kᵀ·scale [+ softcap] + mask)·V over every row of k/v, GQA by reshaping the query
   * heads of one kv head into one batch. Rows past kvLength are masked (-∞) instead of sliced
   * off, so the graph's shapes do not depend on how full the cache is. Long prompts run in
   * query blocks (query-blocks.ts), one chain of nodes each, joined by a Concat: onnxruntime
   * runs each chain to its end before the next and frees its scores, so a layer holds one
   * block's [Hq, rows, cap] scores, not [Hq, T, T].
   */
  attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor {
    const Q = this.own(q), K = this.own(k), V = this.own(v);
    const { tq, hq, d, tk: cap, hkv } = attentionDims(Q.shape, K.shape, V.shape, opts.kvLength);
    const kt = this.node('Transpose', [this.operand(K)], { perm: ints([1, 2, 0]) }, [hkv, d, cap]);   // [Hkv, D, cap]
    const vh = this.node('Transpose', [this.operand(V)], { perm: ints([1, 0, 2]) }, [hkv, cap, d]);   // [Hkv, cap, D]
    const blocks = queryBlocks(tq, hq, cap, this.attentionBlockElements);
    if (blocks.length === 1) return this.wrap(this.attentionRows(this.operand(Q), tq, kt, vh, Q.shape, K.shape, V.shape, opts));
    const off = opts.queryOffset ?? 0;
    const parts = blocks.map(([s, e]) => {
      const qb = this.node('Slice', [this.operand(Q), this.i64([s]), this.i64([e]), this.i64([0])], {}, [e - s, hq, d]);
      return this.attentionRows(qb, e - s, kt, vh, [e - s, hq, d], K.shape, V.shape, { ...opts, queryOffset: off + s });
    });
    return this.wrap(this.node('Concat', parts, { axis: int(0) }, [tq, hq, d]));              // [Tq, Hq, D]
  }

  /** One block of query rows: q [Tq, Hq, D] against kᵀ [Hkv, D, cap] and v [Hkv, cap, D] → [Tq, Hq, D]. */
  private attentionRows(q: Operand, tq: number, kt: GraphNode, vh: GraphNode, qShape: readonly number[],
    kShape: readonly number[], vShape: readonly number[], opts: AttentionOptions): GraphNode {
    const { hq, d, tk: cap, hkv, kvLength } = attentionDims(qShape, kShape, vShape, opts.kvLength);
    const g = hq / hkv;
    const scoreShape = [hkv, g * tq, cap];

    const qh = this.node('Transpose', [q], { perm: ints([1, 0, 2]) }, [hq, tq, d]);
    const qg = this.reshapeNode(qh, [hkv, g * tq, d]);                          // heads of one kv head together
    let scores: GraphNode = this.node('MatMul', [qg, kt], {}, scoreShape);      // [Hkv, G·Tq, cap]
    scores = this.node('Mul', [scores, this.f32(opts.scale)], {}, scoreShape);
    if (opts.softCap !== undefined) {
      const inner = this.node('Tanh', [this.node('Mul', [scores, this.f32(1 / opts.softCap)], {}, scoreShape)], {}, scoreShape);
      scores = this.node('Mul', [inner, this.f32(opts.softCap)], {}, scoreShape);
    }
    const needsMask = !(opts.mask.kind === 'bidirectional' && opts.slidingWindow === undefined && kvLength === cap);
    let probs: GraphNode;
    if (needsMask) {
      const s4 = this.reshapeNode(scores, [hkv, g, tq, cap]);
      const masked = this.node('Add', [s4, this.attentionMask(tq, cap, kvLength, opts)], {}, [hkv, g, tq, cap]);
      probs = this.reshapeNode(this.node('Softmax', [masked], { axis: int(-1) }, [hkv, g, tq, cap]), scoreShape);
    } else {
      probs = this.node('Softmax', [scores], { axis: int(-1) }, scoreShape);
    }
    const out = this.node('MatMul', [probs, vh], {}, [hkv, g * tq, d]);       // [Hkv, G·Tq, D]
    const heads = this.reshapeNode(out, [hq, tq, d]);
    return this.node('Transpose', [heads], { perm: ints([1, 0, 2]) }, [tq, hq, d]);
  }

  // ── internals ───────────────────────────────────────────────────────────
  private own(t: Tensor): OnnxTensor {
    if (!(t instanceof OnnxTensor) || t.owner !== this) throw new Error('tensor does not belong to this onnx backend');
    if (t.disposed) throw new Error(`onnx backend: tensor [${t.shape}] used after dispose`);
    if (this.closed) throw new Error('onnx backend is closed');
    return t;
  }

  private hostTensor(data: Float32Array, shape: readonly number[]): OnnxTensor {
    return this.view(new Storage(data, [...shape]), shape);
  }

  private view(s: Storage, shape: readonly number[], dtype?: DType): OnnxTensor {
    s.refs++;
    this.live.add(s);
    this.stats.liveTensors++;
    return new OnnxTensor(this, [...shape], s.leaf([...shape]), dtype ?? this.dtypes.get(s) ?? 'f32');
  }

  /** The float32 value of a stored leaf: the leaf itself, or its in-graph decoding. */
  private storageValue(l: StorageLeaf): Operand {
    const s = l.storage;
    s.pinned = true;
    const enc = s.encoding;
    if (!enc) return l;
    let d = s.decoded;
    if (!d || d.done) {
      if (enc.kind === 'half') {
        // Read whole by some other op (rare): widened on the host, fed as float32.
        d = new HostNode([], s.shape, () => hostValues(s));
      } else if (enc.kind === 'nbits') {
        // Read as a plain tensor after quantization (rare: e.g. a weight sliced later). The
        // host dequantizes once per flush; the result is exactly what MatMulNBits multiplies by.
        d = this.node('Identity', [new DataLeaf(dequantizeBlockwise(enc.weight.q), s.shape, 'float32')], {}, s.shape);
      } else if (enc.kind === 'int8') {
        const dq = this.node('DequantizeLinear', [s.leaf([enc.k, enc.n]), enc.scales], { axis: int(1) }, [enc.k, enc.n]);
        d = this.node('Transpose', [dq], { perm: ints([1, 0]) }, [enc.n, enc.k]);
      } else {
        d = this.node('Cast', [s.leaf(s.shape)], { to: int(ONNX_FLOAT) }, s.shape);
        if (enc.patches) {
          const n = sizeOf(s.shape);
          const flat = this.node('ScatterND', [this.reshapeNode(d, [n]), enc.patches.index, enc.patches.values], {}, [n]);
          d = this.reshapeNode(flat, s.shape);
        }
      }
      s.decoded = d;
    }
    return sameShape(l.shape, d.shape) ? d : this.reshapeNode(d, l.shape);
  }

  /**
   * The int8 form of a weight used as matmul's transposed operand, quantizing it now if the
   * option is on and nothing has read the weight as it is (its layout would change under them).
   */
  private quantizedWeight(B: OnnxTensor): NBitsWeight | undefined {
    const mode = this.options.quantize;
    if (B.ref.kind !== 'storage') return undefined;
    const s = B.ref.storage;
    if (s.pendingVersion || B.shape.length !== 2 || !sameShape(B.shape, s.shape)) return undefined;
    const given = tiedCopy(s);
    if (given) return given;
    if (s.encoding?.kind !== 'nbits') {
      if (mode !== 'int8' && mode !== 'int4') return undefined;
      if (!s.quantizable || (s.encoding && s.encoding.kind !== 'f16')) return undefined;
      // Already read as it is (the tied embedding table, gathered before the lm_head): its
      // layout must stay, so the matmul gets a quantized copy of its own (tied-weights.ts).
      if (s.pinned) return tiedQuantized(s, mode === 'int4' ? 4 : 8);
      quantizeStorageNBits(s, mode === 'int4' ? 4 : 8);
    }
    return (s.encoding as Extract<Storage['encoding'], { kind: 'nbits' }>).weight;
  }

  /**
   * The patches of a bf16-as-f16 table that fall in the gathered rows, as ScatterND operands on
   * the flattened [T·H] output. The count is padded to T × (most patches in any row), repeating
   * an exact write, so the graph's shape depends on T alone and decode steps share a session.
   */
  private rowPatches(s: Storage, ids: Int32Array, h: number): { index: DataLeaf; values: DataLeaf } | undefined {
    const enc = s.encoding as Extract<Storage['encoding'], { kind: 'f16' }>;
    const byRow = rowPatchIndex(s, h);
    if (byRow.maxPerRow === 0) return undefined;
    const p = enc.patches!;
    const vals = p.values.data as Float32Array;
    const count = ids.length * byRow.maxPerRow;
    const index = new BigInt64Array(count), values = new Float32Array(count);
    let at = 0;
    ids.forEach((id, t) => {
      for (let j = byRow.start[id]; j < byRow.start[id + 1]; j++) {
        index[at] = BigInt(t * h + (Number((p.index.data as BigInt64Array)[j]) - id * h));
        values[at++] = vals[j];
      }
    });
    // Padding: rewrite output element 0 with its exact value.
    const first = exactElement(s, ids[0] * h);
    for (; at < count; at++) { index[at] = 0n; values[at] = first; }
    return { index: new DataLeaf(index, [count, 1], 'int64'), values: new DataLeaf(values, [count], 'float32') };
  }

  private wrap(n: GraphNode): OnnxTensor {
    const t = new OnnxTensor(this, n.shape, n);
    this.stats.liveTensors++;
    this.pending.add(t);
    return t;
  }

  private node(op: string, inputs: readonly Operand[], attrs: Record<string, AttrValue>, shape: readonly number[], elemType: ElemType = 'float32'): GraphNode {
    return new GraphNode(op, inputs, attrs, [...shape], elemType);
  }

  /** The value a handle has now, as a graph operand (recorded row writes included). */
  private operand(t: OnnxTensor): Operand {
    const r = t.ref;
    if (r.kind === 'node') return r.done ?? r;
    const v = r.storage.pendingVersion;
    if (!v) return this.storageValue(r);
    return sameShape(v.shape, t.shape) ? v : this.reshapeNode(v, t.shape);
  }

  /** The handle's value viewed as `shape` (same element count). */
  private operandAs(t: OnnxTensor, shape: readonly number[]): Operand {
    if (sameShape(t.shape, shape)) return this.operand(t);
    if (t.ref.kind === 'storage' && !t.ref.storage.pendingVersion) return this.storageValue(t.ref.storage.leaf([...shape]));
    return this.reshapeNode(this.operand(t), shape);
  }

  private reshapeNode(x: Operand, shape: readonly number[]): GraphNode {
    return this.node('Reshape', [x, this.i64([...shape])], {}, shape);
  }

  private binary(op: 'Add' | 'Mul', a: Tensor, b: Tensor): Tensor {
    const A = this.own(a), B = this.own(b);
    checkBroadcast(op.toLowerCase(), A.shape, B.shape);
    return this.wrap(this.node(op, [this.operand(A), this.operand(B)], {}, A.shape));
  }

  /** Interned constants: one leaf (and one initializer) per distinct value. */
  private constant(values: readonly number[], shape: readonly number[], elemType: ElemType): ConstLeaf {
    const k = `${elemType}${shape.length}:${values.join(',')}`;
    const hit = this.consts.get(k);
    if (hit) return hit;
    if (this.consts.size > 4096) this.consts.clear();
    const c = new ConstLeaf(values, shape, elemType);
    this.consts.set(k, c);
    return c;
  }

  private i64(values: readonly number[]): ConstLeaf { return this.constant(values, [values.length], 'int64'); }
  private f32(value: number): ConstLeaf { return this.constant([Math.fround(value)], [], 'float32'); }

  /** cos [T, 1, D] and signed sin [T, 1, D] (first half negated), shared by every layer's q and k. */
  private ropeTables(positions: Int32Array, theta: number, d: number): { cos: DataLeaf; sin: DataLeaf } {
    const last = this.lastRope;
    if (last && last.theta === theta && last.d === d && sameInts(last.positions, positions)) return last;
    const t = positions.length, half = d / 2;
    const cos = new Float32Array(t * d), sin = new Float32Array(t * d);
    for (let ti = 0; ti < t; ti++) {
      for (let i = 0; i < half; i++) {
        const angle = positions[ti] * Math.pow(theta, (-2 * i) / d);
        const c = Math.cos(angle), s = Math.sin(angle);
        cos[ti * d + i] = c; cos[ti * d + i + half] = c;
        sin[ti * d + i] = -s; sin[ti * d + i + half] = s;
      }
    }
    const entry = {
      positions: Int32Array.from(positions), theta, d,
      cos: new DataLeaf(cos, [t, 1, d], 'float32'), sin: new DataLeaf(sin, [t, 1, d], 'float32'),
    };
    this.lastRope = entry;
    return entry;
  }

  /** ScatterND indices [T, 1] = offset..offset+T-1, shared by every layer's k and v write. */
  private rowIndices(offset: number, t: number): DataLeaf {
    const last = this.lastRows;
    if (last && last.offset === offset && last.t === t) return last.leaf;
    const idx = new BigInt64Array(t);
    for (let i = 0; i < t; i++) idx[i] = BigInt(offset + i);
    const leaf = new DataLeaf(idx, [t, 1], 'int64');
    this.lastRows = { offset, t, leaf };
    return leaf;
  }

  /** Additive mask [Tq, cap]: 0 where visible, -∞ elsewhere (and on rows ≥ kvLength). */
  private attentionMask(tq: number, cap: number, kvLength: number, opts: AttentionOptions): DataLeaf {
    const off = opts.queryOffset ?? 0;
    const m = opts.mask;
    const key = `${tq}|${cap}|${kvLength}|${off}|${m.kind}|${m.kind === 'prefixLm' ? m.prefixLength : ''}|${opts.slidingWindow ?? ''}`;
    if (this.lastMask?.key === key) return this.lastMask.leaf;
    const leaf = new DataLeaf(additiveMask(tq, kvLength, opts, cap), [tq, cap], 'float32');
    this.lastMask = { key, leaf };
    return leaf;
  }

  /** Runs everything pending (serialised: one flush at a time). */
  private flush(): Promise<void> {
    const run = this.flushTail.then(() => this.flushNow());
    this.flushTail = run.catch(() => undefined);
    return run;
  }

  private async flushNow(): Promise<void> {
    const handles = [...this.pending].filter((h) => h.ref.kind === 'node');
    const storages = [...this.dirty];
    if (handles.length === 0 && storages.length === 0) return;
    const commits = storages.map((s) => ({ s, version: s.pendingVersion, list: s.commits.splice(0) }));

    const wanted: GraphNode[] = [];
    const seen = new Set<GraphNode>();
    const want = (n: GraphNode) => { if (!n.done && !seen.has(n)) { seen.add(n); wanted.push(n); } };
    for (const h of handles) want(h.ref as GraphNode);
    for (const c of commits) for (const w of c.list) if (w.src.kind === 'node') want(w.src);

    if (wanted.length) {
      try {
        await this.runGraph(wanted);
      } catch (e) {
        for (const c of commits) c.s.commits.unshift(...c.list);
        throw e;
      }
    }
    for (const h of handles) {
      if (h.ref.kind !== 'node') continue;
      const leaf = h.ref.done!;
      h.ref = leaf;
      this.pending.delete(h);
      if (!h.disposed) leaf.storage.refs++;
    }
    for (const { s, version, list } of commits) {
      if (s.refs > 0) {
        for (const w of list) {
          const src = w.src.kind === 'node' ? w.src.done!.storage.data : (w.src as DataLeaf).data;
          (s.data as Float32Array).set(src as Float32Array, w.offset);
        }
      }
      if (s.pendingVersion === version) { s.pendingVersion = null; this.dirty.delete(s); }
    }
  }

  /** Computes `wanted`: one onnxruntime run, or stages around host nodes (staged-flush.ts). */
  private async runGraph(wanted: GraphNode[]): Promise<void> {
    await runStaged(wanted, {
      runOnnx: (nodes, into) => this.runOnnx(nodes, into),
      hostValue: (o) => this.hostValue(o),
      scratch: this.scratch,
      stats: this.stats,
    });
  }

  /** An operand's float32 values on the host (it is stored, computed or constant). */
  private hostValue(o: Operand): Float32Array {
    const r = resolve(o);
    if (r.kind === 'node') throw new Error('onnx backend: a host node input was not computed');
    if (r.kind === 'const') return Float32Array.from(r.values);
    if (r.kind === 'data') return r.data as Float32Array;
    return r.storage.encoding ? hostValues(r.storage) : r.storage.data as Float32Array;
  }

  /**
   * One onnxruntime run computing `wanted`. `into` may give a node's float32 result buffer
   * (onnxruntime writes into it); the others get fresh ones.
   */
  private async runOnnx(wanted: GraphNode[], into?: (n: GraphNode) => Float32Array | undefined): Promise<void> {
    await this.init();
    const ort = this.ort!;
    const g = compileGraph(wanted, ONNX_OPSET, ONNX_IR_VERSION, this.options.embeddedWeightBytes ?? MAX_EMBEDDED_BYTES);
    // onnxruntime's CPU arena stays on, also for graphs that widen 16-bit weights: each widened
    // copy lives only until its matmul (see widenAfter), so a session's arena holds about one
    // layer's worth. Without it, glibc's heap (whose mmap threshold rises to 32 MiB after the
    // first big free) fragments: a full-size F16 PaliGemma-3B prefill peaked 2.6 GB higher.
    const session = await this.session(g.key, g.model, g.embeddedBytes > 0, g.externalData);
    const feeds: Record<string, import('onnxruntime-node').Tensor> = {};
    for (const f of g.feeds) {
      const data = f.leaf.kind === 'storage' ? f.leaf.storage.data : f.leaf.data;
      feeds[f.name] = new ort.Tensor(f.leaf.elemType as 'float32', data as Float32Array, [...f.leaf.shape]);   // float16 data is Uint16Array bits
    }
    const given = wanted.map((n) => into?.(n));
    const fetches: Record<string, import('onnxruntime-node').Tensor | null> = {};
    wanted.forEach((n, i) => { fetches[g.outputNames[i]] = given[i] ? new ort.Tensor('float32', given[i]!, [...n.shape]) : null; });
    const t0 = performance.now();
    const results = await session.run(feeds, fetches);
    this.stats.runMs += performance.now() - t0;
    this.stats.runs++;
    this.stats.lastGraph = { nodes: g.nodeCount, inputs: g.feeds.length, outputs: wanted.length };
    wanted.forEach((n, i) => {
      const data = given[i] ?? results[g.outputNames[i]].data as Float32Array;
      n.done = new Storage(data, n.shape).leaf(n.shape);
    });
  }

  private session(
    key: string, model: () => Uint8Array, holdsWeights = false, externalData: ReadonlyArray<{ path: string; data: Uint8Array }> = [],
  ): Promise<import('onnxruntime-node').InferenceSession> {
    return this.sessions.get(key, () => this.ort!.InferenceSession.create(model(), {
      executionProviders: this.providers,
      graphOptimizationLevel: this.options.graphOptimizationLevel ?? 'all',
      logSeverityLevel: 3,
      ...(this.options.threads ? { intraOpNumThreads: this.options.threads } : {}),
      ...this.options.sessionOptions,
      ...(externalData.length ? { externalData } : {}),
    }), holdsWeights);
  }
}


function int(value: number): AttrValue { return { kind: 'int', value }; }
function ints(value: readonly number[]): AttrValue { return { kind: 'ints', value }; }


function lastDim(t: OnnxTensor): number {
  return t.shape[t.shape.length - 1];
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

function sameInts(a: Int32Array, b: Int32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
