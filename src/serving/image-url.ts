/**
 * Image URLs of a request → bytes. `data:image/...;base64,` always; `file://` URLs (or plain
 * paths) only inside the folder given to --allow-file-images, after resolving links; http(s)
 * only with --allow-remote-images. Everything else is refused by name.
 */
import { readFile, realpath } from 'node:fs/promises';
import { isAbsolute, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PaliGemmaError } from '../interfaces/errors.js';
import { fetchImage } from '../image/image-source.js';

export interface ImageUrlPolicy {
  /** Folder file images must be inside; undefined: no file images. */
  fileRoot?: string;
  allowRemote?: boolean;
  /** Largest image in bytes (decoded). */
  maxBytes?: number;
}

const DATA_URL = /^data:(image\/[a-z0-9.+-]+)?(;[a-z0-9-]+=[^;,]*)*;base64,/i;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

const bad = (message: string, code = 'invalid_image_url') => new PaliGemmaError(message, code);

export async function imageUrlBytes(url: string, policy: ImageUrlPolicy, signal?: AbortSignal): Promise<Uint8Array> {
  const max = policy.maxBytes ?? 20 * 1024 * 1024;
  const m = DATA_URL.exec(url);
  if (m) {
    const body = url.slice(m[0].length).replace(/\s+/g, '');
    if (body.length === 0 || body.length % 4 === 1 || !BASE64.test(body)) {
      throw bad('messages[].content[].image_url.url: invalid base64 in the data: URL');
    }
    const bytes = new Uint8Array(Buffer.from(body, 'base64'));
    if (bytes.length > max) throw bad(`image_url: ${bytes.length} bytes is over the ${max}-byte limit`, 'image_too_large');
    return bytes;
  }
  if (url.startsWith('data:')) throw bad('image_url.url: expected a data:image/...;base64, URL');
  if (/^https?:\/\//i.test(url)) {
    if (!policy.allowRemote) throw bad('image_url.url: remote image URLs are refused (start the server with --allow-remote-images)');
    return fetchImage(url, { maxBytes: max, signal });
  }
  if (/^file:\/\//i.test(url) || isAbsolute(url)) {
    if (policy.fileRoot === undefined) throw bad('image_url.url: file images are refused (start the server with --allow-file-images DIR)');
    let path: string;
    try {
      path = url.startsWith('file:') ? fileURLToPath(url) : url;
    } catch {
      throw bad('image_url.url: malformed file: URL');
    }
    const root = await realpath(policy.fileRoot);
    let real: string;
    try {
      real = await realpath(resolve(path));
    } catch {
      throw bad('image_url.url: no such file in the allowed image folder', 'image_not_found');
    }
    const rel = relative(root, real);
    if (rel === '' || rel.startsWith('..' + sep) || rel === '..' || isAbsolute(rel)) {
      throw bad('image_url.url: the file is outside the allowed image folder', 'image_not_allowed');
    }
    const bytes = await readFile(real);
    if (bytes.length > max) throw bad(`image_url: ${bytes.length} bytes is over the ${max}-byte limit`, 'image_too_large');
    return new Uint8Array(bytes);
  }
  throw bad('image_url.url: expected a data:image/...;base64, URL');
}
