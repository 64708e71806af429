/**
 * Dispatches shared by several ops: fill, a strided copy (concat, slice, bias broadcast) and
 * the tiled matmul (matmul, patchEmbed), recorded on buffers the caller has allocated.
 */
import { flatGrid } from './dispatch-grid.js';
import type { GpuRecorder } from './gpu-recorder.js';
import {
  TILE_LARGE, TILE_SKINNY, matmulShader, stridedCopyShader, unaryShader, type MatmulTile, type StorageKind,
} from './shaders.js';
import { f32 } from './uniform-arena.js';
import type { GpuBufferRecord } from './webgpu-tensor.js';

export function recordFill(rec: GpuRecorder, record: GpuBufferRecord, n: number, value: number): void {
  rec.dispatch('fill', () => unaryShader('fill'), [n, f32(value)], [record], flatGrid(n));
}

/** `outer` rows of `inner` elements from src (row stride srcStride, at srcOff) to dst. */
export function recordStridedCopy(
  rec: GpuRecorder, src: GpuBufferRecord, dst: GpuBufferRecord, outer: number, inner: number,
  srcStride: number, srcOff: number, dstStride: number, dstOff: number,
): void {
  const n = outer * inner;
  if (n === 0) return;
  rec.dispatch('copy', () => stridedCopyShader, [n, inner, srcStride, srcOff, dstStride, dstOff], [src, dst], flatGrid(n));
}

/** out [M, N] = a [M, K] · b (+ bias): a, bias and out f32; b stored as `bKind`. */
export function recordMatmul(
  rec: GpuRecorder, a: GpuBufferRecord, b: GpuBufferRecord, bKind: StorageKind, bias: GpuBufferRecord | undefined,
  out: GpuBufferRecord, m: number, k: number, n: number, transposeB: boolean,
): void {
  if (m * n === 0) return;
  if (k === 0) {
    if (bias) recordStridedCopy(rec, bias, out, m, n, 0, 0, n, 0);
    else recordFill(rec, out, m * n, 0);
    return;
  }
  const tile: MatmulTile = m <= TILE_SKINNY.wy * TILE_SKINNY.rm ? TILE_SKINNY : TILE_LARGE;
  const tm = tile.wy * tile.rm, tn = tile.wx * tile.rn;
  const key = `matmul:${tm}x${tn}:${transposeB ? 't' : 'n'}:${bias ? 'b' : '-'}:${bKind}`;
  const gx = Math.ceil(n / tn), gy = Math.ceil(m / tm);
  if (gx > 65535 || gy > 65535) throw new Error(`matmul [${m}, ${k}]·[${k}, ${n}] exceeds the dispatch grid`);
  rec.dispatch(key, () => matmulShader(tile, transposeB, bias !== undefined, bKind), [m, n, k],
    bias ? [a, b, bias, out] : [a, b, out], [gx, gy, 1]);
}
