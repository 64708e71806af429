import type { DType, Tensor } from '../../interfaces/tensor-backend.js';
import { bf16ToF32, f16ToF32 } from '../../tensor/dtype.js';

/** The two 16-bit storage types; compute is always float32. */
export type HalfDType = 'f16' | 'bf16';

/**
 * A reference-backend tensor: a row-major buffer and its shape. f32 tensors hold a
 * Float32Array (`data`); f16/bf16 tensors (weights uploaded as raw bits) keep their Uint16Array
 * bits (`bits`) and are widened by the kernels that read them, a row or a panel at a time.
 */
export class ReferenceTensor implements Tensor {
  readonly dtype: DType;
  private readonly f32: Float32Array | undefined;
  /** Raw f16/bf16 bit patterns; undefined for f32 tensors. */
  readonly bits: Uint16Array | undefined;

  constructor(shape: readonly number[], data: Float32Array);
  constructor(shape: readonly number[], data: Uint16Array, dtype: HalfDType);
  constructor(
    readonly shape: readonly number[],
    data: Float32Array | Uint16Array,
    dtype: DType = 'f32',
  ) {
    const n = shape.reduce((a, b) => a * b, 1);
    if (n !== data.length) throw new Error(`shape [${shape}] needs ${n} elements, got ${data.length}`);
    if ((dtype === 'f32') !== (data instanceof Float32Array)) {
      throw new Error(`a ${dtype} reference tensor needs a ${dtype === 'f32' ? 'Float32Array' : 'Uint16Array'}`);
    }
    this.dtype = dtype;
    if (data instanceof Float32Array) { this.f32 = data; this.bits = undefined; }
    else { this.f32 = undefined; this.bits = data; }
  }

  get size(): number {
    return this.storage.length;
  }

  /** The float32 buffer of an f32 tensor. 16-bit tensors have none: read them with widen(). */
  get data(): Float32Array {
    if (!this.f32) throw new Error(`a ${this.dtype} tensor has no float32 buffer (widen it)`);
    return this.f32;
  }

  /** What the tensor occupies: its Float32Array or its Uint16Array. */
  get storage(): Float32Array | Uint16Array {
    return (this.f32 ?? this.bits)!;
  }
}

/** The 16-bit values at [start, end) of `bits` as float32, into `out` (a new array when omitted). */
export function widenBits(
  bits: Uint16Array, dtype: HalfDType, start = 0, end = bits.length,
  out: Float32Array = new Float32Array(end - start),
): Float32Array {
  const src = bits.subarray(start, end);
  return dtype === 'bf16' ? bf16ToF32(src, out) : f16ToF32(src, out);
}

/**
 * The elements [start, end) of t as float32. For an f32 tensor this is a view of its buffer
 * (no copy); for a 16-bit tensor a new, widened array — use it for small operands or ranges.
 */
export function widen(t: ReferenceTensor, start = 0, end = t.size): Float32Array {
  if (t.bits) return widenBits(t.bits, t.dtype as HalfDType, start, end);
  return start === 0 && end === t.size ? t.data : t.data.subarray(start, end);
}

export { sizeOf } from '../../tensor/op-shapes.js';
