/**
 * Query-block tiling for attention kernels that materialise scores: rows [start, end) of the
 * queries are attended one block at a time, so a layer holds the scores of one block
 * ([heads, rows, keys]) instead of all of them ([heads, T, T]: 1 GiB per SigLIP layer at 896 px,
 * 16 heads × 4096²). Each query row's softmax runs over all of its keys either way, so tiling
 * over queries changes no arithmetic: every output row is computed exactly as before.
 */
import { PaliGemmaError } from '../interfaces/errors.js';

/**
 * Default score elements per block (heads × rows × keys): 2²² float32 = 16 MiB. Prompts up to
 * a few hundred rows (224 px) fit in one block; 896 px takes blocks of 64 query rows.
 */
export const DEFAULT_ATTENTION_BLOCK_ELEMENTS = 1 << 22;

/**
 * [start, end) row ranges covering 0..tq, each holding at most `maxElements` score elements
 * (at least one row per block). `maxElements` 0 or Infinity: one block (no tiling).
 */
export function queryBlocks(tq: number, heads: number, keys: number, maxElements = DEFAULT_ATTENTION_BLOCK_ELEMENTS): Array<[number, number]> {
  const perRow = Math.max(1, heads * keys);
  const rows = maxElements > 0 && Number.isFinite(maxElements) ? Math.max(1, Math.floor(maxElements / perRow)) : tq;
  const out: Array<[number, number]> = [];
  for (let s = 0; s < tq; s += rows) out.push([s, Math.min(tq, s + rows)]);
  return out.length ? out : [[0, tq]];
}

/** A backend option's block size: a non-negative integer (0 = no tiling), else a PaliGemmaError naming it. */
export function blockElementsOption(value: unknown, where: string): number {
  if (value === undefined) return DEFAULT_ATTENTION_BLOCK_ELEMENTS;
  const n = typeof value === 'string' && value.trim() !== '' ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0) {
    throw new PaliGemmaError(`${where}: attentionBlockElements must be a non-negative integer (0: no tiling), got ${JSON.stringify(value)}`, 'invalid_option');
  }
  return n;
}
