/**
 * A decoded 64×64 mask → masks at the original image size, as big_vision's segmentation
 * evaluator does it: the box rectangle is `int(b / 1023 · size)` per coordinate, the float
 * mask is resized to the rectangle with Pillow's BILINEAR filter (`Image.fromarray(m64)` is
 * mode F, so Pillow resamples in double precision without rounding, and antialiases when
 * shrinking), and a pixel is inside when its value is > 0.
 *
 * ```ts
 * const { binary, soft } = pasteMask(mask64, maskRect(loc, w, h), w, h);
 * ```
 */
import type { PixelRect } from './box-geometry.js';

/** Value of `soft` outside the box: the decoder's "certainly outside" end of [-1, 1]. */
export const SOFT_OUTSIDE = -1;

/** Pillow's resample coefficients (precompute_coeffs) for the bilinear (triangle) filter, in double. */
function coefficients(inSize: number, outSize: number): { first: Int32Array; count: Int32Array; k: Float64Array; ksize: number } {
  const scale = inSize / outSize;
  const filterScale = Math.max(1, scale);
  const support = 1 * filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const first = new Int32Array(outSize), count = new Int32Array(outSize);
  const k = new Float64Array(outSize * ksize);
  for (let o = 0; o < outSize; o++) {
    const center = (o + 0.5) * scale;
    const lo = Math.max(0, Math.trunc(center - support + 0.5));
    const hi = Math.min(inSize, Math.trunc(center + support + 0.5));
    let total = 0;
    for (let t = 0; t < hi - lo; t++) {
      const x = Math.abs((t + lo - center + 0.5) / filterScale);
      const w = x < 1 ? 1 - x : 0;
      k[o * ksize + t] = w;
      total += w;
    }
    if (total !== 0) for (let t = 0; t < hi - lo; t++) k[o * ksize + t] /= total;
    first[o] = lo; count[o] = hi - lo;
  }
  return { first, count, k, ksize };
}

/**
 * Resizes a single-channel float image like Pillow's `Image.resize((w, h), BILINEAR)` on mode F:
 * horizontal pass first, then vertical (each skipped when that size is unchanged), with a
 * float32 image in between and as the result.
 */
export function resizeMaskBilinear(src: Float32Array, inW: number, inH: number, outW: number, outH: number): Float32Array {
  let cur = src, w = inW;
  if (outW !== inW) {
    const c = coefficients(inW, outW);
    const next = new Float32Array(outW * inH);
    for (let y = 0; y < inH; y++) {
      for (let x = 0; x < outW; x++) {
        let s = 0;
        for (let t = 0; t < c.count[x]; t++) s += cur[y * w + c.first[x] + t] * c.k[x * c.ksize + t];
        next[y * outW + x] = s;
      }
    }
    cur = next; w = outW;
  }
  if (outH !== inH) {
    const c = coefficients(inH, outH);
    const next = new Float32Array(w * outH);
    for (let y = 0; y < outH; y++) {
      for (let x = 0; x < w; x++) {
        let s = 0;
        for (let t = 0; t < c.count[y]; t++) s += cur[(c.first[y] + t) * w + x] * c.k[y * c.ksize + t];
        next[y * w + x] = s;
      }
    }
    cur = next;
  }
  return cur === src ? Float32Array.from(src) : cur;
}

export interface PastedMask {
  /** 1 inside, 0 outside; width·height, row-major. */
  binary: Uint8Array;
  /** The decoder's values resized into the box (> 0 inside), SOFT_OUTSIDE elsewhere. */
  soft: Float32Array;
}

/** Pastes a size×size decoder mask into `rect` of a width×height image. The rect must be non-empty. */
export function pasteMask(mask: Float32Array, rect: PixelRect, width: number, height: number, size = 64): PastedMask {
  const rw = rect.x1 - rect.x0, rh = rect.y1 - rect.y0;
  if (rw <= 0 || rh <= 0) throw new RangeError(`pasteMask: empty rectangle ${JSON.stringify(rect)}`);
  const inBox = resizeMaskBilinear(mask, size, size, rw, rh);
  const soft = new Float32Array(width * height).fill(SOFT_OUTSIDE);
  const binary = new Uint8Array(width * height);
  for (let y = 0; y < rh; y++) {
    const iy = rect.y0 + y;
    if (iy < 0 || iy >= height) continue;
    for (let x = 0; x < rw; x++) {
      const ix = rect.x0 + x;
      if (ix < 0 || ix >= width) continue;
      const v = inBox[y * rw + x];
      soft[iy * width + ix] = v;
      binary[iy * width + ix] = v > 0 ? 1 : 0;
    }
  }
  return { binary, soft };
}

/** Run-length form of a binary mask for JSON: row-major counts, alternating 0-runs and 1-runs, starting with 0s. */
export function maskToRle(binary: Uint8Array): number[] {
  const counts: number[] = [];
  let cur = 0, run = 0;
  for (let i = 0; i < binary.length; i++) {
    if (binary[i] !== cur) { counts.push(run); run = 0; cur = binary[i]; }
    run++;
  }
  counts.push(run);
  return counts;
}
