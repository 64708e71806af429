/**
 * Writes safetensors files for tests and tiny checkpoints: 8-byte little-endian header length,
 * JSON header padded with spaces to a multiple of 8, then the tensors back to back.
 *
 * ```ts
 * await writeSafetensors('w.safetensors', { a: { data: new Float32Array([1, 2]), shape: [2], dtype: 'BF16' } });
 * ```
 */
import { writeFile } from 'node:fs/promises';
import { f32ToBf16, f32ToF16 } from '../tensor/dtype.js';

export type WriterDtype = 'F32' | 'F16' | 'BF16';

export interface WriterTensor {
  data: Float32Array;
  shape: number[];
  /** Stored dtype (default F32); values are rounded to nearest even when narrowed. */
  dtype?: WriterDtype;
}

/** The stored bytes of one tensor. */
export function tensorBytes(data: Float32Array, dtype: WriterDtype = 'F32'): Uint8Array {
  const stored = dtype === 'F32' ? data : dtype === 'BF16' ? f32ToBf16(data) : f32ToF16(data);
  return new Uint8Array(stored.buffer, stored.byteOffset, stored.byteLength);
}

/** A whole file from a header (object or verbatim text) and data bytes; no checks, for corrupt-file tests. */
export function rawSafetensors(header: object | string, data: Uint8Array = new Uint8Array(0), headerLength?: bigint): Uint8Array {
  let text = typeof header === 'string' ? header : JSON.stringify(header);
  if (typeof header !== 'string') while ((8 + Buffer.byteLength(text)) % 8 !== 0) text += ' ';
  const json = Buffer.from(text, 'utf8');
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, headerLength ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

/** Encodes tensors (in the given order) into safetensors bytes. */
export function encodeSafetensors(tensors: Record<string, WriterTensor>, metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  const parts: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (n !== t.data.length) throw new Error(`writeSafetensors: ${name} has ${t.data.length} values for shape [${t.shape}]`);
    const bytes = tensorBytes(t.data, t.dtype);
    header[name] = { dtype: t.dtype ?? 'F32', shape: t.shape, data_offsets: [offset, offset + bytes.length] };
    parts.push(bytes);
    offset += bytes.length;
  }
  const data = new Uint8Array(offset);
  let at = 0;
  for (const p of parts) { data.set(p, at); at += p.length; }
  return rawSafetensors(header, data);
}

export async function writeSafetensors(
  path: string, tensors: Record<string, WriterTensor>, metadata?: Record<string, string>,
): Promise<void> {
  await writeFile(path, encodeSafetensors(tensors, metadata));
}
