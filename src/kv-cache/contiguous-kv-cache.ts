/**
 * One preallocated [capacity, Hkv, D] key and value buffer per layer, filled in place with
 * writeRows. Allocated once per request; decoding never reallocates.
 */
import type { KVCache, KVCacheSpec, KVCacheStore } from '../interfaces/kv-cache-store.js';
import type { Tensor, TensorBackend } from '../interfaces/tensor-backend.js';

export class ContiguousKvCache implements KVCache {
  private readonly k: Tensor[];
  private readonly v: Tensor[];
  private committed = 0;

  constructor(private readonly backend: TensorBackend, private readonly spec: KVCacheSpec) {
    const shape = [spec.capacity, spec.kvHeads, spec.headDim];
    this.k = Array.from({ length: spec.layers }, () => backend.zeros(shape));
    this.v = Array.from({ length: spec.layers }, () => backend.zeros(shape));
  }

  get capacity(): number { return this.spec.capacity; }
  get length(): number { return this.committed; }

  write(layer: number, k: Tensor, v: Tensor): void {
    if (this.committed + k.shape[0] > this.spec.capacity) {
      throw new Error(`KV cache overflow: ${this.committed} + ${k.shape[0]} > capacity ${this.spec.capacity}`);
    }
    this.backend.writeRows(this.k[layer], k, this.committed);
    this.backend.writeRows(this.v[layer], v, this.committed);
  }

  keys(layer: number): Tensor { return this.k[layer]; }
  values(layer: number): Tensor { return this.v[layer]; }

  advance(t: number): void { this.committed += t; }
  reset(): void { this.committed = 0; }

  dispose(): void {
    this.backend.dispose([...this.k, ...this.v]);
    this.k.length = 0;
    this.v.length = 0;
  }
}

export class ContiguousKvCacheStore implements KVCacheStore {
  readonly name = 'contiguous';
  create(backend: TensorBackend, spec: KVCacheSpec): KVCache {
    return new ContiguousKvCache(backend, spec);
  }
}
