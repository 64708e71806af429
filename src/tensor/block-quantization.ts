/**
 * Block-wise weight quantization in the layout of onnxruntime's `MatMulNBits` (com.microsoft).
 *
 * A weight W [N, K] (the Linear layout: one row per output) is cut along K into blocks of
 * `blockSize` elements; each block has one float32 scale and, when asymmetric, one zero point.
 * A code q (bits wide, unsigned) stands for (q - zp) · scale, zp defaulting to 2^(bits-1).
 *
 * - data  uint8 [N, kBlocks, blockSize·bits/8]: codes along K, packed low bits first (4 bits:
 *   element 2i in the low nibble, 2i+1 in the high nibble). K is padded up to whole blocks;
 *   padding codes stand for 0.
 * - scales float32 [N·kBlocks].
 * - zeroPoints (asymmetric only) uint8: 8 bits, one byte per block [N·kBlocks]; 4 bits, two
 *   per byte, low nibble first, each row padded to whole bytes [N·ceil(kBlocks/2)].
 *
 * Symmetric blocks use the whole code range: scale = m / -2^(bits-1), where m is the block's
 * element of largest magnitude (sign kept), so m itself is code 0 exactly and everything else
 * lies within [-2^(bits-1), 2^(bits-1) - 1] steps (the scale may be negative).
 * Asymmetric blocks map [min(lo, 0), max(hi, 0)] onto [0, 2^bits - 1], with zero exact.
 *
 * ```ts
 * const q = quantizeBlockwise(2, 64, (r, out) => out.set(w.subarray(r * 64, r * 64 + 64)), { bits: 4 });
 * const back = dequantizeBlockwise(q);   // [2, 64] float32, within scale/2 of w per element
 * ```
 */
import type { BlockQuantizedWeight } from '../interfaces/tensor-backend.js';

export type QuantBits = 4 | 8;

export interface BlockQuantOptions {
  bits: QuantBits;
  /** Power of two, at least 16 (onnxruntime's rule). Default 32. */
  blockSize?: number;
  /** Default true (no zero points). */
  symmetric?: boolean;
}

/**
 * A [N, K] weight quantized block-wise along K (see the module comment for the layout): the
 * backend contract's BlockQuantizedWeight (data uint8 [N, kBlocks, blockSize·bits/8], scales
 * float32 [N·kBlocks]), plus zero points for the asymmetric form.
 */
export interface BlockQuantized extends BlockQuantizedWeight {
  /** Asymmetric only (see the module comment). */
  zeroPoints?: Uint8Array;
}

/** Writes row r of W (K float32 values) into `out`. */
export type RowReader = (r: number, out: Float32Array) => void;

export function checkBlockOptions(o: BlockQuantOptions): { bits: QuantBits; blockSize: number; symmetric: boolean } {
  const blockSize = o.blockSize ?? 32;
  if (o.bits !== 4 && o.bits !== 8) throw new Error(`weight quantization: bits must be 4 or 8, got ${String(o.bits)}`);
  if (!(Number.isInteger(blockSize) && blockSize >= 16 && (blockSize & (blockSize - 1)) === 0)) {
    throw new Error(`weight quantization: blockSize must be a power of two ≥ 16, got ${String(o.blockSize)}`);
  }
  return { bits: o.bits, blockSize, symmetric: o.symmetric ?? true };
}

/** Bytes of one block's codes. */
export function blobSize(bits: QuantBits, blockSize: number): number { return (blockSize * bits) / 8; }

/** Bytes of the zero points of an [N, K] weight (asymmetric). */
export function zeroPointBytes(bits: QuantBits, n: number, kBlocks: number): number {
  return bits === 8 ? n * kBlocks : n * Math.ceil(kBlocks / 2);
}

/**
 * Quantizes W [N, K], read one row at a time (so a 16-bit source is widened a row at a time,
 * never whole). Non-finite weights are refused: they have no block scale.
 */
export function quantizeBlockwise(n: number, k: number, readRow: RowReader, options: BlockQuantOptions): BlockQuantized {
  const { bits, blockSize, symmetric } = checkBlockOptions(options);
  if (!(Number.isInteger(n) && n > 0 && Number.isInteger(k) && k > 0)) throw new Error(`weight quantization: bad shape [${n}, ${k}]`);
  if (symmetric) return quantizeSymmetric(n, k, readRow, bits, blockSize);
  const kBlocks = Math.ceil(k / blockSize);
  const blob = blobSize(bits, blockSize);
  const data = new Uint8Array(n * kBlocks * blob);
  const scales = new Float32Array(n * kBlocks);
  const zpRow = bits === 8 ? kBlocks : Math.ceil(kBlocks / 2);
  const zeroPoints = symmetric ? undefined : new Uint8Array(n * zpRow);
  const maxCode = (1 << bits) - 1, mid = 1 << (bits - 1);
  const row = new Float32Array(kBlocks * blockSize);            // zero padded past K
  const codes = new Uint8Array(blockSize);
  for (let r = 0; r < n; r++) {
    readRow(r, row.subarray(0, k));
    for (let b = 0; b < kBlocks; b++) {
      const at = b * blockSize;
      let lo = 0, hi = 0, m = 0;
      for (let i = 0; i < blockSize; i++) {
        const v = row[at + i];
        if (!Number.isFinite(v)) throw new Error(`weight quantization: row ${r} holds a non-finite value (${v})`);
        if (v < lo) lo = v;
        if (v > hi) hi = v;
        if (Math.abs(v) > Math.abs(m)) m = v;
      }
      let scale: number, zp: number;
      if (symmetric) {
        scale = Math.fround(m / -mid);
        zp = mid;
      } else {
        scale = Math.fround((hi - lo) / maxCode);
        zp = scale === 0 ? mid : Math.min(maxCode, Math.max(0, Math.round(-lo / scale)));
      }
      const inv = scale === 0 ? 0 : 1 / scale;
      for (let i = 0; i < blockSize; i++) {
        codes[i] = Math.min(maxCode, Math.max(0, Math.round(row[at + i] * inv) + zp));
      }
      // Padding past K must stand for 0 whatever the kernel does with it.
      for (let i = Math.max(0, k - at); i < blockSize; i++) codes[i] = zp;
      scales[r * kBlocks + b] = scale;
      const out = (r * kBlocks + b) * blob;
      if (bits === 8) data.set(codes, out);
      else for (let i = 0; i < blob; i++) data[out + i] = codes[2 * i] | (codes[2 * i + 1] << 4);
      if (zeroPoints) {
        if (bits === 8) zeroPoints[r * zpRow + b] = zp;
        else zeroPoints[r * zpRow + (b >> 1)] |= zp << ((b & 1) * 4);
      }
    }
  }
  return { bits, blockSize, n, k, kBlocks, data, scales, zeroPoints };
}

/**
 * The symmetric form (every checkpoint weight), the same codes as the general loop above would
 * give, written for speed: one scan per block for its largest magnitude, then codes packed
 * straight into `data`, with no per-element calls or temporary codes (a 3B model holds about
 * 3·10⁹ weights, so every nanosecond per element is seconds).
 */
function quantizeSymmetric(n: number, k: number, readRow: RowReader, bits: QuantBits, blockSize: number): BlockQuantized {
  const kBlocks = Math.ceil(k / blockSize);
  const blob = blobSize(bits, blockSize);
  const data = new Uint8Array(n * kBlocks * blob);
  const scales = new Float32Array(n * kBlocks);
  const mid = 1 << (bits - 1);
  const row = new Float32Array(kBlocks * blockSize);            // zero padded past K: codes for 0
  const rowK = row.subarray(0, k);
  for (let r = 0; r < n; r++) {
    readRow(r, rowK);
    for (let b = 0; b < kBlocks; b++) {
      const at = b * blockSize, end = at + blockSize;
      // m: the first element of the largest magnitude (one branch-free pass for the
      // magnitude, a short one for the element). NaN and ±Inf leave am non-finite.
      let am = 0;
      for (let i = at; i < end; i++) am = Math.max(am, Math.abs(row[i]));
      if (am - am !== 0) {
        const v = row.subarray(at, end).find((x) => x - x !== 0);
        throw new Error(`weight quantization: row ${r} holds a non-finite value (${v})`);
      }
      let m = 0;
      if (am !== 0) for (let i = at; i < end; i++) if (Math.abs(row[i]) === am) { m = row[i]; break; }
      const scale = Math.fround(m / -mid);
      const inv = scale === 0 ? 0 : 1 / scale;
      const sb = r * kBlocks + b;
      scales[sb] = scale;
      let o = sb * blob;
      // code(y) = Math.round(y) + mid, y = v · inv, computed without a data-dependent branch
      // (random weights make any branch on y mispredict half the time; Math.round has one):
      // floor(y) plus 1 when y - floor(y) ≥ 0.5, which is Math.round exactly (y - floor(y) is
      // exact, except for y in (-0.5, 0), where it rounds up to no less than 0.5: code 0 + mid
      // either way). |y| ≤ mid (m is the block's largest magnitude), so a code lies in
      // [0, 2^bits], and only 2^bits (m's magnitude, other sign) is clamped, as c - (c >> bits).
      if (bits === 8) {
        for (let i = at; i < end; i++, o++) {
          const y = row[i] * inv, f = Math.floor(y);
          const c = f + mid + (+(y - f >= 0.5));
          data[o] = c - (c >> 8);
        }
      } else {
        for (let i = at; i < end; i += 2, o++) {
          const y0 = row[i] * inv, f0 = Math.floor(y0);
          const y1 = row[i + 1] * inv, f1 = Math.floor(y1);
          const lo = f0 + mid + (+(y0 - f0 >= 0.5)), hi = f1 + mid + (+(y1 - f1 >= 0.5));
          data[o] = (lo - (lo >> 4)) | ((hi - (hi >> 4)) << 4);
        }
      }
    }
  }
  return { bits, blockSize, n, k, kBlocks, data, scales };
}

/** The float32 weight W [N, K] a quantized weight stands for: (code - zp) · scale. */
export function dequantizeBlockwise(q: BlockQuantized): Float32Array {
  const out = new Float32Array(q.n * q.k);
  for (let r = 0; r < q.n; r++) dequantizeRow(q, r, out.subarray(r * q.k, (r + 1) * q.k));
  return out;
}

/** Row r of the dequantized weight into `out` (K values), a block at a time. */
export function dequantizeRow(q: BlockQuantized, r: number, out: Float32Array): void {
  const { bits, blockSize, kBlocks, k, data, scales, zeroPoints } = q;
  const blob = blobSize(bits, blockSize);
  const zpRow = bits === 8 ? kBlocks : Math.ceil(kBlocks / 2);
  const mid = 1 << (bits - 1);
  for (let b = 0; b < kBlocks; b++) {
    const scale = scales[r * kBlocks + b];
    let zp = mid;
    if (zeroPoints) {
      zp = bits === 8 ? zeroPoints[r * zpRow + b] : (zeroPoints[r * zpRow + (b >> 1)] >> ((b & 1) * 4)) & 0xf;
    }
    const at = (r * kBlocks + b) * blob, i0 = b * blockSize;
    const end = Math.min(blockSize, k - i0);
    if (bits === 8) {
      for (let j = 0; j < end; j++) out[i0 + j] = Math.fround((data[at + j] - zp) * scale);
    } else {
      for (let j = 0; j < end; j++) {
        const byte = data[at + (j >> 1)];
        out[i0 + j] = Math.fround((((j & 1) === 0 ? byte & 0xf : byte >> 4) - zp) * scale);
      }
    }
  }
}

/**
 * Whether given codes fit their declared shape: kBlocks = ceil(K / blockSize), one code blob per
 * row and block, one scale each. Returns what is wrong, or undefined.
 */
export function blockLayoutProblem(q: BlockQuantizedWeight): string | undefined {
  const ok = (q.bits === 4 || q.bits === 8) && Number.isInteger(q.blockSize) && q.blockSize >= 16
    && (q.blockSize & (q.blockSize - 1)) === 0;
  if (!ok) return `int${q.bits} blocks of ${q.blockSize} are not a supported layout`;
  const kBlocks = Math.ceil(q.k / q.blockSize);
  if (q.kBlocks !== kBlocks || q.data.byteLength !== q.n * kBlocks * blobSize(q.bits, q.blockSize) || q.scales.length !== q.n * kBlocks) {
    return `block-quantized weight [${q.n}, ${q.k}] has ${q.data.byteLength} code bytes and ${q.scales.length} scales, which do not fit int${q.bits} blocks of ${q.blockSize}`;
  }
  return undefined;
}

/** Bytes the quantized form holds (codes, scales, zero points). */
export function quantizedBytes(q: BlockQuantized): number {
  return q.data.byteLength + q.scales.byteLength + (q.zeroPoints?.byteLength ?? 0);
}
