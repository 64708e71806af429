/**
 * Seeded inputs for the conformance cases. Its own generator (mulberry32) rather than the
 * samplers' RNG, so a case's inputs never change when sampling code does: a failure reported
 * as "softmax / logits +80±20" reproduces on any later version.
 */
import type { DType } from '../interfaces/tensor-backend.js';

export class SeededData {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** n values uniform in [lo, hi). */
  uniform(n: number, lo = -1, hi = 1): Float32Array {
    return Float32Array.from({ length: n }, () => lo + (hi - lo) * this.next());
  }

  /** n values from N(mean, std²) (Box–Muller). */
  normal(n: number, std = 1, mean = 0): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const u = 1 - this.next(), v = this.next();
      out[i] = mean + std * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
    }
    return out;
  }

  /** n integers in [lo, hi). */
  ints(n: number, lo: number, hi: number): Int32Array {
    return Int32Array.from({ length: n }, () => lo + Math.floor((hi - lo) * this.next()));
  }
}

/** Per-case seed from the case name, so adding a case never changes another's inputs. */
export function seedOf(name: string): number {
  let h = 2166136261;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
  return h >>> 0;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Raw 16-bit storage of each value (rounded to nearest) and the float32 values those bits mean. */
export function toHalfBits(values: Float32Array, dtype: Exclude<DType, 'f32'>): { bits: Uint16Array; values: Float32Array } {
  const bits = new Uint16Array(values.length);
  const exact = new Float32Array(values.length);
  for (let i = 0; i < values.length; i++) {
    bits[i] = dtype === 'bf16' ? bf16Bits(values[i]) : f16Bits(values[i]);
    exact[i] = dtype === 'bf16' ? bf16Value(bits[i]) : f16Value(bits[i]);
  }
  return { bits, values: exact };
}

function bf16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0];
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

function bf16Value(bits: number): number {
  u32[0] = bits << 16;
  return f32[0];
}

/** Finite values within f16 range; subnormals included. */
function f16Bits(x: number): number {
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a === 0) return sign;
  let e = Math.floor(Math.log2(a));
  if (e < -14) return sign | Math.round(a / 2 ** -24);
  let m = Math.round((a / 2 ** e - 1) * 1024);
  if (m === 1024) { m = 0; e++; }
  if (e > 15) throw new Error(`${x} is outside the f16 range`);
  return sign | ((e + 15) << 10) | m;
}

function f16Value(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const e = (bits >>> 10) & 0x1f, m = bits & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}
