/**
 * PaliGemma's mask decoder: 16 `<segNNN>` codes → a 64×64 mask, as big_vision's segmentation
 * evaluator defines it (based on the VQ-VAE of arXiv:2301.02229):
 *
 *   codes [16] → codebook rows → 4×4 grid [4, 4, D]          (row-major: code i at (i/4, i%4))
 *   1×1 conv D → C, ReLU                                       [4, 4, C]
 *   2 × residual block: x + conv1×1(relu(conv3×3(relu(conv3×3(x)))))   (3×3 convs pad 1)
 *   4 × (ConvTranspose 4×4, stride 2, padding 1; ReLU)         [8,8,C] [16,16,C/2] [32,32,C/4] [64,64,C/8]
 *   1×1 conv C/8 → 1                                           [64, 64]  values roughly in [-1, 1]
 *
 * Convolutions are PyTorch's (cross-correlation; the transposed one scatters input pixel
 * (iy, ix) to output rows 2·iy - 1 + ky), matching the PyTorch-trained weights; big_vision runs
 * the same through flax with transpose_kernel=True and lax padding k - 1 - 1 = 2.
 *
 * Every convolution is a matrix product on the tensor backend (im2col for 3×3, a plain matmul
 * for 1×1, matmul then col2im for the transposed ones); the gathering, ReLU and residual sums
 * run on the host, where these small activations (at most 64·64·16 floats) live between layers.
 *
 * ```ts
 * const dec = new VqVaeDecoder(backend, await loadVqVaeDecoderWeights('vae-oid.npz'));
 * const mask64 = await dec.decode(codes);   // Float32Array, 64·64, row-major; > 0 is inside
 * dec.dispose();
 * ```
 */
import { PaliGemmaError } from '../interfaces/errors.js';
import type { Tensor, TensorBackend } from '../interfaces/tensor-backend.js';
import type { ConvWeights, VqVaeDecoderWeights } from './vae-weights.js';

export const MASK_SIZE = 64;
const GRID = 4;

interface Layer { w: Tensor; b: Tensor; hostBias: Float32Array; inC: number; outC: number; k: number }

export class VqVaeDecoder {
  private readonly conv0: Layer;
  private readonly res: Layer[][];
  private readonly up: Layer[];
  private readonly out: Layer;
  private readonly tensors: Tensor[] = [];
  private disposed = false;

  constructor(private readonly backend: TensorBackend, private readonly weights: VqVaeDecoderWeights) {
    this.conv0 = this.conv(weights.conv0);
    this.res = weights.res.map((blk) => blk.map((c) => this.conv(c)));
    this.up = weights.up.map((c) => this.convTranspose(c));
    this.out = this.conv(weights.out);
  }

  /** Conv2d weight [O, I, k, k] is already [O, I·k·k]: a transposed-B operand for im2col rows. */
  private conv(c: ConvWeights): Layer {
    const [o, i, k] = c.shape;
    const w = this.backend.upload(c.weight, [o, i * k * k]);
    const b = this.backend.upload(c.bias, [o]);
    this.tensors.push(w, b);
    return { w, b, hostBias: c.bias, inC: i, outC: o, k };
  }

  /** ConvTranspose2d weight [I, O, k, k] is [I, O·k·k]: input pixels times it give each tap. */
  private convTranspose(c: ConvWeights): Layer {
    const [i, o, k] = c.shape;
    const w = this.backend.upload(c.weight, [i, o * k * k]);
    const b = this.backend.upload(c.bias, [o]);
    this.tensors.push(w, b);
    return { w, b, hostBias: c.bias, inC: i, outC: o, k };
  }

  private async matmul(a: Float32Array, rows: number, cols: number, w: Tensor, opts: { transposeB: boolean; bias?: Tensor }): Promise<Float32Array> {
    const at = this.backend.upload(a, [rows, cols]);
    const r = this.backend.matmul(at, w, opts);
    try {
      return await this.backend.read(r);
    } finally {
      this.backend.dispose([at, r]);
    }
  }

  /** x [H·W, I] (pixel-major) → [H·W, O]; 'same' padding (k - 1) / 2. */
  private async applyConv(x: Float32Array, h: number, wd: number, l: Layer): Promise<Float32Array> {
    if (l.k === 1) return this.matmul(x, h * wd, l.inC, l.w, { transposeB: true, bias: l.b });
    const k = l.k, pad = (k - 1) >> 1, kk = k * k, cols = l.inC * kk;
    const im = new Float32Array(h * wd * cols);                                 // [H·W, I·k·k]
    for (let y = 0; y < h; y++) {
      for (let xx = 0; xx < wd; xx++) {
        const row = (y * wd + xx) * cols;
        for (let ky = 0; ky < k; ky++) {
          const sy = y + ky - pad;
          if (sy < 0 || sy >= h) continue;
          for (let kx = 0; kx < k; kx++) {
            const sx = xx + kx - pad;
            if (sx < 0 || sx >= wd) continue;
            const src = (sy * wd + sx) * l.inC;
            for (let c = 0; c < l.inC; c++) im[row + c * kk + ky * k + kx] = x[src + c];
          }
        }
      }
    }
    return this.matmul(im, h * wd, cols, l.w, { transposeB: true, bias: l.b });
  }

  /** x [H·W, I] → [2H·2W, O]: stride 2, padding 1 (PyTorch's ConvTranspose2d). */
  private async applyConvTranspose(x: Float32Array, h: number, wd: number, l: Layer): Promise<Float32Array> {
    const k = l.k, kk = k * k, o = l.outC;
    const taps = await this.matmul(x, h * wd, l.inC, l.w, { transposeB: false });   // [H·W, O·k·k]
    const oh = 2 * h, ow = 2 * wd;
    const out = new Float32Array(oh * ow * o);
    for (let p = 0; p < oh * ow; p++) out.set(l.hostBias, p * o);
    for (let iy = 0; iy < h; iy++) {
      for (let ix = 0; ix < wd; ix++) {
        const row = (iy * wd + ix) * o * kk;
        for (let ky = 0; ky < k; ky++) {
          const oy = 2 * iy - 1 + ky;
          if (oy < 0 || oy >= oh) continue;
          for (let kx = 0; kx < k; kx++) {
            const ox = 2 * ix - 1 + kx;
            if (ox < 0 || ox >= ow) continue;
            const dst = (oy * ow + ox) * o;
            for (let c = 0; c < o; c++) out[dst + c] += taps[row + c * kk + ky * k + kx];
          }
        }
      }
    }
    return out;
  }

  /** 16 codebook indices (0..codes-1, row-major over the 4×4 grid) → 64·64 mask values, row-major. */
  async decode(codes: readonly number[]): Promise<Float32Array> {
    if (this.disposed) throw new Error('VqVaeDecoder: used after dispose()');
    const { codebook, codes: n, dim } = this.weights;
    if (codes.length !== GRID * GRID) throw new PaliGemmaError(`mask decoder needs ${GRID * GRID} seg codes, got ${codes.length}`, 'invalid_argument');
    let x: Float32Array = new Float32Array(GRID * GRID * dim);                                 // [16, D]
    codes.forEach((c, i) => {
      if (!Number.isInteger(c) || c < 0 || c >= n) throw new PaliGemmaError(`seg code ${c} out of range 0..${n - 1}`, 'invalid_argument');
      x.set(codebook.subarray(c * dim, (c + 1) * dim), i * dim);
    });
    let h = GRID, w = GRID;
    x = relu(await this.applyConv(x, h, w, this.conv0));                          // [16, C]
    for (const [a, b, c] of this.res) {
      const y = await this.applyConv(relu(await this.applyConv(relu(await this.applyConv(x, h, w, a)), h, w, b)), h, w, c);
      for (let i = 0; i < y.length; i++) y[i] += x[i];
      x = y;
    }
    for (const l of this.up) {
      x = relu(await this.applyConvTranspose(x, h, w, l));
      h *= 2; w *= 2;
    }
    return this.applyConv(x, h, w, this.out);                                     // [64·64, 1]
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.backend.dispose(this.tensors);
  }
}

function relu(x: Float32Array): Float32Array {
  for (let i = 0; i < x.length; i++) if (x[i] < 0) x[i] = 0;
  return x;
}
