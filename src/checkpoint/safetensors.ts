/**
 * Reader for the safetensors format: an 8-byte little-endian u64 header length N, N bytes of
 * JSON `{ name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__"?: {...} }`, then
 * the tensor bytes (offsets are relative to the end of the header).
 *
 * The header is validated as a whole when the file is opened, so a corrupt file fails before
 * any tensor is uploaded. Tensor bytes are read one tensor at a time, in bounded chunks, through
 * a file handle: a multi-gigabyte file is never held in memory.
 *
 * ```ts
 * const file = await SafetensorsFile.open('model.safetensors');
 * try {
 *   const t = await file.readF32('language_model.model.norm.weight');   // Float32Array
 * } finally { await file.close(); }
 * ```
 */
import { open, type FileHandle } from 'node:fs/promises';
import { basename } from 'node:path';
import { endianness } from 'node:os';
import { PaliGemmaError } from '../interfaces/errors.js';
import { bf16ToF32, f16ToF32 } from '../tensor/dtype.js';
import { findDuplicateKey } from './duplicate-keys.js';

/** The float dtypes this SDK reads. */
export type SafetensorsFloatDtype = 'F32' | 'F16' | 'BF16';

/** Bits per element of every dtype the safetensors format defines (F4 and F6 pack below a byte). */
export const SAFETENSORS_DTYPE_BITS: Readonly<Record<string, number>> = {
  BOOL: 8, F4: 4, F6_E2M3: 6, F6_E3M2: 6, U8: 8, I8: 8, F8_E5M2: 8, F8_E4M3: 8, F8_E8M0: 8,
  I16: 16, U16: 16, F16: 16, BF16: 16,
  I32: 32, U32: 32, F32: 32,
  C64: 64, I64: 64, U64: 64, F64: 64,
};

/** Bytes per element of the dtypes with a whole byte size. */
export const SAFETENSORS_DTYPE_BYTES: Readonly<Record<string, number>> = Object.fromEntries(
  Object.entries(SAFETENSORS_DTYPE_BITS).filter(([, bits]) => bits % 8 === 0).map(([d, bits]) => [d, bits / 8]));

export interface SafetensorsEntry {
  readonly name: string;
  /** As written in the header ('F32', 'BF16', 'I64', ...). */
  readonly dtype: string;
  readonly shape: readonly number[];
  /** Absolute byte range in the file: [begin, end). */
  readonly begin: number;
  readonly end: number;
}

/** Reads at most this many bytes per read call (bounds memory and paces progress reports). */
export const READ_CHUNK_BYTES = 16 * 1024 * 1024;
/** Refuse headers larger than this (the format's reference reader uses the same bound). */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

function fail(file: string, problem: string): never {
  throw new PaliGemmaError(`${file}: ${problem}`.replace(/\s*\n\s*/g, ' '), 'corrupt_checkpoint');
}

function isNonNegativeInt(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

export function isFloatDtype(dtype: string): dtype is SafetensorsFloatDtype {
  return dtype === 'F32' || dtype === 'F16' || dtype === 'BF16';
}

/** Number of elements of a shape (1 for a scalar). */
export function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * Parses and validates a header as strictly as the format's own reader: the header is one JSON
 * object with no key written twice; each entry has a known dtype, a shape of non-negative
 * integers and data_offsets [begin, end] whose span is exactly elements × dtype size; the
 * entries, sorted by offset, tile the data section from 0 to the end of the file with no
 * overlap, hole or trailing byte; `__metadata__` maps strings to strings. `fileSize` is the
 * whole file's size in bytes.
 */
export function parseSafetensorsHeader(
  file: string, headerBytes: Uint8Array, fileSize: number,
): { entries: Map<string, SafetensorsEntry>; metadata: Record<string, string> } {
  const dataStart = 8 + headerBytes.length;
  let text: string;
  let json: unknown;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes);
    json = JSON.parse(text);
  } catch (e) {
    fail(file, `header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json) || !text.startsWith('{')) {
    fail(file, 'header is not a JSON object (it must begin with "{")');
  }
  const dup = findDuplicateKey(text);
  if (dup) {
    const where = dup.path.length === 0 ? 'the header' : dup.path[0] === '__metadata__' ? '__metadata__' : `tensor ${dup.path[0]}`;
    fail(file, `${where} writes the key ${JSON.stringify(dup.key)} twice (a reader would silently keep one)`);
  }
  const entries = new Map<string, SafetensorsEntry>();
  const metadata: Record<string, string> = {};
  const dataBytes = fileSize - dataStart;
  // [name, begin, end] relative to the data section, for the tiling check.
  const spans: [string, number, number][] = [];
  for (const [name, raw] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (raw === null) continue;                                     // the format's reader takes null as "none"
      if (typeof raw !== 'object' || Array.isArray(raw)) fail(file, '__metadata__ is not an object of strings');
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(file, `__metadata__.${k} is ${JSON.stringify(v)}, not a string (metadata maps strings to strings)`);
        metadata[k] = v;
      }
      continue;
    }
    const where = `tensor ${name}`;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail(file, `${where}: entry is not an object`);
    const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
    if (typeof dtype !== 'string' || dtype.length === 0) fail(file, `${where}: dtype is missing or not a string`);
    const bits = SAFETENSORS_DTYPE_BITS[dtype];
    if (!Object.hasOwn(SAFETENSORS_DTYPE_BITS, dtype) || bits === undefined) {
      fail(file, `${where}: dtype ${JSON.stringify(dtype)} is not a safetensors dtype`);
    }
    if (!Array.isArray(shape) || !shape.every(isNonNegativeInt)) {
      fail(file, `${where}: shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegativeInt)) {
      fail(file, `${where}: data_offsets ${JSON.stringify(offsets)} is not a pair of non-negative integers`);
    }
    const [begin, end] = offsets as [number, number];
    if (end < begin) fail(file, `${where}: data_offsets [${begin}, ${end}] end before they begin`);
    if (end > dataBytes) {
      fail(file, `${where}: data_offsets [${begin}, ${end}] run past the end of the file (${dataBytes} data bytes; file truncated?)`);
    }
    const count = elementCount(shape);
    const totalBits = count * bits;
    if (!Number.isSafeInteger(totalBits)) fail(file, `${where}: shape [${shape.join(', ')}] has too many elements`);
    if (totalBits % 8 !== 0) {
      fail(file, `${where}: shape [${shape.join(', ')}] of ${dtype} is ${totalBits} bits, not a whole number of bytes`);
    }
    if (end - begin !== totalBits / 8) {
      fail(file, `${where}: holds ${end - begin} bytes, but shape [${shape.join(', ')}] of ${dtype} needs ${totalBits / 8}`);
    }
    spans.push([name, begin, end]);
    // Non-float dtypes pass here; reading such a tensor fails with its name and dtype.
    entries.set(name, { name, dtype, shape: [...shape], begin: dataStart + begin, end: dataStart + end });
  }
  checkTiling(file, spans, dataBytes);
  return { entries, metadata };
}

/** The spans, sorted by (begin, end), must cover [0, dataBytes) exactly once, like the format's reader demands. */
function checkTiling(file: string, spans: [string, number, number][], dataBytes: number): void {
  spans.sort((a, b) => a[1] - b[1] || a[2] - b[2]);
  let cursor = 0;
  let previous: [string, number, number] | undefined;
  for (const span of spans) {
    const [name, begin, end] = span;
    if (begin < cursor) {
      fail(file, `tensor ${name}: data_offsets [${begin}, ${end}] overlap tensor ${previous![0]} [${previous![1]}, ${previous![2]}] (tensors must not share bytes)`);
    }
    if (begin > cursor) {
      const after = previous ? `after tensor ${previous[0]}` : 'at the start of the data section';
      fail(file, `tensor ${name}: data_offsets [${begin}, ${end}] leave bytes [${cursor}, ${begin}) ${after} unused (a hole)`);
    }
    cursor = end;
    previous = span;
  }
  if (cursor !== dataBytes) {
    const after = previous ? `after tensor ${previous[0]}` : 'in a file with no tensors';
    fail(file, `${dataBytes - cursor} trailing bytes [${cursor}, ${dataBytes}) of the data section ${after} belong to no tensor`);
  }
}

/** An open safetensors file. Close it when done. */
export class SafetensorsFile {
  private constructor(
    /** The path as given to `open`. */
    readonly path: string,
    private readonly handle: FileHandle,
    readonly fileSize: number,
    readonly entries: ReadonlyMap<string, SafetensorsEntry>,
    readonly metadata: Readonly<Record<string, string>>,
  ) {}

  /** Opens and validates a file; throws PaliGemmaError naming the file for anything wrong. */
  static async open(path: string): Promise<SafetensorsFile> {
    if (endianness() !== 'LE') throw new PaliGemmaError('safetensors reading needs a little-endian machine');
    let handle: FileHandle;
    try {
      handle = await open(path, 'r');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new PaliGemmaError(`${path}: file not found`, 'not_found');
      if (code === 'EISDIR') throw new PaliGemmaError(`${path}: is a directory, not a safetensors file`);
      throw new PaliGemmaError(`${path}: cannot open (${(e as Error).message})`.replace(/\s*\n\s*/g, ' '));
    }
    try {
      const info = await handle.stat();
      const size = info.size;
      if (!info.isFile()) fail(path, 'not a regular file');
      if (size < 8) fail(path, `file is only ${size} bytes, shorter than the 8-byte header length (truncated?)`);
      const lenBytes = await readExactly(handle, path, 0, 8);
      const headerLen = new DataView(lenBytes.buffer).getBigUint64(0, true);
      if (headerLen > BigInt(size - 8)) {
        fail(path, `header length ${headerLen} runs past the end of the file (${size} bytes; truncated or not safetensors?)`);
      }
      if (headerLen > BigInt(MAX_HEADER_BYTES)) fail(path, `header length ${headerLen} is implausibly large`);
      if (headerLen < 2n) fail(path, `header length ${headerLen} is too short to hold a JSON object`);
      const header = await readExactly(handle, path, 8, Number(headerLen));
      const { entries, metadata } = parseSafetensorsHeader(path, header, size);
      return new SafetensorsFile(path, handle, size, entries, metadata);
    } catch (e) {
      await handle.close().catch(() => undefined);
      throw e;
    }
  }

  /** Short file name for messages. */
  get fileName(): string {
    return basename(this.path);
  }

  entry(name: string): SafetensorsEntry {
    const e = this.entries.get(name);
    if (!e) throw new PaliGemmaError(`${this.path}: no tensor named ${name}`, 'not_found');
    return e;
  }

  private floatEntry(name: string): SafetensorsEntry & { dtype: SafetensorsFloatDtype } {
    const e = this.entry(name);
    if (!isFloatDtype(e.dtype)) {
      throw new PaliGemmaError(
        `${this.path}: tensor ${name} has dtype ${e.dtype}, which is not supported (use F32, F16 or BF16)`,
        'unsupported_dtype');
    }
    return e as SafetensorsEntry & { dtype: SafetensorsFloatDtype };
  }

  /**
   * The tensor's stored elements: Float32Array for F32, raw bits as Uint16Array for F16/BF16.
   * `onBytes(n)` is called after every chunk with the bytes just read.
   */
  async readStored(name: string, onBytes?: (n: number) => void): Promise<Float32Array | Uint16Array> {
    const e = this.floatEntry(name);
    const n = elementCount(e.shape);
    const out = e.dtype === 'F32' ? new Float32Array(n) : new Uint16Array(n);
    await this.readInto(e, new Uint8Array(out.buffer, out.byteOffset, out.byteLength), onBytes);
    return out;
  }

  /**
   * Fills `dst` (the tensor's element count, Float32Array for F32, raw bits for F16/BF16) with
   * its stored elements, read through one reused buffer: `check(part, first)` sees each part
   * (elements [first, first + part.length)) while it is hot, before it is copied into `dst`.
   * For destinations that are fresh memory (a backend's own, see TensorBackend.reserve): the
   * file is read into memory already touched, and `dst` is touched once, by the copy.
   */
  async readStoredInto(
    name: string, dst: Float32Array | Uint16Array,
    check?: (part: Float32Array | Uint16Array, first: number) => void, onBytes?: (n: number) => void,
  ): Promise<void> {
    const e = this.floatEntry(name);
    const width = e.dtype === 'F32' ? 4 : 2;
    if (dst.length !== elementCount(e.shape) || (width === 4) !== (dst instanceof Float32Array)) {
      throw new RangeError(`${this.path}: tensor ${name} (${e.dtype} [${e.shape}]) does not fit a ${dst.constructor.name} of ${dst.length}`);
    }
    await this.eachPart(e, width, dst.length, (part, first) => {
      check?.(part, first);
      dst.set(part, first);
    }, onBytes);
  }

  /**
   * Reads `n` elements of `width` bytes of entry `e` part by part into the file's one reused
   * buffer and hands each part (elements [first, first + part.length)) to `visit` before the
   * next read overwrites it.
   */
  private async eachPart(
    e: SafetensorsEntry, width: 2 | 4, n: number,
    visit: (part: Float32Array | Uint16Array, first: number) => void, onBytes?: (n: number) => void,
  ): Promise<void> {
    // A read already using the file's buffer (calls that overlap) gets a buffer of its own.
    const own = this.scratchBusy;
    const buffer = own ? new Uint8Array(READ_CHUNK_BYTES) : (this.scratch ??= new Uint8Array(READ_CHUNK_BYTES));
    if (!own) this.scratchBusy = true;
    try {
      const perPart = READ_CHUNK_BYTES / width;
      for (let first = 0; first < n; first += perPart) {
        const count = Math.min(perPart, n - first);
        const bytes = buffer.subarray(0, count * width);
        await this.readRange(e.begin + first * width, bytes);
        visit(width === 4 ? new Float32Array(bytes.buffer, 0, count) : new Uint16Array(bytes.buffer, 0, count), first);
        onBytes?.(count * width);
      }
    } finally {
      if (!own) this.scratchBusy = false;
    }
  }

  /** The tensor's bytes as stored, whatever its dtype (e.g. U8 codes of a quantized weight). */
  async readBytes(name: string, onBytes?: (n: number) => void): Promise<Uint8Array> {
    const e = this.entry(name);
    const out = new Uint8Array(e.end - e.begin);
    await this.readInto(e, out, onBytes);
    return out;
  }

  /** The tensor widened to float32 (16-bit data converted chunk by chunk, exactly). */
  async readF32(name: string, onBytes?: (n: number) => void): Promise<Float32Array> {
    const e = this.floatEntry(name);
    const n = elementCount(e.shape);
    const out = new Float32Array(n);
    if (e.dtype === 'F32') {
      await this.readInto(e, new Uint8Array(out.buffer), onBytes);
      return out;
    }
    const convert = e.dtype === 'F16' ? f16ToF32 : bf16ToF32;
    await this.eachPart(e, 2, n, (part, first) => { convert(part as Uint16Array, out.subarray(first, first + part.length)); }, onBytes);
    return out;
  }

  /** Fills `dst` with the tensor's stored bytes from `byteOffset` on (a part of it, into a buffer the caller reuses). */
  async readPart(name: string, byteOffset: number, dst: Uint8Array): Promise<void> {
    const e = this.entry(name);
    if (!(byteOffset >= 0 && e.begin + byteOffset + dst.length <= e.end)) {
      throw new RangeError(`${this.path}: bytes [${byteOffset}, ${byteOffset + dst.length}) lie outside tensor ${name} (${e.end - e.begin} bytes)`);
    }
    await this.readRange(e.begin + byteOffset, dst);
  }

  /** True when two tensors (possibly of two files) hold identical bytes. Reads both chunkwise. */
  static async sameBytes(a: SafetensorsFile, nameA: string, b: SafetensorsFile, nameB: string): Promise<boolean> {
    const ea = a.entry(nameA), eb = b.entry(nameB);
    const len = ea.end - ea.begin;
    if (len !== eb.end - eb.begin) return false;
    const chunk = Math.min(len, READ_CHUNK_BYTES);
    const ba = new Uint8Array(chunk), bb = new Uint8Array(chunk);
    for (let done = 0; done < len; done += chunk) {
      const count = Math.min(chunk, len - done);
      await a.readRange(ea.begin + done, ba.subarray(0, count));
      await b.readRange(eb.begin + done, bb.subarray(0, count));
      if (!Buffer.from(ba.buffer, 0, count).equals(Buffer.from(bb.buffer, 0, count))) return false;
    }
    return true;
  }

  async close(): Promise<void> {
    await this.handle.close();
  }

  /** eachPart's reused read buffer, and whether a read is using it now. */
  private scratch: Uint8Array | undefined;
  private scratchBusy = false;

  private async readInto(e: SafetensorsEntry, dst: Uint8Array, onBytes?: (n: number) => void): Promise<void> {
    for (let done = 0; done < dst.length;) {
      const count = Math.min(READ_CHUNK_BYTES, dst.length - done);
      await this.readRange(e.begin + done, dst.subarray(done, done + count));
      done += count;
      onBytes?.(count);
    }
  }

  /** Fills `dst` from absolute file position `pos`; a short read (file shrank) is an error. */
  private async readRange(pos: number, dst: Uint8Array): Promise<void> {
    let filled = 0;
    while (filled < dst.length) {
      const { bytesRead } = await this.handle.read(dst, filled, dst.length - filled, pos + filled);
      if (bytesRead === 0) fail(this.path, `unexpected end of file at byte ${pos + filled} (file changed while reading?)`);
      filled += bytesRead;
    }
  }
}

async function readExactly(handle: FileHandle, file: string, pos: number, len: number): Promise<Uint8Array> {
  const buf = new Uint8Array(len);
  let filled = 0;
  while (filled < len) {
    const { bytesRead } = await handle.read(buf, filled, len - filled, pos + filled);
    if (bytesRead === 0) fail(file, `unexpected end of file at byte ${pos + filled}`);
    filled += bytesRead;
  }
  return buf;
}
