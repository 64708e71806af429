/**
 * Quantized weights that do not replace their storage in place:
 * - with quantize=int8|int4, the tied lm_head is the embedding table, which the prompt's
 *   Gather reads (16-bit or float32) before any matmul sees it. Decode is mostly that matmul
 *   (257216 × 2048, two thirds of a step's weight bytes at 2 text layers), so it gets its own
 *   block-wise copy, built once and dropped with the storage; the table keeps its layout;
 * - a `paligemma quantize` folder brings that copy along (attachBlockQuantized), and its other
 *   linear weights arrive as codes (blockQuantizedStorage) instead of being quantized here.
 */
import { PaliGemmaError } from '../../interfaces/errors.js';
import type { BlockQuantizedWeight } from '../../interfaces/tensor-backend.js';
import { Storage } from './onnx-graph.js';
import { nbitsWeight, quantizeStorageCopy, type NBitsWeight } from './matmul-nbits.js';
import { blobSize, type QuantBits } from '../../tensor/block-quantization.js';

const copies = new WeakMap<Storage, NBitsWeight>();

/** The quantized copy of `s` at `bits`, made on first use (or attached by the loader). */
export function tiedQuantized(s: Storage, bits: QuantBits): NBitsWeight {
  let w = copies.get(s);
  if (!w) copies.set(s, (w = nbitsWeight(quantizeStorageCopy(s, bits))));
  return w;
}

/** The copy attached to or made for `s`, if any. */
export function tiedCopy(s: Storage): NBitsWeight | undefined {
  return copies.get(s);
}

/** Bytes of the quantized copy held for `s` (for storedBytes). */
export function tiedQuantizedBytes(s: Storage): number {
  const w = copies.get(s);
  return w ? w.q.data.byteLength + w.q.scales.byteLength : 0;
}

/** Refuses codes whose layout does not match their declared shape (a corrupt folder must not run). */
export function checkBlockQuantized(q: BlockQuantizedWeight, wantBits: QuantBits | undefined): void {
  if (wantBits !== undefined && q.bits !== wantBits) {
    throw new PaliGemmaError(`onnx backend: the model's weights are int${q.bits}, but quantize=int${wantBits} was given; drop the option (or pick int${q.bits})`, 'invalid_option');
  }
  const kBlocks = Math.ceil(q.k / q.blockSize);
  if (q.kBlocks !== kBlocks || q.data.byteLength !== q.n * kBlocks * blobSize(q.bits, q.blockSize) || q.scales.length !== q.n * kBlocks) {
    throw new PaliGemmaError(`onnx backend: block-quantized weight [${q.n}, ${q.k}] has ${q.data.byteLength} code bytes and ${q.scales.length} scales, which do not fit int${q.bits} blocks of ${q.blockSize}`, 'corrupt_checkpoint');
  }
}

/** A storage holding given codes, computed by MatMulNBits like a weight quantized on load. */
export function blockQuantizedStorage(q: BlockQuantizedWeight): Storage {
  const s = new Storage(q.data, [q.n, q.k]);
  s.elemType = 'uint8';
  s.encoding = { kind: 'nbits', weight: nbitsWeight(q) };
  return s;
}

/** Attaches given codes as the quantized copy of `table`'s storage. */
export function attachCopy(table: Storage, q: BlockQuantizedWeight): void {
  if (table.shape.length !== 2 || table.shape[0] !== q.n || table.shape[1] !== q.k) {
    throw new PaliGemmaError(`onnx backend: a [${q.n}, ${q.k}] quantized copy does not fit a [${table.shape}] table`, 'corrupt_checkpoint');
  }
  copies.set(table, nbitsWeight(q));
}
