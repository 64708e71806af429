/**
 * VQ-VAE mask-decoder weight sets built in code, in the layout of Google's `vae-oid.npz`
 * (PyTorch names and shapes; see src/tasks/vae-weights.ts):
 *
 * - `randomVaeTensors`: seeded He-scaled random weights, for pinning the decoder against an
 *   independent implementation;
 * - `smoothVaeTensors`: hand-set weights whose decoder output is readable: code c puts the
 *   value c / 127 in one channel of its 4×4 grid cell, the residual blocks add nothing, each
 *   transposed conv is a bilinear ×2 upsampler ([¼ ¾ ¾ ¼] ⊗ [¼ ¾ ¾ ¼], which is exactly what a
 *   4×4 stride-2 padding-1 kernel needs for that), and the last conv subtracts ½. So the mask
 *   is the 4×4 grid of c / 127 - ½, upsampled smoothly to 64×64: codes ≥ 64 mark inside.
 */
import { gaussian, mulberry32 } from '../tiny-models/random-weights.js';
import type { NpzTensor } from './npz-writer.js';

export interface VaeShape { codes?: number; dim?: number; channels?: number }

function layerShapes(s: Required<VaeShape>): Array<[string, number[]]> {
  const c = s.channels;
  const out: Array<[string, number[]]> = [['_vq_vae._embedding', [s.codes, s.dim]], ['decoder.0', [c, s.dim, 1, 1]]];
  for (const b of ['decoder.2.net', 'decoder.3.net']) out.push([`${b}.0`, [c, c, 3, 3]], [`${b}.2`, [c, c, 3, 3]], [`${b}.4`, [c, c, 1, 1]]);
  out.push(['decoder.4', [c, c, 4, 4]], ['decoder.6', [c, c / 2, 4, 4]], ['decoder.8', [c / 2, c / 4, 4, 4]], ['decoder.10', [c / 4, c / 8, 4, 4]]);
  out.push(['decoder.12', [1, c / 8, 1, 1]]);
  return out;
}

const DEFAULTS: Required<VaeShape> = { codes: 128, dim: 32, channels: 128 };

/** Random decoder weights (no encoder), He-scaled so activations neither vanish nor explode. */
export function randomVaeTensors(seed: number, shape: VaeShape = {}): Record<string, NpzTensor> {
  const s = { ...DEFAULTS, ...shape };
  const g = gaussian(mulberry32(seed));
  const out: Record<string, NpzTensor> = {};
  for (const [name, sh] of layerShapes(s)) {
    const n = sh.reduce((a, b) => a * b, 1);
    if (name === '_vq_vae._embedding') {
      out[name] = { data: Float32Array.from({ length: n }, () => g()), shape: sh };
      continue;
    }
    const transposed = /decoder\.(4|6|8|10)$/.test(name);
    // Fan-in: Conv2d sums over in·k·k; a stride-2 transposed conv sums over in·(k/2)².
    const fanIn = transposed ? sh[0] * 4 : sh[1] * sh[2] * sh[3];
    const std = Math.sqrt(2 / fanIn);
    out[`${name}.weight`] = { data: Float32Array.from({ length: n }, () => g() * std), shape: sh };
    const o = transposed ? sh[1] : sh[0];
    out[`${name}.bias`] = { data: Float32Array.from({ length: o }, () => g() * 0.1), shape: [o] };
  }
  return out;
}

/** The readable decoder described above. */
export function smoothVaeTensors(shape: VaeShape = {}): Record<string, NpzTensor> {
  const s = { ...DEFAULTS, ...shape };
  const out: Record<string, NpzTensor> = {};
  for (const [name, sh] of layerShapes(s)) {
    const n = sh.reduce((a, b) => a * b, 1);
    if (name === '_vq_vae._embedding') {
      const cb = new Float32Array(n);
      for (let c = 0; c < s.codes; c++) cb[c * s.dim] = c / (s.codes - 1);
      out[name] = { data: cb, shape: sh };
      continue;
    }
    const transposed = /decoder\.(4|6|8|10)$/.test(name);
    const w = new Float32Array(n);
    const o = transposed ? sh[1] : sh[0];
    const bias = new Float32Array(o);
    if (name === 'decoder.0') w[0] = 1;                       // channel 0 ← embedding[0]
    if (transposed) {
      const taps = [0.25, 0.75, 0.75, 0.25];
      for (let ky = 0; ky < 4; ky++) for (let kx = 0; kx < 4; kx++) w[ky * 4 + kx] = taps[ky] * taps[kx];   // [in 0, out 0]
    }
    if (name === 'decoder.12') { w[0] = 1; bias[0] = -0.5; }
    out[`${name}.weight`] = { data: w, shape: sh };
    out[`${name}.bias`] = { data: bias, shape: [o] };
  }
  return out;
}
