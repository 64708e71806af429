import type { DType, Tensor } from '../../interfaces/tensor-backend.js';

/** A reference-backend tensor: a row-major float32 buffer and its shape. */
export class ReferenceTensor implements Tensor {
  readonly dtype: DType = 'f32';
  constructor(
    readonly shape: readonly number[],
    readonly data: Float32Array,
  ) {
    const n = shape.reduce((a, b) => a * b, 1);
    if (n !== data.length) throw new Error(`shape [${shape}] needs ${n} elements, got ${data.length}`);
  }
  get size(): number {
    return this.data.length;
  }
}

export { sizeOf } from '../op-shapes.js';
