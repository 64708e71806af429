/**
 * Where an image comes from, before it is decoded: a path, an http(s) URL, bytes (Buffer or
 * Uint8Array), a Blob, or decoded pixels. URLs are fetched like a browser would, but bounded:
 * a size cap, a timeout, and a limited number of redirects, so a slow or hostile server cannot
 * hang or exhaust the process.
 *
 * ```ts
 * const bytes = await readImageSource('https://example.org/cat.jpg');   // Uint8Array
 * ```
 */
import { PaliGemmaError } from '../interfaces/errors.js';

export interface FetchLimits {
  /** Largest body accepted, in bytes. Default 32 MiB. */
  maxBytes?: number;
  /** Whole-request timeout in ms (connect, redirects and body). Default 30 s. */
  timeoutMs?: number;
  /** Redirects followed before giving up. Default 5. */
  maxRedirects?: number;
  signal?: AbortSignal;
}

export const DEFAULT_FETCH_LIMITS: Required<Omit<FetchLimits, 'signal'>> = {
  maxBytes: 32 * 1024 * 1024,
  timeoutMs: 30_000,
  maxRedirects: 5,
};

/** Whether a string names a remote image rather than a file. */
export function isImageUrl(s: string): boolean {
  return /^https?:\/\//i.test(s);
}

/** A URL without credentials or query, for error messages (a signed URL's token stays out of logs). */
export function displayUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return url.split(/[?#]/)[0];
  }
}

/** Fetches an image URL into memory within the limits; every failure is one PaliGemmaError naming the URL. */
export async function fetchImage(url: string, limits: FetchLimits = {}): Promise<Uint8Array> {
  const { maxBytes, timeoutMs, maxRedirects } = { ...DEFAULT_FETCH_LIMITS, ...limits };
  const shown = displayUrl(url);
  const timeout = AbortSignal.timeout(timeoutMs);
  const signal = limits.signal ? AbortSignal.any([limits.signal, timeout]) : timeout;
  let current = url;
  try {
    for (let hop = 0; ; hop++) {
      const res = await fetch(current, { redirect: 'manual', signal });
      if (res.status >= 300 && res.status < 400 && res.headers.has('location')) {
        await res.body?.cancel();
        if (hop >= maxRedirects) {
          throw new PaliGemmaError(`image URL ${shown}: more than ${maxRedirects} redirects`, 'image_fetch_failed');
        }
        const next = new URL(res.headers.get('location')!, current);
        if (next.protocol !== 'http:' && next.protocol !== 'https:') {
          throw new PaliGemmaError(`image URL ${shown}: redirected to a ${next.protocol} URL`, 'image_fetch_failed');
        }
        current = next.href;
        continue;
      }
      if (!res.ok) {
        await res.body?.cancel();
        throw new PaliGemmaError(`image URL ${shown}: HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}`, 'image_fetch_failed');
      }
      const declared = Number(res.headers.get('content-length') ?? NaN);
      if (declared > maxBytes) {
        await res.body?.cancel();
        throw new PaliGemmaError(`image URL ${shown}: ${declared} bytes is over the ${maxBytes}-byte limit`, 'image_too_large');
      }
      return await readCapped(res, maxBytes, shown);
    }
  } catch (e) {
    if (e instanceof PaliGemmaError) throw e;
    if (timeout.aborted) throw new PaliGemmaError(`image URL ${shown}: no complete answer within ${timeoutMs} ms`, 'image_fetch_failed');
    if (limits.signal?.aborted) throw new PaliGemmaError(`image URL ${shown}: aborted`, 'aborted');
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    const why = cause?.code ?? cause?.message ?? (e as Error).message;
    throw new PaliGemmaError(`image URL ${shown}: ${why}`, 'image_fetch_failed');
  }
}

async function readCapped(res: Response, maxBytes: number, shown: string): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = res.body!.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > maxBytes) {
      await reader.cancel();
      throw new PaliGemmaError(`image URL ${shown}: body is over the ${maxBytes}-byte limit`, 'image_too_large');
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.length; }
  return out;
}

/** Reads a whole readable stream (e.g. process.stdin) into memory, up to maxBytes. */
export async function readStreamBytes(stream: AsyncIterable<Uint8Array | string>, what: string, maxBytes = DEFAULT_FETCH_LIMITS.maxBytes): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of stream) {
    const b = typeof chunk === 'string' ? Buffer.from(chunk) : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    total += b.length;
    if (total > maxBytes) throw new PaliGemmaError(`${what}: more than ${maxBytes} bytes`, 'image_too_large');
    chunks.push(b);
  }
  if (total === 0) throw new PaliGemmaError(`${what}: no bytes (expected a PNG, JPEG or WebP image)`);
  return new Uint8Array(Buffer.concat(chunks));
}

/** Blob → bytes (a File from a form, a fetch() body as blob). */
export async function blobBytes(blob: Blob): Promise<Uint8Array> {
  return new Uint8Array(await blob.arrayBuffer());
}
