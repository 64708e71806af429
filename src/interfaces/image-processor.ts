/**
 * ImageProcessor: image file or bytes → normalised pixels for the vision tower.
 *
 * ```ts
 * const { data, shape } = await processor.process('cat.jpg');   // shape [3, 224, 224]
 * ```
 */
import type { ServiceIdentifier } from 'inversify';
export const ImageProcessor: ServiceIdentifier<ImageProcessor> = Symbol('ImageProcessor');

export interface PixelValues {
  /** CHW float32, normalised. */
  data: Float32Array;
  shape: [channels: number, height: number, width: number];
}

/** Decoded 8-bit RGB or RGBA pixels, row-major HWC. */
export interface RawPixels { data: Uint8Array; width: number; height: number; channels: 3 | 4 }

/**
 * An image: a file path, an http(s) URL (string or URL; fetched with a size cap, a timeout and
 * bounded redirects), encoded bytes (PNG/JPEG/WebP as a Buffer, Uint8Array, ArrayBuffer or Blob),
 * or decoded pixels.
 */
export type ImageInput = string | URL | Uint8Array | ArrayBuffer | Blob | RawPixels;

export interface ImageProcessor {
  process(image: ImageInput): Promise<PixelValues>;
}
