/**
 * How the onnx backend holds weights that are not plain float32 (Storage encodings), and how
 * their float32 values come back on the host: f16 bits; bf16 kept as f16 where exact with the
 * rest as exact float32 patches (for 1-D tensors and when the half memory is off); the half
 * memory's bits; int8 per-channel and MatMulNBits codes.
 */
import { bf16ToF32, f16ToF32 } from '../../tensor/dtype.js';
import { dequantizeBlockwise } from '../../tensor/block-quantization.js';
import { sizeOf } from '../../tensor/op-shapes.js';
import { bf16ToPatchedF16 } from './bf16-to-f16.js';
import { DataLeaf, Storage } from './onnx-graph.js';

/** A bf16 upload keeps f16 storage when at most this fraction of its elements need a patch. */
const MAX_PATCH_FRACTION = 1 / 64;

export function f16Storage(bits: Uint16Array, shape: readonly number[]): Storage {
  const s = new Storage(bits, [...shape]);
  s.elemType = 'float16';
  s.encoding = { kind: 'f16' };
  return s;
}

/**
 * bf16 bits → f16 storage where exact: every bf16 value with a magnitude in f16's normal range
 * fits (7 mantissa bits in 10); the rest (below ~7.6e-6, above 65504, NaN) are kept as exact
 * float32 patches. Past MAX_PATCH_FRACTION patched elements, the tensor is widened to float32.
 */
export function bf16Storage(bits: Uint16Array, shape: readonly number[]): Storage {
  const p = bf16ToPatchedF16(bits, bits.length * MAX_PATCH_FRACTION);
  if (!p) return new Storage(bf16ToF32(bits), [...shape]);
  const { half, index, values } = p;
  // Patched slots hold 0: every reader either overwrites them with the exact value or adds
  // value·x on top (addPatchProducts), which an f16 rounding (±Inf for huge values) would spoil.
  for (const i of index) half[i] = 0;
  const s = f16Storage(half, shape);
  if (index.length) {
    s.encoding = {
      kind: 'f16',
      patches: {
        index: new DataLeaf(BigInt64Array.from(index, (i) => BigInt(i)), [index.length, 1], 'int64'),
        values: new DataLeaf(values, [values.length], 'float32'),
        count: index.length,
      },
    };
  }
  return s;
}

/** A bf16 weight's patches as matmul terms: B[k, n] (or Bᵀ) = value, all other elements 0. */
export interface PatchProducts {
  /** Column of x each patch multiplies, int64 [P]. */
  k: DataLeaf;
  /** Output column each patch adds to, int64 [1, P]. */
  n: DataLeaf;
  /** float32 [P]. */
  values: DataLeaf;
}

/**
 * The patches of a bf16-as-f16 storage that fall in the flat range starting at `first` and
 * covering a `shape` [rows, cols] view of it (B [N, K] when `transposed`, else [K, N]), as
 * PatchProducts; undefined when none do. Built once per storage and range.
 */
const patchProductCache = new WeakMap<Storage, Map<string, PatchProducts | undefined>>();
export function patchProducts(s: Storage, first: number, shape: readonly [number, number], transposed: boolean): PatchProducts | undefined {
  const p = s.encoding?.kind === 'f16' ? s.encoding.patches : undefined;
  if (!p) return undefined;
  let cache = patchProductCache.get(s);
  if (!cache) patchProductCache.set(s, (cache = new Map()));
  const key = `${first}:${shape.join('x')}:${transposed ? 't' : 'n'}`;
  if (cache.has(key)) return cache.get(key);
  const [rows, cols] = shape;
  const idx = p.index.data as BigInt64Array, vals = p.values.data as Float32Array;
  const k: bigint[] = [], n: bigint[] = [], v: number[] = [];
  for (let i = 0; i < idx.length; i++) {
    const at = Number(idx[i]) - first;
    if (at < 0 || at >= rows * cols) continue;
    const r = Math.floor(at / cols), c = at % cols;
    k.push(BigInt(transposed ? c : r));
    n.push(BigInt(transposed ? r : c));
    v.push(vals[i]);
  }
  const out = v.length === 0 ? undefined : {
    k: new DataLeaf(BigInt64Array.from(k), [k.length], 'int64'),
    n: new DataLeaf(BigInt64Array.from(n), [1, n.length], 'int64'),
    values: new DataLeaf(Float32Array.from(v), [v.length], 'float32'),
  };
  cache.set(key, out);
  return out;
}

/** Per-row ranges into a patched f16 table's (ascending) patch list, built once per table and row size. */
const rowIndexCache = new WeakMap<Storage, { h: number; start: Int32Array; maxPerRow: number }>();
export function rowPatchIndex(s: Storage, h: number): { start: Int32Array; maxPerRow: number } {
  const hit = rowIndexCache.get(s);
  if (hit && hit.h === h) return hit;
  const enc = s.encoding as Extract<Storage['encoding'], { kind: 'f16' }>;
  const rows = sizeOf(s.shape) / h;
  const start = new Int32Array(rows + 1);
  const idx = enc.patches!.index.data as BigInt64Array;
  for (const i of idx) start[Math.floor(Number(i) / h) + 1]++;
  let maxPerRow = 0;
  for (let r = 0; r < rows; r++) { maxPerRow = Math.max(maxPerRow, start[r + 1]); start[r + 1] += start[r]; }
  const entry = { h, start, maxPerRow };
  rowIndexCache.set(s, entry);
  return entry;
}

/** The exact float32 value of element i of an f16 (possibly patched) storage. */
export function exactElement(s: Storage, i: number): number {
  const p = (s.encoding as Extract<Storage['encoding'], { kind: 'f16' }>).patches;
  if (p) {
    const idx = p.index.data as BigInt64Array;
    for (let j = 0; j < idx.length; j++) if (Number(idx[j]) === i) return (p.values.data as Float32Array)[j];
  }
  return f16ToF32((s.data as Uint16Array).subarray(i, i + 1))[0];
}

/** The float32 values of an encoded storage, row-major in its logical shape. */
export function hostValues(s: Storage): Float32Array {
  const enc = s.encoding!;
  if (enc.kind === 'half') {
    const out = new Float32Array(enc.placed.length);
    enc.memory.widen(enc.placed, 0, enc.placed.length, out);
    return out;
  }
  if (enc.kind === 'f16') {
    const out = f16ToF32(s.data as Uint16Array);
    if (enc.patches) {
      const idx = enc.patches.index.data as BigInt64Array, vals = enc.patches.values.data as Float32Array;
      for (let j = 0; j < idx.length; j++) out[Number(idx[j])] = vals[j];
    }
    return out;
  }
  if (enc.kind === 'nbits') return dequantizeBlockwise(enc.weight.q);
  const q = s.data as Int8Array, scales = enc.scales.data as Float32Array;
  const out = new Float32Array(enc.n * enc.k);
  for (let kk = 0; kk < enc.k; kk++) {
    for (let nn = 0; nn < enc.n; nn++) out[nn * enc.k + kk] = q[kk * enc.n + nn] * scales[nn];
  }
  return out;
}

