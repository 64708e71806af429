/**
 * Shape rules of the TensorBackend ops, checked once for every backend: each function validates
 * its operands' shapes, throws a message naming the op and the shapes, and returns the sizes the
 * op needs. Backends (built-in or plugins) call these instead of writing the checks again.
 */

export function sizeOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

/** a [M, K] · b [K, N] (or b [N, K] transposed) + bias [N]. */
export function matmulDims(
  a: readonly number[], b: readonly number[], transposeB = false, biasSize?: number,
): { m: number; k: number; n: number } {
  if (a.length !== 2 || b.length !== 2) throw new Error(`matmul expects 2-D tensors, got ${fmt(a)} and ${fmt(b)}`);
  const [m, k] = a;
  const [n, kb] = transposeB ? b : [b[1], b[0]];
  if (k !== kb) throw new Error(`matmul inner sizes differ: ${fmt(a)} · ${fmt(b)}${transposeB ? 'ᵀ' : ''}`);
  if (biasSize !== undefined && biasSize !== n) throw new Error(`matmul bias has ${biasSize} elements, expected ${n}`);
  return { m, k, n };
}

/** b must be a's shape or a's trailing dims (it repeats over a's leading dims). */
export function checkBroadcast(op: string, a: readonly number[], b: readonly number[]): void {
  if (broadcastKind(a, b) === undefined) throw new Error(`${op}: ${fmt(b)} does not broadcast onto ${fmt(a)}`);
}

/**
 * How b broadcasts onto a: 'trailing' (b is a's trailing dims, repeated over the leading ones;
 * a's own shape included) or 'rows' (a's shape with a last dim of 1: one value per row, as
 * `reduce` returns it); undefined when neither holds.
 */
export function broadcastKind(a: readonly number[], b: readonly number[]): 'trailing' | 'rows' | undefined {
  const tail = a.slice(a.length - b.length);
  if (b.length <= a.length && tail.every((d, i) => d === b[i])) return 'trailing';
  if (b.length === a.length && b[b.length - 1] === 1 && a.slice(0, -1).every((d, i) => d === b[i])) return 'rows';
  return undefined;
}

/** `reduce` over the last axis: x [..., D] → [..., 1]. */
export function reduceShape(x: readonly number[]): number[] {
  if (x.length === 0) throw new Error('reduce needs a tensor of rank ≥ 1, got a scalar');
  return [...x.slice(0, -1), 1];
}

/** A per-feature vector (norm weight, bias) of n elements. */
export function checkVector(what: string, size: number, n: number): void {
  if (size !== n) throw new Error(`${what} has ${size} elements, expected ${n}`);
}

/** x [T, H, D] with one position per row and an even D. */
export function ropeDims(x: readonly number[], positions: number): { t: number; h: number; d: number } {
  if (x.length !== 3) throw new Error(`rope expects [T, H, D], got ${fmt(x)}`);
  const [t, h, d] = x;
  if (positions !== t) throw new Error(`rope got ${positions} positions for ${t} rows`);
  if (d % 2 !== 0) throw new Error(`rope needs an even head size, got ${d}`);
  return { t, h, d };
}

/** table [V, H]; every id an integer in [0, V). */
export function embeddingDims(table: readonly number[], ids: ArrayLike<number>): { v: number; h: number } {
  if (table.length !== 2) throw new Error(`embedding expects a [V, H] table, got ${fmt(table)}`);
  const [v, h] = table;
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (!Number.isInteger(id) || id < 0 || id >= v) throw new Error(`token id ${id} is outside the vocabulary of ${v}`);
  }
  return { v, h };
}

/** Output shape of concatenating `shapes` along `axis`. */
export function concatShape(shapes: ReadonlyArray<readonly number[]>, axis: number): number[] {
  if (shapes.length === 0) throw new Error('concat needs at least one tensor');
  const first = shapes[0];
  if (!Number.isInteger(axis) || axis < 0 || axis >= first.length) {
    throw new Error(`concat: axis ${axis} is out of range for rank ${first.length}`);
  }
  for (const s of shapes) {
    if (s.length !== first.length || s.some((d, i) => i !== axis && d !== first[i])) {
      throw new Error(`concat: ${fmt(s)} does not match ${fmt(first)} off axis ${axis}`);
    }
  }
  const out = [...first];
  out[axis] = shapes.reduce((sum, s) => sum + s[axis], 0);
  return out;
}

/** Output shape of rows [start, end) along `axis`. */
export function sliceShape(x: readonly number[], axis: number, start: number, end: number): number[] {
  if (!Number.isInteger(axis) || axis < 0 || axis >= x.length) {
    throw new Error(`slice: axis ${axis} is out of range for ${fmt(x)}`);
  }
  if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > x[axis] || start > end) {
    throw new Error(`slice: [${start}, ${end}) along axis ${axis} is outside ${fmt(x)}`);
  }
  const out = [...x];
  out[axis] = end - start;
  return out;
}

export function checkReshape(from: readonly number[], to: readonly number[]): void {
  if (sizeOf(from) !== sizeOf(to)) {
    throw new Error(`reshape: ${fmt(from)} has ${sizeOf(from)} elements, ${fmt(to)} needs ${sizeOf(to)}`);
  }
}

/** Output shape of permuting x's axes by `perm`. */
export function transposeShape(x: readonly number[], perm: readonly number[]): number[] {
  const seen = new Set(perm);
  if (perm.length !== x.length || seen.size !== perm.length || perm.some((p) => !Number.isInteger(p) || p < 0 || p >= x.length)) {
    throw new Error(`transpose: [${perm}] is not a permutation of rank ${x.length}`);
  }
  return perm.map((p) => x[p]);
}

/** src rows fit dst's rows at `offset` (same row size). */
export function checkWriteRows(dst: readonly number[], src: readonly number[], offset: number): void {
  if (sizeOf(dst.slice(1)) !== sizeOf(src.slice(1)) || !Number.isInteger(offset) || offset < 0 || offset + src[0] > dst[0]) {
    throw new Error(`writeRows: ${fmt(src)} does not fit ${fmt(dst)} at row ${offset}`);
  }
}

/** pixels [C, H, W], weight [O, C, P, P], bias [O], H and W multiples of P. */
export function patchEmbedDims(
  pixels: readonly number[], weight: readonly number[], biasSize: number, patch: number,
): { c: number; h: number; w: number; o: number; gh: number; gw: number } {
  if (pixels.length !== 3 || weight.length !== 4) {
    throw new Error(`patchEmbed expects pixels [C, H, W] and weight [O, C, P, P], got ${fmt(pixels)} and ${fmt(weight)}`);
  }
  const [c, h, w] = pixels;
  const o = weight[0];
  if (weight[1] !== c || weight[2] !== patch || weight[3] !== patch || h % patch !== 0 || w % patch !== 0) {
    throw new Error(`patchEmbed: weight ${fmt(weight)} and patch ${patch} do not fit pixels ${fmt(pixels)}`);
  }
  checkVector('patchEmbed bias', biasSize, o);
  return { c, h, w, o, gh: h / patch, gw: w / patch };
}

/** q [Tq, Hq, D], k/v [Tk, Hkv, D] with Hq a multiple of Hkv, and 1 ≤ kvLength ≤ Tk. */
export function attentionDims(
  q: readonly number[], k: readonly number[], v: readonly number[], kvLength = k[0],
): { tq: number; hq: number; d: number; tk: number; hkv: number; kvLength: number } {
  if (q.length !== 3 || k.length !== 3 || v.length !== 3) {
    throw new Error(`attention expects q [Tq, Hq, D] and k/v [Tk, Hkv, D], got ${fmt(q)}, ${fmt(k)}, ${fmt(v)}`);
  }
  const [tq, hq, d] = q;
  const [tk, hkv] = k;
  if (k[2] !== d || v[0] !== tk || v[1] !== hkv || v[2] !== d) {
    throw new Error(`attention: q ${fmt(q)}, k ${fmt(k)} and v ${fmt(v)} do not fit together`);
  }
  if (hkv === 0 || hq % hkv !== 0) throw new Error(`attention: ${hq} query heads cannot share ${hkv} kv heads evenly`);
  if (!Number.isInteger(kvLength) || kvLength < 1 || kvLength > tk) {
    throw new Error(`attention: kvLength ${kvLength} is outside 1..${tk}`);
  }
  return { tq, hq, d, tk, hkv, kvLength };
}
