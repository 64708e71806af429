import type { Tensor, TensorBackend } from '../interfaces/tensor-backend.js';

/** Collects intermediate tensors so one call frees them all (backends with device memory need it). */
export class TensorScope {
  private readonly live: Tensor[] = [];
  constructor(private readonly backend: TensorBackend) {}

  track<T extends Tensor>(t: T): T {
    this.live.push(t);
    return t;
  }

  /** Frees everything tracked except `keep`. */
  dispose(...keep: Tensor[]): void {
    this.backend.dispose(this.live.filter((t) => !keep.includes(t)));
    this.live.length = 0;
  }
}
