/**
 * Block-quantized weights (a `paligemma quantize` folder) on the reference backend: the same
 * dequantized math as onnx's MatMulNBits weights, written plainly. Each weight's codes are
 * dequantized once, at upload, to the float32 values they stand for ((code - 2^(bits-1)) · scale,
 * src/tensor/block-quantization.ts), and computed like any float32 weight. The tied lm_head's
 * codes become a float32 copy attached to the embedding table: matmuls that take the table
 * transposed read that copy; the gather still reads the table as stored.
 */
import { PaliGemmaError } from '../../interfaces/errors.js';
import type { BlockQuantizedWeight, LossyWeights } from '../../interfaces/tensor-backend.js';
import { blockLayoutProblem, dequantizeBlockwise } from '../../tensor/block-quantization.js';
import { ReferenceTensor } from './reference-tensor.js';

/** Dequantized copies attached to a table, by the table's storage (views share it). */
const attached = new WeakMap<Float32Array | Uint16Array, Float32Array>();

/** The lossy-weight kind of given codes, after checking that their layout fits their shape. */
export function checkedLossyKind(q: BlockQuantizedWeight, current: LossyWeights | undefined): LossyWeights {
  const problem = blockLayoutProblem(q);
  if (problem) throw new PaliGemmaError(`reference backend: ${problem}`, 'corrupt_checkpoint');
  const kind = q.bits === 4 ? 'int4' : 'int8';
  if (current && current !== kind) {
    throw new PaliGemmaError(`reference backend: int${q.bits} weights mixed with ${current} ones in one model`, 'corrupt_checkpoint');
  }
  return kind;
}

/** A float32 [N, K] tensor holding the values the codes stand for. */
export function dequantizedTensor(q: BlockQuantizedWeight): ReferenceTensor {
  return new ReferenceTensor([q.n, q.k], dequantizeBlockwise(q));
}

/** Attaches the dequantized codes as the transposed-matmul copy of `table` [N, K]. */
export function attachDequantized(table: ReferenceTensor, q: BlockQuantizedWeight): void {
  if (table.shape.length !== 2 || table.shape[0] !== q.n || table.shape[1] !== q.k) {
    throw new PaliGemmaError(`reference backend: a [${q.n}, ${q.k}] quantized copy does not fit a [${table.shape}] table`, 'corrupt_checkpoint');
  }
  attached.set(table.storage, dequantizeBlockwise(q));
}

/** The dequantized copy attached to t's storage, if any. */
export function attachedCopy(t: ReferenceTensor): Float32Array | undefined {
  return attached.get(t.storage);
}
