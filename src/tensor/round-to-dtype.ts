import type { DType } from '../interfaces/tensor-backend.js';
import { bf16BitsToNumber, f16BitsToNumber, numberToBf16Bits, numberToF16Bits } from './dtype.js';

/** Rounds x to the nearest value representable in `dtype` (round-to-nearest-even). */
export function roundToDtype(x: number, dtype: DType): number {
  switch (dtype) {
    case 'f32': return Math.fround(x);
    case 'bf16': return bf16BitsToNumber(numberToBf16Bits(x));
    case 'f16': return f16BitsToNumber(numberToF16Bits(x));
  }
}
