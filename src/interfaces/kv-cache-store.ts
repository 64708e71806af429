/**
 * KVCacheStore: makes the per-request key/value cache. The cache is allocated once for the
 * whole request (prompt + max new tokens) and filled in place; decoding never reallocates.
 *
 * ```ts
 * const cache = store.create(backend, { layers: 18, kvHeads: 1, headDim: 256, capacity: 300 });
 * cache.write(layer, k, v);          // k, v [T, Hkv, D] at rows [cache.length, cache.length + T)
 * attend(q, cache.keys(layer), cache.values(layer), { kvLength: cache.length + T, ... });
 * cache.advance(T);                  // after every layer of the step has written
 * cache.dispose();
 * ```
 */
import type { ServiceIdentifier } from 'inversify';
import type { Tensor, TensorBackend } from './tensor-backend.js';

export const KVCacheStore: ServiceIdentifier<KVCacheStore> = Symbol('KVCacheStore');

export interface KVCacheSpec {
  layers: number;
  kvHeads: number;
  headDim: number;
  /** Maximum number of positions the request will hold. */
  capacity: number;
}

export interface KVCache {
  readonly capacity: number;
  /** Positions committed so far. */
  readonly length: number;
  /** Writes k/v [T, Hkv, D] for `layer` at rows [length, length + T). */
  write(layer: number, k: Tensor, v: Tensor): void;
  /** The layer's key buffer [capacity, Hkv, D]; rows past the valid length are garbage. */
  keys(layer: number): Tensor;
  values(layer: number): Tensor;
  /** Commits T positions once every layer has written them. */
  advance(t: number): void;
  /** Forgets every position, keeping the buffers. */
  reset(): void;
  dispose(): void;
}

export interface KVCacheStore {
  readonly name: string;
  create(backend: TensorBackend, spec: KVCacheSpec): KVCache;
}
