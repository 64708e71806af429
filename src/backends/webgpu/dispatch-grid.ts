/** Workgroup grids and the small layout helpers the kernels' parameters need. */
import { FLAT_WG } from './shaders.js';

/** Workgroups for n elements, FLAT_WG per group, folded into 2-D past 65535. */
export function flatGrid(n: number): number[] {
  return groupGrid(Math.ceil(n / FLAT_WG));
}

export function groupGrid(groups: number): number[] {
  if (groups <= 65535) return [groups, 1, 1];
  return [65535, Math.ceil(groups / 65535), 1];
}

export function lastDim(t: { readonly shape: readonly number[] }): number {
  return t.shape[t.shape.length - 1] ?? 1;
}

/** Row-major strides of `shape`. */
export function strides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let d = shape.length - 1; d >= 0; d--) { s[d] = acc; acc *= shape[d]; }
  return s;
}

/** 16-bit bits padded to whole u32 words (writeBuffer copies multiples of 4 bytes). */
export function wholeWords(bits: Uint16Array): Uint16Array {
  if (bits.length % 2 === 0) return bits;
  const out = new Uint16Array(bits.length + 1);
  out.set(bits);
  return out;
}
