/**
 * SigLIP image preprocessing as PaliGemma's Hugging Face processor does it: decode, convert to
 * RGB (alpha dropped, grey and palette expanded, EXIF orientation applied), Pillow-exact resize
 * to the vision tower's size, ×1/255, (x - mean) / std, CHW float32.
 *
 * ```ts
 * const proc = await SiglipImageProcessor.fromDir('models/paligemma-3b-mix-224', 224);
 * const { data, shape } = await proc.process('cat.jpg');   // shape [3, 224, 224]
 * ```
 */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import sharp from 'sharp';
import { PaliGemmaError } from '../interfaces/errors.js';
import { readImageProcessorConfig } from './processor-config.js';
import type { ImageInput, ImageProcessor, PixelValues } from '../interfaces/image-processor.js';
import { blobBytes, displayUrl, fetchImage, isImageUrl } from './image-source.js';
import { PIL_RESAMPLE_CODES, pilResize, type PilFilter } from './pil-bicubic.js';
import { checkImage } from './check-image.js';

type Triple = [number, number, number];

export interface SiglipImageProcessorOptions {
  /** Output size: a square side or { height, width }. */
  size: number | { height: number; width: number };
  /** Per-channel mean, or one value for all three. Default 0.5. */
  imageMean?: number | readonly number[];
  /** Per-channel std, or one value for all three. Default 0.5. */
  imageStd?: number | readonly number[];
  /** Default 1/255. */
  rescaleFactor?: number;
  doResize?: boolean;
  doRescale?: boolean;
  doNormalize?: boolean;
  /** Pillow filter name or code (3 = bicubic, the default). */
  resample?: PilFilter | number;
}

/** Decoded 8-bit RGB, HWC. */
export interface RgbImage {
  data: Uint8Array;
  width: number;
  height: number;
}

const CONFIG_FILE = 'preprocessor_config.json';

function triple(v: number | readonly number[] | undefined, fallback: number, what: string, source: string): Triple {
  if (v === undefined || v === null) return [fallback, fallback, fallback];
  const arr = typeof v === 'number' ? [v, v, v] : Array.isArray(v) ? v : undefined;
  if (!arr || arr.length !== 3 || !arr.every((x) => typeof x === 'number' && Number.isFinite(x))) {
    throw new PaliGemmaError(`${source}: ${what} must be a number or a list of 3 numbers, got ${JSON.stringify(v)}`);
  }
  return [arr[0], arr[1], arr[2]];
}

function resolveFilter(r: PilFilter | number | undefined, source: string): PilFilter {
  if (r === undefined || r === null) return 'bicubic';
  if (typeof r === 'number') {
    const f = PIL_RESAMPLE_CODES[r];
    if (!f) throw new PaliGemmaError(`${source}: resample ${r} is not supported (use 1 lanczos, 2 bilinear, 3 bicubic, 4 box or 5 hamming)`);
    return f;
  }
  if (!Object.values(PIL_RESAMPLE_CODES).includes(r)) throw new PaliGemmaError(`${source}: unknown resample filter ${JSON.stringify(r)}`);
  return r;
}

export class SiglipImageProcessor implements ImageProcessor {
  readonly height: number;
  readonly width: number;
  readonly mean: Triple;
  readonly std: Triple;
  readonly rescaleFactor: number;
  readonly doResize: boolean;
  readonly doRescale: boolean;
  readonly doNormalize: boolean;
  readonly filter: PilFilter;

  constructor(options: SiglipImageProcessorOptions, source = 'image processor options') {
    const size = typeof options.size === 'number' ? { height: options.size, width: options.size } : options.size;
    const okSide = (n: unknown) => typeof n === 'number' && Number.isInteger(n) && n >= 1;
    if (!size || !okSide(size.height) || !okSide(size.width)) {
      throw new PaliGemmaError(`${source}: size must be a positive integer or { height, width }, got ${JSON.stringify(options.size)}`);
    }
    this.height = size.height;
    this.width = size.width;
    this.mean = triple(options.imageMean, 0.5, 'image_mean', source);
    this.std = triple(options.imageStd, 0.5, 'image_std', source);
    if (this.std.some((s) => s === 0)) throw new PaliGemmaError(`${source}: image_std must not contain 0`);
    this.rescaleFactor = options.rescaleFactor ?? 1 / 255;
    if (typeof this.rescaleFactor !== 'number' || !Number.isFinite(this.rescaleFactor) || this.rescaleFactor <= 0) {
      throw new PaliGemmaError(`${source}: rescale_factor must be a positive number, got ${JSON.stringify(options.rescaleFactor)}`);
    }
    this.doResize = options.doResize ?? true;
    this.doRescale = options.doRescale ?? true;
    this.doNormalize = options.doNormalize ?? true;
    this.filter = resolveFilter(options.resample, source);
    // Every pixel value (0…255, rescaled, normalised) must stay a finite float32: a tiny
    // image_std (or a huge rescale_factor) would turn the whole image into Inf.
    const top = this.doRescale ? 255 * this.rescaleFactor : 255;
    for (let c = 0; c < 3; c++) {
      for (const x of [0, top]) {
        const v = this.doNormalize ? (Math.fround(x) - this.mean[c]) / this.std[c] : x;
        if (!Number.isFinite(Math.fround(v))) {
          throw new PaliGemmaError(`${source}: image_std ${this.std[c]} (channel ${c}) with image_mean ${this.mean[c]} and rescale_factor ${this.rescaleFactor} `
            + `makes pixel values overflow float32 (${x} → ${v}); use the image_std the model was trained with (0.5 for PaliGemma)`, 'invalid_config');
        }
      }
    }
  }

  /**
   * Reads `preprocessor_config.json` (or processor_config.json's image_processor) from a model folder (defaults when absent).
   * `imageSize` is the vision tower's input size; a config that asks for another size is an error.
   */
  static async fromDir(modelDir: string, imageSize: number): Promise<SiglipImageProcessor> {
    const found = await readImageProcessorConfig(modelDir);
    if (found === undefined) return new SiglipImageProcessor({ size: imageSize }, join(modelDir, CONFIG_FILE));
    const { cfg, source: path } = found;
    return new SiglipImageProcessor(SiglipImageProcessor.optionsFromConfig(cfg, imageSize, path), path);
  }

  /** Maps Hugging Face preprocessor_config.json fields onto options. */
  static optionsFromConfig(cfg: Record<string, unknown>, imageSize: number, source = CONFIG_FILE): SiglipImageProcessorOptions {
    let size: { height: number; width: number } = { height: imageSize, width: imageSize };
    const s = cfg.size as unknown;
    if (typeof s === 'number') size = { height: s, width: s };
    else if (s && typeof s === 'object') {
      const o = s as Record<string, unknown>;
      if (typeof o.height === 'number' && typeof o.width === 'number') size = { height: o.height, width: o.width };
      else throw new PaliGemmaError(`${source}: size must have height and width, got ${JSON.stringify(s)}`);
    } else if (s !== undefined && s !== null) {
      throw new PaliGemmaError(`${source}: size must have height and width, got ${JSON.stringify(s)}`);
    }
    if (size.height !== imageSize || size.width !== imageSize) {
      throw new PaliGemmaError(`${source}: size ${size.width}×${size.height} does not match the vision tower's image_size ${imageSize}`);
    }
    const bool = (k: string): boolean | undefined => {
      const v = cfg[k];
      if (v === undefined || v === null) return undefined;
      if (typeof v !== 'boolean') throw new PaliGemmaError(`${source}: ${k} must be true or false, got ${JSON.stringify(v)}`);
      return v;
    };
    const num = (k: string): number | undefined => {
      const v = cfg[k];
      if (v === undefined || v === null) return undefined;
      if (typeof v !== 'number') throw new PaliGemmaError(`${source}: ${k} must be a number, got ${JSON.stringify(v)}`);
      return v;
    };
    return {
      size,
      imageMean: cfg.image_mean as number[] | undefined,
      imageStd: cfg.image_std as number[] | undefined,
      rescaleFactor: num('rescale_factor'),
      doResize: bool('do_resize'),
      doRescale: bool('do_rescale'),
      doNormalize: bool('do_normalize'),
      resample: num('resample'),
    };
  }

  async process(image: ImageInput): Promise<PixelValues> {
    checkImage(image);
    const rgb = await decodeToRgb(image);
    return this.processRgb(rgb);
  }

  /** Resize + rescale + normalize already-decoded RGB pixels. */
  processRgb(rgb: RgbImage): PixelValues {
    const { height: H, width: W } = this;
    let pixels = rgb.data;
    if (rgb.width !== W || rgb.height !== H) {
      if (!this.doResize) {
        throw new PaliGemmaError(`image is ${rgb.width}×${rgb.height} but do_resize is false and the model needs ${W}×${H}`);
      }
      pixels = pilResize(rgb.data, rgb.width, rgb.height, 3, W, H, this.filter);
    }
    // Same float steps as the reference: rescale in float64 then store float32; normalize in float32.
    const out = new Float32Array(3 * H * W);
    const plane = H * W;
    const mean = this.mean.map(Math.fround), std = this.std.map(Math.fround);
    const f = this.rescaleFactor;
    for (let c = 0; c < 3; c++) {
      const lut = new Float32Array(256);
      for (let v = 0; v < 256; v++) {
        let x = this.doRescale ? Math.fround(v * f) : v;
        if (this.doNormalize) x = Math.fround(Math.fround(x - mean[c]) / std[c]);
        lut[v] = x;
      }
      const base = c * plane;
      for (let i = 0; i < plane; i++) out[base + i] = lut[pixels[3 * i + c]];
    }
    return { data: out, shape: [3, H, W] };
  }
}

const inputName = (image: ImageInput): string =>
  typeof image === 'string' ? (isImageUrl(image) ? displayUrl(image) : image)
    : image instanceof URL ? displayUrl(image.href)
      : image instanceof Uint8Array || image instanceof ArrayBuffer ? `image bytes (${image.byteLength} bytes)`
        : image instanceof Blob ? `image blob (${image.size} bytes)` : 'raw pixels';

const EXPECTED_INPUT = 'a path, an http(s) URL, a Buffer/Uint8Array/ArrayBuffer/Blob of PNG, JPEG or WebP bytes, or {data, width, height, channels}';

/**
 * Any ImageInput → 8-bit RGB. Encoded images go through sharp: EXIF orientation applied, alpha
 * dropped (not composited, as Pillow's convert('RGB') does), grey and palette expanded, embedded
 * ICC profiles ignored (Pillow does not apply them). CMYK is converted by libvips, which may
 * differ from Pillow's naive CMYK → RGB.
 */
export async function decodeToRgb(image: ImageInput): Promise<RgbImage> {
  if (image === null || image === undefined || (typeof image !== 'string' && typeof image !== 'object')) {
    throw new PaliGemmaError(`invalid image ${String(image)}: expected ${EXPECTED_INPUT}`, 'invalid_argument');
  }
  if (image instanceof URL && image.protocol === 'file:') image = fileURLToPath(image);
  let bytes: Uint8Array;
  if (typeof image === 'string' && !isImageUrl(image)) {
    try {
      bytes = await readFile(image);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new PaliGemmaError(code === 'ENOENT' ? `image not found: ${image}` : `cannot read image ${image}: ${(e as Error).message}`,
        code === 'ENOENT' ? 'not_found' : 'invalid_input');
    }
  } else if (typeof image === 'string' || image instanceof URL) {
    bytes = await fetchImage(typeof image === 'string' ? image : image.href);
  } else if (image instanceof Uint8Array) {
    bytes = image;
  } else if (image instanceof ArrayBuffer) {
    bytes = new Uint8Array(image);
  } else if (typeof Blob !== 'undefined' && image instanceof Blob) {
    bytes = await blobBytes(image);
  } else if ('data' in image && 'width' in image) {
    return rawToRgb(image);
  } else {
    throw new PaliGemmaError(`invalid image: expected ${EXPECTED_INPUT}`, 'invalid_argument');
  }
  if (bytes.length === 0) throw new PaliGemmaError(`cannot decode ${inputName(image)}: empty file`);
  try {
    // ignoreIcc: Pillow hands over the stored values without colour management, so must we.
    const { data, info } = await sharp(bytes, { autoOrient: true, failOn: 'error', ignoreIcc: true })
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    return expandChannels(new Uint8Array(data.buffer, data.byteOffset, data.length), info.width, info.height, info.channels, inputName(image));
  } catch (e) {
    if (e instanceof PaliGemmaError) throw e;
    const why = (e as Error).message.split('\n')[0];
    throw new PaliGemmaError(`cannot decode ${inputName(image)} (expected PNG, JPEG or WebP): ${why}`);
  }
}

/** 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA) channels → RGB. */
function expandChannels(src: Uint8Array, width: number, height: number, channels: number, what: string): RgbImage {
  const n = width * height;
  if (channels === 3) return { data: src.length === n * 3 ? Uint8Array.from(src) : src.slice(0, n * 3), width, height };
  const out = new Uint8Array(n * 3);
  if (channels === 1 || channels === 2) {
    for (let i = 0; i < n; i++) {
      const g = src[i * channels];
      out[3 * i] = g; out[3 * i + 1] = g; out[3 * i + 2] = g;
    }
  } else if (channels === 4) {
    for (let i = 0; i < n; i++) {
      out[3 * i] = src[4 * i]; out[3 * i + 1] = src[4 * i + 1]; out[3 * i + 2] = src[4 * i + 2];
    }
  } else {
    throw new PaliGemmaError(`cannot use ${what}: ${channels} channels`);
  }
  return { data: out, width, height };
}

function rawToRgb(img: { data: Uint8Array; width: number; height: number; channels: 3 | 4 }): RgbImage {
  const { data, width, height, channels } = img;
  const okSide = (n: number) => Number.isInteger(n) && n >= 1;
  if (!okSide(width) || !okSide(height) || (channels !== 3 && channels !== 4)) {
    throw new PaliGemmaError(`raw pixels: bad shape ${width}×${height}×${channels} (channels must be 3 or 4)`);
  }
  if (!(data instanceof Uint8Array) || data.length !== width * height * channels) {
    throw new PaliGemmaError(`raw pixels: expected ${width * height * channels} bytes for ${width}×${height}×${channels}, got ${data?.length}`);
  }
  return expandChannels(data, width, height, channels, 'raw pixels');
}
