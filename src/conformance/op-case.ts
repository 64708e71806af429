/**
 * One conformance case: seeded inputs, one op (or one attention call), a threshold on the
 * normalized MSE against the oracle backend, and the work it does for --perf.
 */
import type { AttentionKernel } from '../interfaces/attention-kernel.js';
import type { DType, OpName, Tensor, TensorBackend, TensorOps } from '../interfaces/tensor-backend.js';
import { withDefaultOps } from '../ops/with-default-ops.js';
import { SeededData, seedOf, toHalfBits } from './seeded-data.js';

/**
 * Normalized-MSE thresholds, one per kind of arithmetic. An error of one float32 rounding per
 * element is ≈ 1e-15; a misplaced element among n gives ≈ 2/n, above 1e-5 for every case here.
 */
export const THRESHOLDS = {
  /** Copies, layout, gathers, 16-bit decoding: bit-exact is expected. */
  exact: 1e-10,
  /** add, mul, scale: one correctly rounded operation per element. */
  elementwise: 1e-10,
  /** tanh-GELU: fast tanh (1e-6 abs) gives ≈ 1e-12, while erf-GELU is ≈ 1e-8 off and must fail. */
  gelu: 1e-9,
  /** layerNorm, rmsNorm, softmax: float32 sums and exp over ≤ 1031 terms stay near 1e-12. */
  reduction: 1e-7,
  /** sin/cos at angles up to ~1000 rad: rounding the angle in float32 alone costs ≈ 1e-9. */
  rope: 1e-6,
  /** matmul, patchEmbed, attention: accumulation over K ≤ 1031 in any order, tensor-core friendly. */
  matmul: 1e-6,
} as const;

/**
 * Attention cases run twice: on the backend's default kernel (its contribution's
 * `defaultAttention`, else 'plain') and on 'plain'. The slot is resolved to a name at run time.
 */
export type KernelSlot = 'default' | 'plain';

/** A host array the case uploads; 16-bit dtypes go up as raw bits (the oracle gets their f32 values). */
export interface CaseInput {
  values: Float32Array;
  shape: readonly number[];
  dtype?: DType;
}

/** Floating-point operations (compute-bound cases) or bytes moved (memory-bound ones) per run. */
export type CaseWork = { flops: number } | { bytes: number };

export interface CaseContext {
  backend: TensorBackend;
  /** The kernel attention cases run on this side. */
  attention: AttentionKernel;
  /** The oracle side: 16-bit inputs go up as their f32 values. */
  oracle: boolean;
}

export interface PreparedCase {
  /** Runs the op once on the prepared inputs; the caller reads and disposes the result. */
  run(): Tensor;
  dispose(): void;
}

export interface OpCase {
  /** A TensorBackend op name, or 'attention'. */
  readonly op: string;
  /** Unique within its op and kernel slot, e.g. 'm17 k33 n65 bᵀ +bias'. */
  readonly name: string;
  readonly shape: string;
  readonly threshold: number;
  /** Attention cases: which of the tested backend's kernels runs it. */
  readonly kernel?: KernelSlot;
  /** Its operand b (transposed) or table is a weight a lossy backend may narrow (lossy-weights.ts). */
  readonly weightOperand?: boolean;
  /** (op, dtype) pairs the tested backend must support; otherwise the case is 'unsupported'. */
  readonly needs: ReadonlyArray<readonly [OpName, DType]>;
  readonly work: CaseWork;
  /** Uploads the inputs to `ctx.backend`. */
  prepare(ctx: CaseContext): PreparedCase;
}

export interface CaseSpec {
  op: string;
  name: string;
  shape: string;
  threshold: number;
  kernel?: KernelSlot;
  weightOperand?: boolean;
  /** Backend ops used besides upload and read; default [op]. */
  uses?: OpName[];
  /** Storage dtype of the 16-bit inputs, if any. */
  dtype?: Exclude<DType, 'f32'>;
  work: CaseWork;
  build(d: SeededData): { inputs: CaseInput[]; run(b: TensorOps, xs: Tensor[], ctx: CaseContext): Tensor };
}

/** Turns a spec into a case whose inputs are regenerated from its name on every prepare. */
export function defineCase(spec: CaseSpec): OpCase {
  const uses = spec.uses ?? [spec.op as OpName];
  const needs: Array<readonly [OpName, DType]> = [['upload', 'f32'], ['read', 'f32'], ...uses.map((op) => [op, 'f32'] as const)];
  if (spec.dtype) needs.push(['upload', spec.dtype], ...uses.map((op) => [op, spec.dtype!] as const));
  return {
    op: spec.op, name: spec.name, shape: spec.shape, threshold: spec.threshold, kernel: spec.kernel,
    weightOperand: spec.weightOperand, needs, work: spec.work,
    prepare(ctx) {
      // Seeded by op and name only: every kernel of an attention case sees the same inputs.
      const built = spec.build(new SeededData(seedOf(`${spec.op}/${spec.name}`)));
      const xs = built.inputs.map((x) => uploadInput(ctx.backend, x, ctx.oracle));
      return {
        // Composites the backend does not declare run on the defaults of src/ops.
        run: () => built.run(withDefaultOps(ctx.backend), xs, ctx),
        dispose: () => ctx.backend.dispose(xs),
      };
    },
  };
}

/** Uploads one input; 16-bit inputs go up as raw bits, or as their f32 values for the oracle. */
export function uploadInput(b: TensorBackend, x: CaseInput, oracle: boolean): Tensor {
  if (!x.dtype || x.dtype === 'f32') return b.upload(x.values, x.shape);
  const half = toHalfBits(x.values, x.dtype);
  return oracle ? b.upload(half.values, x.shape) : b.upload(half.bits, x.shape, x.dtype);
}

/** f32 input of the given shape. */
export function input(values: Float32Array, shape: readonly number[], dtype?: DType): CaseInput {
  const n = shape.reduce((a, c) => a * c, 1);
  if (values.length !== n) throw new Error(`input of shape [${shape}] needs ${n} values, got ${values.length}`);
  return { values, shape, dtype };
}

export const sizeOf = (shape: readonly number[]): number => shape.reduce((a, c) => a * c, 1);
export const fmt = (shape: readonly number[]): string => `[${shape.join(',')}]`;
