/**
 * Image resizing that reproduces Pillow's `Image.resize(size, resample)` for 8-bit images, which
 * is what the Hugging Face SigLIP / PaliGemma image processor calls (bicubic by default).
 *
 * How Pillow resamples, and so how this file does:
 * - two separable passes, horizontal first, then vertical; a pass is skipped when that
 *   dimension keeps its size;
 * - output pixel i samples around source coordinate (i + 0.5)·scale with a filter kernel; when
 *   shrinking, the kernel is stretched by the scale factor (antialiasing), so it covers
 *   support·scale source pixels on each side;
 * - weights are normalised to sum to 1, then turned into fixed point with 22 fractional bits;
 * - every pass rounds (add half, shift) and clamps to 0..255, so the intermediate image between
 *   the passes is uint8, as Pillow's is.
 * Bicubic is the a = -0.5 cubic convolution kernel (Pillow's choice; sharp's and OpenCV's cubic
 * kernels differ, hence this file).
 *
 * ```ts
 * const out = pilResize(rgb, 640, 480, 3, 224, 224);   // Uint8Array, 224·224·3, HWC
 * ```
 */

/** Pillow's resampling filters that work by convolution, by their `Image.Resampling` value. */
export type PilFilter = 'box' | 'bilinear' | 'hamming' | 'bicubic' | 'lanczos';

/** Pillow's integer codes (`resample` in preprocessor_config.json) for the filters above. */
export const PIL_RESAMPLE_CODES: Readonly<Record<number, PilFilter>> = {
  1: 'lanczos', 2: 'bilinear', 3: 'bicubic', 4: 'box', 5: 'hamming',
};

interface FilterDef { support: number; weight(x: number): number }

const sinc = (x: number): number => {
  if (x === 0) return 1;
  const px = x * Math.PI;
  return Math.sin(px) / px;
};

const F054 = Math.fround(0.54);
const F046 = Math.fround(0.46);

const FILTERS: Record<PilFilter, FilterDef> = {
  box: {
    support: 0.5,
    weight: (x) => (x > -0.5 && x <= 0.5 ? 1 : 0),
  },
  bilinear: {
    support: 1,
    weight: (x) => {
      const ax = x < 0 ? -x : x;
      return ax < 1 ? 1 - ax : 0;
    },
  },
  hamming: {
    support: 1,
    weight: (x) => {
      const ax = x < 0 ? -x : x;
      if (ax === 0) return 1;
      if (ax >= 1) return 0;
      const px = ax * Math.PI;
      // Pillow writes these two constants as C floats.
      return (Math.sin(px) / px) * (F054 + F046 * Math.cos(px));
    },
  },
  bicubic: {
    support: 2,
    weight: (x) => {
      // Keys' cubic convolution with a = -0.5, written in the same operation order as Pillow
      // so the double results (and thus the fixed-point weights) agree bit for bit.
      const a = -0.5;
      const ax = x < 0 ? -x : x;
      if (ax < 1) return ((a + 2) * ax - (a + 3)) * ax * ax + 1;
      if (ax < 2) return (((ax - 5) * ax + 8) * ax - 4) * a;
      return 0;
    },
  },
  lanczos: {
    support: 3,
    weight: (x) => (x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0),
  },
};

/** Fractional bits of the fixed-point weights for 8-bit images (Pillow: 32 - 8 - 2). */
const PRECISION_BITS = 22;
const ONE = 2 ** PRECISION_BITS;
const HALF = 2 ** (PRECISION_BITS - 1);

/** For every output index: first source index, tap count, and ksize fixed-point weights. */
export interface ResampleCoefficients {
  ksize: number;
  /** [first, count] per output index. */
  bounds: Int32Array;
  /** outSize · ksize fixed-point weights. */
  weights: Int32Array;
}

/** Weights of one 1-D pass from `inSize` samples to `outSize` samples. */
export function resampleCoefficients(inSize: number, outSize: number, filter: PilFilter = 'bicubic'): ResampleCoefficients {
  const f = FILTERS[filter];
  const scale = inSize / outSize;
  const filterScale = scale < 1 ? 1 : scale;
  const support = f.support * filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const weights = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  const inv = 1 / filterScale;
  for (let o = 0; o < outSize; o++) {
    const center = (o + 0.5) * scale;
    let first = Math.trunc(center - support + 0.5);
    if (first < 0) first = 0;
    let end = Math.trunc(center + support + 0.5);
    if (end > inSize) end = inSize;
    const count = end - first;
    let total = 0;
    for (let t = 0; t < count; t++) {
      const v = f.weight((t + first - center + 0.5) * inv);
      w[t] = v;
      total += v;
    }
    for (let t = 0; t < count; t++) {
      const v = total !== 0 ? w[t] / total : w[t];
      // C's (int) cast truncates toward zero after adding ∓0.5: round half away from zero.
      weights[o * ksize + t] = v < 0 ? Math.trunc(-0.5 + v * ONE) : Math.trunc(0.5 + v * ONE);
    }
    bounds[2 * o] = first;
    bounds[2 * o + 1] = count;
  }
  return { ksize, bounds, weights };
}

/** Rounds a fixed-point accumulator back to 0..255. */
const clip8 = (acc: number): number => {
  const v = Math.floor(acc / ONE);
  return v < 0 ? 0 : v > 255 ? 255 : v;
};

/**
 * Resizes interleaved 8-bit pixels (HWC, any channel count) exactly as Pillow does for modes
 * L / RGB / RGBX. (Pillow premultiplies alpha for RGBA; callers here drop alpha first.)
 */
export function pilResize(
  src: Uint8Array, width: number, height: number, channels: number,
  outWidth: number, outHeight: number, filter: PilFilter = 'bicubic',
): Uint8Array {
  if (src.length !== width * height * channels) {
    throw new RangeError(`pilResize: ${src.length} bytes for ${width}×${height}×${channels}`);
  }
  if (!(outWidth >= 1 && outHeight >= 1 && Number.isInteger(outWidth) && Number.isInteger(outHeight))) {
    throw new RangeError(`pilResize: bad output size ${outWidth}×${outHeight}`);
  }
  const needH = outWidth !== width;
  const needV = outHeight !== height;
  if (!needH && !needV) return Uint8Array.from(src);

  const vert = resampleCoefficients(height, outHeight, filter);
  // Only the source rows the vertical pass reads go through the horizontal pass.
  const rowFirst = needV ? vert.bounds[0] : 0;
  const rowEnd = needV ? vert.bounds[2 * outHeight - 2] + vert.bounds[2 * outHeight - 1] : height;

  let img = src, imgW = width, imgRows = height, rowOffset = 0;
  if (needH) {
    const { ksize, bounds, weights } = resampleCoefficients(width, outWidth, filter);
    const rows = rowEnd - rowFirst;
    const out = new Uint8Array(rows * outWidth * channels);
    for (let y = 0; y < rows; y++) {
      const inRow = (y + rowFirst) * width * channels;
      const outRow = y * outWidth * channels;
      for (let x = 0; x < outWidth; x++) {
        const first = bounds[2 * x], count = bounds[2 * x + 1], k = x * ksize;
        for (let c = 0; c < channels; c++) {
          let acc = HALF;
          let p = inRow + first * channels + c;
          for (let t = 0; t < count; t++, p += channels) acc += src[p] * weights[k + t];
          out[outRow + x * channels + c] = clip8(acc);
        }
      }
    }
    img = out; imgW = outWidth; imgRows = rows; rowOffset = rowFirst;
  }
  if (!needV) return img;

  const { ksize, bounds, weights } = vert;
  const stride = imgW * channels;
  const out = new Uint8Array(outHeight * stride);
  for (let y = 0; y < outHeight; y++) {
    const first = bounds[2 * y] - rowOffset, count = bounds[2 * y + 1], k = y * ksize;
    if (first < 0 || first + count > imgRows) throw new Error('pilResize: internal row bounds');
    for (let i = 0; i < stride; i++) {
      let acc = HALF;
      let p = first * stride + i;
      for (let t = 0; t < count; t++, p += stride) acc += img[p] * weights[k + t];
      out[y * stride + i] = clip8(acc);
    }
  }
  return out;
}
