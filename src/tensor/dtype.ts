/**
 * Conversions between float32 and the two 16-bit float formats checkpoints are stored in.
 *
 * - f16 (IEEE 754 binary16): 1 sign, 5 exponent (bias 15), 10 mantissa bits.
 * - bf16 (bfloat16): the top 16 bits of a float32 (1 sign, 8 exponent, 7 mantissa bits).
 *
 * Widening (16 → 32 bits) is exact for every bit pattern, NaN payloads included. Narrowing
 * (32 → 16 bits) rounds to nearest, ties to even, overflows to ±Infinity, keeps subnormals
 * and turns every NaN into a quiet NaN of the same sign.
 *
 * ```ts
 * const bits = f32ToBf16(new Float32Array([1, -2.5]));   // Uint16Array [0x3f80, 0xc020]
 * const back = bf16ToF32(bits);                          // Float32Array [1, -2.5]
 * ```
 */

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** float32 bit pattern of every f16 bit pattern, built on first use (256 KiB). */
let f16Table: Uint32Array | undefined;

function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0;   // inf / NaN
  if (exp !== 0) return (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0;
  if (mant === 0) return sign >>> 0;                                      // ±0
  // Subnormal: mant · 2^-24, exact in float32 (normal there).
  scratchF32[0] = mant * 2 ** -24;
  return (scratchU32[0] | sign) >>> 0;
}

function table(): Uint32Array {
  if (!f16Table) {
    f16Table = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16BitsToF32Bits(h);
  }
  return f16Table;
}

/** One f16 bit pattern → its value. */
export function f16BitsToNumber(bits: number): number {
  scratchU32[0] = table()[bits & 0xffff];
  return scratchF32[0];
}

/** One bf16 bit pattern → its value. */
export function bf16BitsToNumber(bits: number): number {
  scratchU32[0] = (bits & 0xffff) << 16;
  return scratchF32[0];
}

/** One number → bf16 bits (rounded to float32 first, then to nearest-even bf16). */
export function numberToBf16Bits(x: number): number {
  scratchF32[0] = x;
  return f32BitsToBf16Bits(scratchU32[0]);
}

/** One number → f16 bits (rounded to float32 first, then to nearest-even f16). */
export function numberToF16Bits(x: number): number {
  scratchF32[0] = x;
  return f32BitsToF16Bits(scratchU32[0]);
}

function f32BitsToBf16Bits(bits: number): number {
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 0x0040) & 0xffff;   // quiet NaN
  // Adding 0x7fff plus the lowest kept bit rounds to nearest, ties to even; a carry out of the
  // mantissa bumps the exponent, which also turns the largest finite values into infinity.
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

function f32BitsToF16Bits(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const mant = bits & 0x7fffff;
  if (exp === 0xff) return mant === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mant >>> 13);
  const e = exp - 112;                         // exponent in f16's bias
  if (e >= 0x1f) return sign | 0x7c00;         // too large even before rounding
  if (e <= 0) {
    // Result is subnormal (or zero): value = m · 2^(e - 38), in units of 2^-24 → m >> (14 - e).
    if (e < -10) return sign;                  // below half the smallest subnormal
    const m = mant | 0x800000;
    const shift = 14 - e;
    let h = m >>> shift;
    const rest = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rest > half || (rest === half && (h & 1) === 1)) h++;
    return sign | h;                           // h may reach 0x400: the smallest normal
  }
  let h = sign | (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  // A carry out of the mantissa lands in the exponent; 0x7bff + 1 is 0x7c00 (infinity).
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1) === 1)) h++;
  return h;
}

/** f16 bits → float32 values. `out` (same length) is filled when given. */
export function f16ToF32(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  if (out.length !== src.length) throw new RangeError(`f16ToF32: output has ${out.length} elements, input ${src.length}`);
  const t = table();
  const o = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < src.length; i++) o[i] = t[src[i]];
  return out;
}

/** bf16 bits → float32 values. `out` (same length) is filled when given. */
export function bf16ToF32(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  if (out.length !== src.length) throw new RangeError(`bf16ToF32: output has ${out.length} elements, input ${src.length}`);
  const o = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < src.length; i++) o[i] = src[i] << 16;
  return out;
}

/** float32 values → bf16 bits, round to nearest even. */
export function f32ToBf16(src: Float32Array): Uint16Array {
  const s = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32BitsToBf16Bits(s[i]);
  return out;
}

/** float32 values → f16 bits, round to nearest even. */
export function f32ToF16(src: Float32Array): Uint16Array {
  const s = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32BitsToF16Bits(s[i]);
  return out;
}
