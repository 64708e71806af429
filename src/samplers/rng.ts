/**
 * Seeded pseudo-random numbers for sampling: xoshiro128** seeded through splitmix32, so that
 * nearby seeds (0, 1, 2 …) give unrelated streams. Same seed, same draws, on every platform.
 *
 * ```ts
 * const rng = seededRng(42);
 * rng.next();   // uniform in [0, 1), 53 bits
 * ```
 */
import type { Rng } from '../interfaces/sampler.js';

export type { Rng } from '../interfaces/sampler.js';

export interface SeededRng extends Rng {
  /** Uniform in [0, 1) with 53 random bits. */
  next(): number;
  /** The next raw 32-bit output. */
  nextUint32(): number;
}

/** splitmix32 step: returns [output, next state]. */
function splitmix32(state: number): [number, number] {
  const s = (state + 0x9e3779b9) | 0;
  let z = s;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return [(z ^ (z >>> 16)) >>> 0, s];
}

/** Folds any JS number (negative, fractional, beyond 2^32) into 32 bits without losing bits. */
function foldSeed(seed: number): number {
  if (!Number.isFinite(seed)) throw new RangeError(`seed must be a finite number, got ${seed}`);
  if (Number.isInteger(seed) && seed >= 0 && seed <= 0xffffffff) return seed >>> 0;
  const f = new Float64Array([seed]);
  const w = new Uint32Array(f.buffer);
  let [h] = splitmix32(w[0] ^ 0x5bd1e995);
  [h] = splitmix32(h ^ w[1]);
  return h;
}

export function seededRng(seed: number): SeededRng {
  let st = foldSeed(seed);
  const s = new Uint32Array(4);
  for (let i = 0; i < 4; i++) [s[i], st] = splitmix32(st);
  if ((s[0] | s[1] | s[2] | s[3]) === 0) s[0] = 1; // the all-zero state is a fixed point

  const nextUint32 = (): number => {
    const r = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return r;
  };
  return {
    nextUint32,
    next: () => ((nextUint32() >>> 5) * 67108864 + (nextUint32() >>> 6)) / 9007199254740992,
  };
}

const rotl = (x: number, k: number): number => (x << k) | (x >>> (32 - k));
