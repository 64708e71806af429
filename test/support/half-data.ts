/**
 * Seeded test data for 16-bit storage: values, their f16/bf16 bits (with ±0 and, for f16,
 * subnormals mixed in) and the exact float32 values those bits hold.
 */
import { expect } from 'chai';
import { rand } from './seeded-values.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../../src/tensor/dtype.js';

export type Half = 'f16' | 'bf16';


/**
 * Seeded 16-bit bits: rounded random values, with every `every`-th element from `from` replaced
 * by a signed zero (bf16) or a subnormal or zero pattern (f16).
 */
export function halfBits(dtype: Half, n: number, seed: number, scale = 1, special: { from: number; every: number } = { from: 0, every: 7 }): Uint16Array {
  const bits = (dtype === 'bf16' ? f32ToBf16 : f32ToF16)(rand(n, seed, scale));
  for (let i = special.from; i < n; i += special.every) bits[i] = dtype === 'f16' ? (i * 37) & 0x83ff : (i & 8 ? 0x8000 : 0);
  return bits;
}

/** The exact float32 values of 16-bit bits. */
export function widened(dtype: Half, bits: Uint16Array): Float32Array {
  return dtype === 'bf16' ? bf16ToF32(bits) : f16ToF32(bits);
}

/** Same float32 bit patterns (any NaN equals any NaN). */
export function expectBitEqual(got: Float32Array, want: Float32Array, what: string): void {
  expect(got.length, what).to.equal(want.length);
  const g = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const w = new Uint32Array(want.buffer, want.byteOffset, want.length);
  for (let i = 0; i < got.length; i++) {
    if (g[i] !== w[i] && !(Number.isNaN(got[i]) && Number.isNaN(want[i]))) {
      expect.fail(`${what}: element ${i} is ${got[i]} (0x${g[i].toString(16)}), want ${want[i]} (0x${w[i].toString(16)})`);
    }
  }
}
