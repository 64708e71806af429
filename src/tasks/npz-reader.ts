/**
 * Reader for NumPy's `.npz` archives (what `np.savez` / `np.savez_compressed` write): a ZIP of
 * `.npy` files, one per array, named `<key>.npy`. Only little-endian float arrays in C order are
 * read (`<f4`, `<f8`, `<f2`), widened or narrowed to float32; anything else is refused by name.
 *
 * `.npy` layout: magic `\x93NUMPY`, major and minor version bytes, a header length (u16 LE in
 * version 1, u32 LE in versions 2 and 3), then a Python dict literal such as
 * `{'descr': '<f4', 'fortran_order': False, 'shape': (128, 512), }`, padded, then the data.
 *
 * ```ts
 * const arrays = readNpz(await readFile('vae-oid.npz'), 'vae-oid.npz');
 * arrays.get('_vq_vae._embedding');   // { data: Float32Array, shape: [128, 512] }
 * ```
 */
import { unzipSync } from 'fflate';
import { PaliGemmaError } from '../interfaces/errors.js';
import { f16ToF32 } from '../tensor/dtype.js';

export interface NpyArray {
  data: Float32Array;
  shape: number[];
}

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59];   // \x93NUMPY

function fail(source: string, problem: string): never {
  throw new PaliGemmaError(`${source}: ${problem}`, 'corrupt_checkpoint');
}

/** Parses one `.npy` file's bytes. `source` names it in errors. */
export function readNpy(bytes: Uint8Array, source: string): NpyArray {
  if (bytes.length < 10 || MAGIC.some((b, i) => bytes[i] !== b)) fail(source, 'not a .npy array (bad magic)');
  const major = bytes[6];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let headerLen: number, start: number;
  if (major === 1) { headerLen = view.getUint16(8, true); start = 10; }
  else if (major === 2 || major === 3) {
    if (bytes.length < 12) fail(source, 'truncated .npy header');
    headerLen = view.getUint32(8, true); start = 12;
  } else fail(source, `unsupported .npy version ${major}`);
  if (start + headerLen > bytes.length) fail(source, 'truncated .npy header');
  const header = new TextDecoder(major === 3 ? 'utf-8' : 'latin1').decode(bytes.subarray(start, start + headerLen));
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(header)?.[1];
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape'\s*:\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) fail(source, `cannot parse .npy header ${JSON.stringify(header.trim())}`);
  if (fortran === 'True') fail(source, 'array is stored in Fortran order; save it in C order (np.ascontiguousarray)');
  const shape = shapeText.split(',').map((s) => s.trim()).filter((s) => s !== '').map(Number);
  if (shape.some((d) => !Number.isSafeInteger(d) || d < 0)) fail(source, `bad shape (${shapeText})`);
  const n = shape.reduce((a, b) => a * b, 1);
  const itemBytes: Record<string, number> = { '<f4': 4, '<f8': 8, '<f2': 2 };
  const size = itemBytes[descr];
  if (size === undefined) fail(source, `dtype ${descr} is not supported (expected little-endian float: <f4, <f8 or <f2)`);
  const dataStart = start + headerLen;
  if (bytes.length - dataStart < n * size) fail(source, `data holds ${bytes.length - dataStart} bytes, shape (${shape.join(', ')}) of ${descr} needs ${n * size} (truncated?)`);
  // Copy out: the zip entry's bytes need not be aligned for a typed view.
  const raw = bytes.slice(dataStart, dataStart + n * size);
  let data: Float32Array;
  if (descr === '<f4') data = new Float32Array(raw.buffer, 0, n);
  else if (descr === '<f8') data = Float32Array.from(new Float64Array(raw.buffer, 0, n));
  else { data = new Float32Array(n); f16ToF32(new Uint16Array(raw.buffer, 0, n), data); }
  return { data, shape };
}

/** Every array of an `.npz` archive by key (file name without `.npy`). */
export function readNpz(bytes: Uint8Array, source: string): Map<string, NpyArray> {
  let files: Record<string, Uint8Array>;
  try {
    files = unzipSync(bytes);
  } catch (e) {
    fail(source, `not a readable .npz (ZIP) archive: ${(e as Error).message}`);
  }
  const out = new Map<string, NpyArray>();
  for (const [name, content] of Object.entries(files)) {
    if (!name.endsWith('.npy')) continue;
    const key = name.slice(0, -4);
    out.set(key, readNpy(content, `${source} [${key}]`));
  }
  return out;
}
