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

/** A path, encoded image bytes (PNG/JPEG/WebP), or decoded RGB(A) pixels. */
export type ImageInput =
  | string
  | Uint8Array
  | { data: Uint8Array; width: number; height: number; channels: 3 | 4 };

export interface ImageProcessor {
  process(image: ImageInput): Promise<PixelValues>;
}
