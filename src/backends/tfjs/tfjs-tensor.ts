import type { DType, Tensor } from '../../interfaces/tensor-backend.js';
import type { TfTensor } from './tfjs-engine.js';

/**
 * A tfjs-backend handle around an immutable TensorFlow.js tensor.
 *
 * - `value` holds the tensor in its logical layout. Engines whose fast matmul is the plain
 *   (untransposed) one may instead keep an uploaded tensor that is used as a transposed matmul
 *   operand (a PyTorch-layout weight) as `transposed` only: its [rest, rows] transpose, made once
 *   on first such use. Reading it in its own layout then costs a temporary transpose.
 * - `family` links the handles that `reshape` made from one another: they share storage, so
 *   `writeRows` on any of them replaces the value of all.
 */
export class TfjsTensor implements Tensor {
  readonly dtype: DType = 'f32';
  disposed = false;
  value: TfTensor | undefined;
  /** shape[0] rows × the rest, transposed: [size / shape[0], shape[0]]. */
  transposed: TfTensor | undefined;
  family: Set<TfjsTensor> | undefined;

  constructor(
    readonly owner: object,
    readonly shape: readonly number[],
    value: TfTensor,
    /** Made by upload (a weight, typically), not by an op. */
    readonly uploaded = false,
  ) {
    this.value = value;
  }
}

export function sizeOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
