/**
 * A bounded LRU of image rows (projector output [N, H]) keyed by the hash of the image's bytes:
 * an image seen before skips decoding, resizing and the vision tower. The cache owns the
 * tensors and frees them on eviction. Rows are the same whatever the prompt, so this is exact;
 * the prefix KV is not (the prompt attends to the image), and is never shared across prompts.
 */
import { createHash } from 'node:crypto';
import type { Tensor, TensorBackend } from '../interfaces/tensor-backend.js';

export const imageKey = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

export class VisionCache {
  private readonly entries = new Map<string, Tensor>();
  hits = 0;
  misses = 0;

  constructor(private readonly backend: TensorBackend, readonly maxEntries: number) {}

  get size(): number { return this.entries.size; }

  /** The rows for `key`, now the most recently used; counts a hit or a miss. */
  get(key: string): Tensor | undefined {
    const rows = this.entries.get(key);
    if (rows === undefined) { this.misses++; return undefined; }
    this.hits++;
    this.entries.delete(key);
    this.entries.set(key, rows);
    return rows;
  }

  /** True when `key` is held, without counting or reordering. */
  has(key: string): boolean { return this.entries.has(key); }

  /** Takes ownership of `rows`; evicts the least recently used beyond maxEntries. */
  set(key: string, rows: Tensor): void {
    const old = this.entries.get(key);
    if (old !== undefined && old !== rows) this.backend.dispose(old);
    this.entries.delete(key);
    this.entries.set(key, rows);
    while (this.entries.size > this.maxEntries) {
      const [oldest, t] = this.entries.entries().next().value as [string, Tensor];
      this.entries.delete(oldest);
      this.backend.dispose(t);
    }
  }

  clear(): void {
    for (const t of this.entries.values()) this.backend.dispose(t);
    this.entries.clear();
  }
}
