import type { DType } from '../interfaces/tensor-backend.js';

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Rounds x to the nearest value representable in `dtype` (round-to-nearest-even). */
export function roundToDtype(x: number, dtype: DType): number {
  f32[0] = x;
  if (dtype === 'f32') return f32[0];
  if (dtype === 'bf16') {
    const bits = u32[0];
    u32[0] = ((bits + 0x7fff + ((bits >>> 16) & 1)) & 0xffff0000) >>> 0;
    return f32[0];
  }
  // f16 (finite, normal range: √H for any real hidden size): keep 10 mantissa bits.
  const bits = u32[0];
  u32[0] = ((bits + 0xfff + ((bits >>> 13) & 1)) & 0xffffe000) >>> 0;
  return f32[0];
}
