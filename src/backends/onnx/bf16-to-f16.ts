/**
 * bf16 bits → f16 bits where the value survives, by table: the onnx backend keeps a BF16
 * weight as f16 storage plus exact float32 patches for the few values f16 cannot hold
 * (onnx-backend.ts, bf16Storage). Both tables are built once from the exact conversions in
 * dtype.ts (65536 entries), so the result is theirs bit for bit, and converting the 0.5·10⁹
 * elements of a 3B model's embedding table costs a few integer operations each instead of a
 * widening, a rounding and a widening back.
 */
import { bf16ToF32, f16ToF32, f32ToF16 } from '../../tensor/dtype.js';

let tables: { half: Uint16Array; exact: Uint8Array } | undefined;

function build(): { half: Uint16Array; exact: Uint8Array } {
  const all = new Uint16Array(65536);
  for (let b = 0; b < 65536; b++) all[b] = b;
  const wide = bf16ToF32(all);
  const half = f32ToF16(wide);
  const back = f16ToF32(half);
  const w = new Uint32Array(wide.buffer), k = new Uint32Array(back.buffer);
  const exact = new Uint8Array(65536);
  for (let b = 0; b < 65536; b++) exact[b] = w[b] === k[b] ? 1 : 0;
  return { half, exact };
}

export interface PatchedHalf {
  /** f16 bits; 0 at the patched elements. */
  half: Uint16Array;
  /** Ascending flat indices of the elements f16 cannot hold exactly. */
  index: number[];
  /** Their exact float32 values. */
  values: Float32Array;
}

/**
 * The f16 form of bf16 `bits` with patches, or undefined once more than `maxPatches` elements
 * would need one (the caller widens to float32 instead).
 */
export function bf16ToPatchedF16(bits: Uint16Array, maxPatches: number): PatchedHalf | undefined {
  const { half: table, exact } = (tables ??= build());
  const n = bits.length;
  const half = new Uint16Array(n);
  const index: number[] = [];
  for (let i = 0; i < n; i++) {
    const b = bits[i], mag = b & 0x7fff;
    // f16's normal binades (bf16 exponents 113..142) by arithmetic: rebias the exponent by
    // -112 and shift the 7 mantissa bits into f16's 10; everything else by the tables.
    if (mag - 0x3880 >>> 0 < 0x4780 - 0x3880) half[i] = (b & 0x8000) | ((mag - 0x3800) << 3);
    else if (exact[b] === 1) half[i] = table[b];
    else if (index.push(i) > maxPatches) return undefined;
  }
  const patchBits = new Uint32Array(index.length);
  for (let j = 0; j < index.length; j++) patchBits[j] = bits[index[j]] << 16;
  return { half, index, values: new Float32Array(patchBits.buffer) };
}
