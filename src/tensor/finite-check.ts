/**
 * Non-finite numbers never become an answer: the logits of every forward pass are scanned (V
 * floats per row, negligible next to the pass itself) and a NaN or Inf fails the call with an
 * error that names the row's position. A NaN there comes from a non-finite weight or input, or
 * an overflow in a backend; sampling from it would return an arbitrary token with exit 0.
 *
 * ```ts
 * assertFiniteLogits(logits, vocabSize, 'decode step at position 271', 'reference');
 * ```
 */
import { PaliGemmaError } from '../interfaces/errors.js';

/** Index of the first NaN or ±Inf, or -1. */
export function firstNonFinite(values: ArrayLike<number>): number {
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    // v - v is 0 for finite v and NaN for NaN and ±Inf: one compare per element.
    if (v - v !== 0) return i;
  }
  return -1;
}

/** Throws PaliGemmaError when `logits` (rows of `vocab`) hold a NaN or ±Inf. */
export function assertFiniteLogits(logits: Float32Array, vocab: number, where: string, backend: string): void {
  const at = firstNonFinite(logits);
  if (at < 0) return;
  const row = Math.floor(at / vocab), token = at % vocab;
  const rows = logits.length / vocab;
  throw new PaliGemmaError(
    `the ${backend} backend produced a non-finite logit (${logits[at]}) in the ${where}`
    + `${rows > 1 ? ` (row ${row} of ${rows})` : ''}, token ${token}: the weights or inputs hold NaN/Inf or a value overflowed; `
    + 'refusing to answer (check the checkpoint with loadCheckpoint\'s checkFinite option, or try float32)',
    'non_finite');
}

/**
 * Index of the first non-finite element of stored tensor data: float32 values, or the raw bits
 * of f16 / bf16 (all-ones exponent is Inf or NaN in all three), or -1.
 *
 * This runs over every weight at load, so the common case (no hit) is one branch-free pass over
 * 32-bit words: masking a word to its exponent bits and adding one unit of the exponent's lowest
 * bit carries into the bit above the exponent exactly when every exponent bit is set. For
 * 16-bit data both halves of a word are tested at once (0x7f80 + 0x80 stays below 0x10000, so no
 * carry crosses into the other half). Only a hit pays for a second pass that finds the index.
 */
export function firstNonFiniteStored(data: Float32Array | Uint16Array, dtype: 'f32' | 'f16' | 'bf16'): number {
  if (data instanceof Float32Array) {
    const words = new Int32Array(data.buffer, data.byteOffset, data.length);
    if (orCarry(words, 0x7f800000, 0x00800000) === 0) return -1;
    return firstNonFinite(data);
  }
  const mask = dtype === 'f16' ? 0x7c00 : 0x7f80;
  const unit = dtype === 'f16' ? 0x0400 : 0x0080;
  const pairs = data.length >>> 1;
  // A 32-bit view needs 4-byte alignment; an odd offset falls back to the plain loop.
  const aligned = data.byteOffset % 4 === 0;
  const clean = aligned
    && orCarry(new Int32Array(data.buffer, data.byteOffset, pairs), mask * 0x10001, unit * 0x10001) === 0
    && (data.length % 2 === 0 || (data[data.length - 1] & mask) !== mask);
  if (clean) return -1;
  for (let i = 0; i < data.length; i++) if ((data[i] & mask) === mask) return i;
  return -1;
}

/**
 * OR over words of ((w & mask) + unit), masked to the carry bits: 0 when no word has an all-ones
 * field. Everything is shifted right by one first so that the sum stays below 2³¹: the loop
 * then runs on int32 only (an overflow to a double would make it several times slower). The
 * bits shifted in or out (the sign bits) lie outside the masks.
 */
function orCarry(words: Int32Array, mask: number, unit: number): number {
  const m = mask >>> 1, u = unit >>> 1, carry = (mask + unit) >>> 1 & ~m;
  let acc = 0;
  for (let i = 0; i < words.length; i++) acc |= ((words[i] >> 1) & m) + u;
  return acc & carry;
}

/** The load-time error for a stored NaN/Inf weight. */
export function nonFiniteWeightError(tensor: string, file: string, index: number, shape: readonly number[]): PaliGemmaError {
  const coords: number[] = [];
  for (let d = shape.length - 1, rest = index; d >= 0; d--) { coords.unshift(rest % shape[d]); rest = Math.floor(rest / shape[d]); }
  return new PaliGemmaError(
    `tensor ${tensor} in ${file} holds a non-finite value (NaN or Inf) at [${coords.join(', ')}]: the checkpoint is damaged; download it again`,
    'non_finite');
}
