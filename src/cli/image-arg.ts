import type { ImageInput } from '../interfaces/image-processor.js';
import { readStreamBytes } from '../image/image-source.js';

/** The --image value as an ImageInput: `-` reads the image bytes from stdin; paths and URLs pass through. */
export async function imageArg(value: string, stdin: AsyncIterable<Uint8Array | string> = process.stdin): Promise<ImageInput> {
  return value === '-' ? readStreamBytes(stdin, '--image - (stdin)') : value;
}

export const IMAGE_HELP = "PNG, JPEG or WebP image: a file, an http(s) URL, or - for stdin";
