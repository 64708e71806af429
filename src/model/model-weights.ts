import type { Tensor } from '../interfaces/tensor-backend.js';

/** Canonical (classic Hugging Face) name → tensor, with a clear failure for a missing name. */
export class ModelWeights {
  constructor(private readonly map: ReadonlyMap<string, Tensor>) {}

  get(name: string): Tensor {
    const t = this.map.get(name);
    if (!t) throw new Error(`weight ${name} was not loaded`);
    return t;
  }

  has(name: string): boolean {
    return this.map.has(name);
  }
}
