/**
 * TensorBackend: owns device memory and runs a small core op set; fused composites are optional.
 *
 * Tensors are opaque handles owned by the backend that made them; only `read()` brings data
 * back to JS, and it is async because device readback is. A backend may record ops lazily and
 * flush at `read()`. All model compute is float32; weights may be stored as f16/bf16 when the
 * backend says it supports them (`supports('upload', 'bf16')`).
 *
 * The required core (16 methods besides `name` and `supports`) is what every composite the model
 * uses can be written in, and no more: memory (upload, zeros, read, dispose), matmul, elementwise
 * add/mul/scale plus `unary` (tanh, exp, sigmoid, rsqrt, reciprocal), one last-axis `reduce`
 * (sum/max) whose [..., 1] result add/mul broadcast back over the row, and layout (embedding,
 * concat, slice, reshape, transpose, writeRows). Norms, softmax, GELU, RoPE, the patch
 * convolution and attention are Gemma/SigLIP conventions, not primitives: src/ops writes each
 * once from the core (`withDefaultOps`), src/attention builds attention from it (`attend`), and a
 * backend declares a method of the same name only when its fused kernel does better.
 * `supports(op)` tells which ones it does natively.
 *
 * ```ts
 * const a = backend.upload(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]);
 * const b = backend.upload(new Float32Array(12).fill(1), [4, 3]);
 * const c = backend.matmul(a, b, { transposeB: true });   // [2, 4]
 * console.log(await backend.read(c));
 * backend.dispose([a, b, c]);
 * ```
 */
import type { ServiceIdentifier } from 'inversify';
import type { AttentionOptions } from './attention-kernel.js';
export const TensorBackend: ServiceIdentifier<TensorBackend> = Symbol('TensorBackend');

/** Storage dtype of a tensor. Compute is float32; 16-bit types exist for weights. */
export type DType = 'f32' | 'f16' | 'bf16';

/** A lossy storage form for float32 weights: IEEE half, or int8 with a scale per output channel. */
export type LossyWeights = 'f16' | 'int8' | 'int4';

/** Opaque handle. Only its backend may look inside. */
export interface Tensor {
  readonly shape: readonly number[];
  readonly dtype: DType;
}

/** The ops every backend implements: memory, matmul, elementwise, one reduction, layout. */
export type CoreOpName =
  | 'upload' | 'read'
  | 'matmul' | 'add' | 'mul' | 'scale' | 'unary' | 'reduce'
  | 'embedding' | 'concat' | 'slice' | 'reshape' | 'transpose' | 'writeRows';

/**
 * Composites a backend may implement as fused kernels; src/ops builds each one from core ops
 * otherwise (`withDefaultOps`), and src/attention builds attention the same way (`attend`).
 */
export type FusedOpName = 'layerNorm' | 'rmsNorm' | 'gelu' | 'softmax' | 'rope' | 'patchEmbed' | 'attention';

/** Names of every op; `supports(op)` and the conformance kit speak these names. */
export type OpName = CoreOpName | FusedOpName;

/** Elementwise functions of `unary`: what the default composites and Gemma 2's soft-cap need. */
export type UnaryOp = 'tanh' | 'exp' | 'sigmoid' | 'rsqrt' | 'reciprocal';

/** Reductions of `reduce`, over the last axis. */
export type ReduceOp = 'sum' | 'max';

export interface MatmulOptions {
  /** b is [N, K] (PyTorch Linear layout) instead of [K, N]. */
  transposeB?: boolean;
  /** [N], added to every output row. */
  bias?: Tensor;
}

/**
 * A [N, K] weight block-quantized along K (a `paligemma quantize` folder): `data` uint8
 * [N, kBlocks, blockSize·bits/8] codes, low nibble first at 4 bits, each standing for
 * (code - 2^(bits-1)) · scale; `scales` float32 [N·kBlocks]. See docs/quantized-format.md.
 */
export interface BlockQuantizedWeight {
  bits: 4 | 8;
  blockSize: number;
  n: number;
  k: number;
  kBlocks: number;
  data: Uint8Array;
  scales: Float32Array;
}

/** See TensorBackend.reserve. `data` is `Float32Array` for f32, raw bits for f16/bf16. */
export interface Reservation {
  readonly data: Float32Array | Uint16Array;
  /** The filled data as a tensor; the reservation is used up. */
  commit(): Tensor;
  /** Gives the room back without making a tensor (e.g. the read failed). */
  discard(): void;
}

export interface TensorBackend {
  /** Registry name, e.g. 'reference'. */
  readonly name: string;
  /** What actually runs, e.g. 'tfjs (wasm)' or 'webgpu (google/swiftshader)'. Defaults to name. */
  readonly engine?: string;
  /** Called once before first use (load native code, open a device). */
  init?(): Promise<void>;
  /**
   * Set when the backend stores float32 weights in a narrower, lossy form: an f32 tensor made by
   * `upload` may be narrowed to this from its first use as a weight operand (matmul's transposed
   * `b`, an embedding table). Conformance judges such a backend by thresholds that allow for it
   * (src/conformance/op-case.ts). Unset: f32 weights are kept exactly.
   */
  readonly lossyWeights?: LossyWeights;
  /**
   * Whether this backend implements `op` natively for tensors stored as `dtype` (default f32).
   * False for a fused op it does not declare (it then runs on the defaults of src/ops) and for
   * a dtype it cannot store; true for a core op it runs on that dtype.
   */
  supports(op: OpName, dtype?: DType): boolean;
  /** Releases everything the backend holds. The backend is unusable afterwards. */
  close?(): Promise<void>;

  // ── memory ────────────────────────────────────────────────────────────────
  /** Copies host data into a new tensor. `Uint16Array` data is raw f16/bf16 bits. */
  upload(data: Float32Array | Uint16Array, shape: readonly number[], dtype?: DType): Tensor;
  /**
   * Optional: room for one tensor in the backend's own memory, for a loader to fill in place
   * (a file read straight into it) before `commit()` makes it a tensor, as `upload` of the same
   * data would. Saves holding a weight twice on the way in, which is most of a large
   * checkpoint's load time where fresh memory is slow to touch. `discard()` gives it back.
   */
  reserve?(shape: readonly number[], dtype: DType): Reservation;
  /** Optional: a weight stored block-quantized, used as matmul's transposed `b` (the loader's quantized folders). */
  uploadBlockQuantized?(q: BlockQuantizedWeight): Tensor;
  /** Optional: a block-quantized copy of `table` for matmuls that take it transposed (the tied lm_head); gathers still read `table`. */
  attachBlockQuantized?(table: Tensor, q: BlockQuantizedWeight): void;
  /** A new zero-filled f32 tensor (KV caches, accumulators). */
  zeros(shape: readonly number[]): Tensor;
  /** Reads a tensor back as float32, row-major. */
  read(t: Tensor): Promise<Float32Array>;
  dispose(t: Tensor | readonly Tensor[]): void;

  // ── linear algebra ────────────────────────────────────────────────────────
  /** a [M, K] · b [K, N] (or b [N, K] with transposeB) + bias [N] → [M, N]. */
  matmul(a: Tensor, b: Tensor, opts?: MatmulOptions): Tensor;

  // ── elementwise; b is a's shape, a's trailing dims (repeated over the leading ones), ──
  // ── or a's shape with a last dim of 1 (one value per row, e.g. a `reduce` result) ──────
  add(a: Tensor, b: Tensor): Tensor;
  mul(a: Tensor, b: Tensor): Tensor;
  scale(a: Tensor, s: number): Tensor;
  /** f(x) elementwise: tanh, exp, sigmoid 1/(1+e⁻ˣ), rsqrt 1/√x, reciprocal 1/x. */
  unary(op: UnaryOp, x: Tensor): Tensor;
  /** Sum or max over the last axis: x [..., D] → [..., 1]. */
  reduce(op: ReduceOp, x: Tensor): Tensor;

  // ── indexing and layout ───────────────────────────────────────────────────
  /** table [V, H], ids [T] → [T, H]. */
  embedding(table: Tensor, ids: Int32Array): Tensor;
  concat(ts: readonly Tensor[], axis: number): Tensor;
  /** Rows [start, end) along `axis`, copied. */
  slice(x: Tensor, axis: number, start: number, end: number): Tensor;
  /**
   * Same data, new shape (same element count). May share storage with x; disposing either
   * handle is safe, and shared storage lives while any handle to it does.
   */
  reshape(x: Tensor, shape: readonly number[]): Tensor;
  transpose(x: Tensor, perm: readonly number[]): Tensor;
  /**
   * In place: dst[offset + i, ...] = src[i, ...] along axis 0. The one mutating op; KV caches
   * use it to fill preallocated buffers without reallocating.
   */
  writeRows(dst: Tensor, src: Tensor, offset: number): void;

  // ── optional fused ops: declared only where a backend's own kernel does better than the ──
  // ── defaults of src/ops (same names, same semantics); supports(op) is true for these ──────
  /** Tanh-approximated GELU (PyTorch's gelu(approximate='tanh')). */
  gelu?(a: Tensor): Tensor;
  /** (x - mean) / sqrt(var + eps) · w + b over the last axis. */
  layerNorm?(x: Tensor, w: Tensor, b: Tensor, eps: number): Tensor;
  /** x · rsqrt(mean(x²) + eps) · (1 + w) over the last axis, in float32 (Gemma's convention). */
  rmsNorm?(x: Tensor, w: Tensor, eps: number): Tensor;
  /** Numerically stable softmax over the last axis. */
  softmax?(x: Tensor): Tensor;
  /**
   * Rotate-half rotary embedding. x [T, H, D]; row t uses position positions[t]:
   * angle_i = pos · theta^(-2i/D) for i < D/2; out = x·cos + rotate_half(x)·sin.
   */
  rope?(x: Tensor, positions: Int32Array, theta: number): Tensor;
  /**
   * Non-overlapping patch convolution (kernel = stride = patch, no padding).
   * pixels [C, H, W], weight [O, C, P, P], bias [O] → [(H/P)·(W/P), O], patches row-major.
   */
  patchEmbed?(pixels: Tensor, weight: Tensor, bias: Tensor, patch: number): Tensor;
  /**
   * Fused attention, as AttentionKernel defines it: q [Tq, Hq, D], k/v [Tk, Hkv, D] → [Tq, Hq, D].
   * `attend()` (src/attention/attend.ts) calls it when `attentionHandles` (if declared) agrees,
   * else builds attention from core ops.
   */
  attention?(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor;
  /** Whether `attention` handles these operands and options; absent: it handles every call. */
  attentionHandles?(q: Tensor, k: Tensor, opts: AttentionOptions): boolean;
}

/** The composites, each required: what the model code calls. `withDefaultOps(backend)` makes one. */
export type TensorOps = TensorBackend & Required<Pick<TensorBackend, 'gelu' | 'layerNorm' | 'rmsNorm' | 'softmax' | 'rope' | 'patchEmbed'>>;
