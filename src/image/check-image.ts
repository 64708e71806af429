/** The ImageInput forms an entry point accepts, checked before any work (content: the image processor). */
import { invalidArgument, isObject } from '../interfaces/invalid-argument.js';

/** An image argument: the ImageInput forms; their content is checked by the image processor. */
export function checkImage(value: unknown): void {
  const expected = 'a file path, an http(s) URL, encoded bytes (Uint8Array, ArrayBuffer, Blob) or raw pixels {data, width, height, channels}';
  if (typeof value === 'string') {
    if (value === '') throw invalidArgument('image', expected, value);
    return;
  }
  if (value instanceof URL || value instanceof Uint8Array || value instanceof ArrayBuffer) return;
  if (typeof Blob !== 'undefined' && value instanceof Blob) return;
  if (isObject(value) && value.data instanceof Uint8Array && typeof value.width === 'number' && typeof value.height === 'number') return;
  throw invalidArgument('image', expected, value);
}
