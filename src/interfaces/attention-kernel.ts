/**
 * AttentionKernel: softmax(Q·Kᵀ·scale + mask) · V for one layer, grouped-query aware.
 *
 * Query head h reads kv head floor(h / (numHeads / numKvHeads)). Keys and values may be a
 * preallocated cache: only the first `kvLength` rows are valid. Query row i sits at absolute
 * sequence index `queryOffset + i` (0-based index into the key rows, not the RoPE position).
 *
 * ```ts
 * const out = kernel.attend(backend, q, k, v, {
 *   scale: 1 / Math.sqrt(headDim), mask: { kind: 'prefixLm', prefixLength: 260 },
 *   queryOffset: 0, kvLength: 262,
 * }); // q [Tq, Hq, D], k/v [Tmax, Hkv, D] → [Tq, Hq, D]
 * ```
 */
import type { ServiceIdentifier } from 'inversify';
import type { Tensor, TensorBackend } from './tensor-backend.js';

export const AttentionKernel: ServiceIdentifier<AttentionKernel> = Symbol('AttentionKernel');

/**
 * Which keys a query may see. With q = queryOffset + i and key index j < kvLength:
 * - bidirectional: every key;
 * - causal: j ≤ q;
 * - prefixLm: j < prefixLength, or j ≤ q (prompt bidirectional, suffix causal).
 */
export type AttentionMask =
  | { kind: 'bidirectional' }
  | { kind: 'causal' }
  | { kind: 'prefixLm'; prefixLength: number };

export interface AttentionOptions {
  /** Multiplies Q·Kᵀ (usually headDim^-0.5). */
  scale: number;
  mask: AttentionMask;
  /** Absolute index of the first query row among the keys. Default 0. */
  queryOffset?: number;
  /** Number of valid key/value rows. Default: all rows of k. */
  kvLength?: number;
  /** Gemma 2: scores ← cap · tanh(scores / cap) before masking. */
  softCap?: number;
  /** Gemma 2 local layers: a query also ignores keys more than `slidingWindow - 1` behind it. */
  slidingWindow?: number;
}

export interface AttentionKernel {
  readonly name: string;
  /** q [Tq, Hq, D], k/v [Tk, Hkv, D] → [Tq, Hq, D]. */
  attend(backend: TensorBackend, q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor;
}
