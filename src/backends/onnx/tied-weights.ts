/**
 * Quantized copies of weights that must also stay as they are: with quantize=int8|int4 the
 * tied lm_head is the embedding table, which the prompt's Gather reads (16-bit or float32)
 * before any matmul sees it. Decode is mostly that matmul (257216 × 2048, two thirds of a
 * step's weight bytes at 2 text layers), so it gets its own block-wise copy, built once and
 * dropped with the storage; the table keeps its layout for the gather.
 */
import type { Storage } from './onnx-graph.js';
import { nbitsWeight, quantizeStorageCopy, type NBitsWeight } from './matmul-nbits.js';
import type { QuantBits } from './weight-quantization.js';

const copies = new WeakMap<Storage, Map<QuantBits, NBitsWeight>>();

/** The quantized copy of `s` at `bits`, made on first use. */
export function tiedQuantized(s: Storage, bits: QuantBits): NBitsWeight {
  let byBits = copies.get(s);
  if (!byBits) copies.set(s, (byBits = new Map()));
  let w = byBits.get(bits);
  if (!w) byBits.set(bits, (w = nbitsWeight(quantizeStorageCopy(s, bits))));
  return w;
}

/** Bytes of the quantized copies held for `s` (for storedBytes). */
export function tiedQuantizedBytes(s: Storage): number {
  let n = 0;
  for (const w of copies.get(s)?.values() ?? []) n += w.q.data.byteLength + w.q.scales.byteLength;
  return n;
}
