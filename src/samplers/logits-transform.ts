/**
 * A LogitsTransform reshapes next-token logits before a draw: temperature scales them, top-k and
 * top-p remove entries by setting them to -Infinity. Each is pure: it returns a new array and
 * never touches its input. Transforms compose in the order given (Hugging Face applies
 * temperature, then top-k, then top-p).
 */
import { PaliGemmaError } from '../interfaces/errors.js';

export interface LogitsTransform {
  /** e.g. 'temperature(0.7)', 'top-k(40)', 'top-p(0.9)'. */
  readonly name: string;
  /** A transformed copy of `logits`; removed entries are -Infinity. */
  apply(logits: Float32Array): Float32Array;
}

/** Temperature: a finite number ≥ 0 (0 means greedy). */
export function checkTemperature(t: number): number {
  if (typeof t !== 'number' || !Number.isFinite(t) || t < 0) {
    throw new PaliGemmaError(`invalid --temperature ${t}: expected a number ≥ 0`);
  }
  return t;
}

/** top-k: an integer ≥ 1. */
export function checkTopK(k: number): number {
  if (typeof k !== 'number' || !Number.isInteger(k) || k < 1) {
    throw new PaliGemmaError(`invalid --top-k ${k}: expected an integer ≥ 1`);
  }
  return k;
}

/** top-p: a number in (0, 1]. */
export function checkTopP(p: number): number {
  if (typeof p !== 'number' || !(p > 0 && p <= 1)) {
    throw new PaliGemmaError(`invalid --top-p ${p}: expected a number in (0, 1]`);
  }
  return p;
}

/** Index of the largest logit, the lowest index among equals; NaN never wins; 0 if none is > -Infinity. */
export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  let bestV = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i];
    if (v > bestV) { bestV = v; best = i; }
  }
  return best;
}
