/**
 * Writes NumPy `.npz` archives (version 1.0 `.npy` entries, little-endian float32, C order),
 * as `np.savez` does, so tests can build VQ-VAE weight files in code.
 *
 * ```ts
 * const bytes = encodeNpz({ a: { data: new Float32Array(6), shape: [2, 3] } });
 * ```
 */
import { zipSync } from 'fflate';

export interface NpzTensor { data: Float32Array; shape: readonly number[] }

/** One `.npy` file: magic, version 1.0, u16 header length, dict header padded to 64 bytes. */
export function encodeNpy(t: NpzTensor): Uint8Array {
  const shape = t.shape.length === 1 ? `(${t.shape[0]},)` : `(${t.shape.join(', ')})`;
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': ${shape}, }`;
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const out = new Uint8Array(10 + header.length + t.data.byteLength);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]);
  new DataView(out.buffer).setUint16(8, header.length, true);
  for (let i = 0; i < header.length; i++) out[10 + i] = header.charCodeAt(i);
  out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), 10 + header.length);
  return out;
}

/** A `.npz` archive: one `<name>.npy` per tensor; `compress` deflates as np.savez_compressed. */
export function encodeNpz(tensors: Record<string, NpzTensor>, compress = false): Uint8Array {
  const files: Record<string, [Uint8Array, { level: 0 | 6 }]> = {};
  for (const [name, t] of Object.entries(tensors)) files[`${name}.npy`] = [encodeNpy(t), { level: compress ? 6 : 0 }];
  return zipSync(files);
}
