/**
 * tanh from the ops every TensorBackend has, for kernels that must soft-cap on any backend.
 *
 * tanh(x) = (eˣ − e⁻ˣ)/(eˣ + e⁻ˣ) = softmax([x, −x])₀ − softmax([x, −x])₁, and the backend's
 * softmax is the numerically stable one, so large |x| saturates to ±1 instead of overflowing.
 */
import type { Tensor, TensorBackend } from '../interfaces/tensor-backend.js';

/** Elementwise tanh of x (any shape). */
export function genericTanh(backend: TensorBackend, x: Tensor): Tensor {
  const shape = x.shape;
  const live: Tensor[] = [];
  const keep = (t: Tensor): Tensor => { live.push(t); return t; };
  const col = keep(backend.reshape(x, [...shape, 1]));                   // [..., 1]
  const neg = keep(backend.scale(col, -1));                              // [..., 1]
  const pair = keep(backend.concat([col, neg], shape.length));           // [..., 2]
  const p = keep(backend.softmax(pair));                                 // [..., 2]
  const p0 = keep(backend.slice(p, shape.length, 0, 1));                 // [..., 1]
  const p1 = keep(backend.scale(keep(backend.slice(p, shape.length, 1, 2)), -1));
  const diff = keep(backend.add(p0, p1));                                // [..., 1]
  const out = backend.reshape(diff, shape);
  backend.dispose(live.filter((t) => t !== out));
  return out;
}

/** cap · tanh(x / cap), Gemma 2's logit soft-cap. */
export function softCap(backend: TensorBackend, x: Tensor, cap: number): Tensor {
  const inner = backend.scale(x, 1 / cap);
  const t = genericTanh(backend, inner);
  backend.dispose(inner);
  const out = backend.scale(t, cap);
  backend.dispose(t);
  return out;
}
