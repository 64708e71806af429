/**
 * The composites of the model (GELU, layerNorm, Gemma's rmsNorm, softmax, rotate-half RoPE, the
 * patch convolution) written once from core ops, for backends that declare no fused version.
 * Each reads like its definition in src/interfaces/tensor-backend.ts; every intermediate is freed
 * before it returns. `b` is any backend: only its core methods are called.
 */
import type { Tensor, TensorBackend } from '../interfaces/tensor-backend.js';
import { patchEmbedDims, ropeDims, sizeOf } from '../tensor/op-shapes.js';
import { ropeTable } from '../tensor/rope-table.js';
import { TensorScope } from '../tensor/tensor-scope.js';

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

/** Tanh-GELU as x · sigmoid(2u), u = √(2/π)·(x + 0.044715·x³): 0.5·x·(1 + tanh u) without its cancellation for x ≪ 0. */
export function defaultGelu(b: TensorBackend, x: Tensor): Tensor {
  const s = new TensorScope(b);
  const x3 = s.track(b.mul(s.track(b.mul(x, x)), x));                         // [..., D]
  const u = s.track(b.add(x, s.track(b.scale(x3, 0.044715))));                // [..., D]
  const gate = s.track(b.unary('sigmoid', s.track(b.scale(u, 2 * SQRT_2_OVER_PI))));
  const out = b.mul(x, gate);                                                 // [..., D]
  s.dispose();
  return out;
}

/** (x − mean) · rsqrt(var + eps) · w + b over the last axis (biased variance, as PyTorch). */
export function defaultLayerNorm(b: TensorBackend, x: Tensor, w: Tensor, bias: Tensor, eps: number): Tensor {
  const s = new TensorScope(b), d = lastDim(x);
  const mean = s.track(b.scale(s.track(b.reduce('sum', x)), -1 / d));         // [..., 1], negated
  const xc = s.track(b.add(x, mean));                                         // [..., D]
  const variance = s.track(b.scale(s.track(b.reduce('sum', s.track(b.mul(xc, xc)))), 1 / d)); // [..., 1]
  const inv = s.track(b.unary('rsqrt', s.track(b.add(variance, s.track(scalar(b, eps))))));   // [..., 1]
  const out = b.add(s.track(b.mul(s.track(b.mul(xc, inv)), w)), bias);       // [..., D]
  s.dispose();
  return out;
}

/** x · rsqrt(mean(x²) + eps) · (1 + w) over the last axis: Gemma's RMSNorm. */
export function defaultRmsNorm(b: TensorBackend, x: Tensor, w: Tensor, eps: number): Tensor {
  const s = new TensorScope(b), d = lastDim(x);
  const ms = s.track(b.scale(s.track(b.reduce('sum', s.track(b.mul(x, x)))), 1 / d));        // [..., 1]
  const inv = s.track(b.unary('rsqrt', s.track(b.add(ms, s.track(scalar(b, eps))))));         // [..., 1]
  const onePlusW = s.track(b.add(w, s.track(b.upload(new Float32Array(d).fill(1), [d]))));  // [D]
  const out = b.mul(s.track(b.mul(x, inv)), onePlusW);                        // [..., D]
  s.dispose();
  return out;
}

/** exp(x − max) / Σ exp(x − max) over the last axis: the max keeps exp from overflowing. */
export function defaultSoftmax(b: TensorBackend, x: Tensor): Tensor {
  const s = new TensorScope(b);
  const negMax = s.track(b.scale(s.track(b.reduce('max', x)), -1));          // [..., 1]
  const e = s.track(b.unary('exp', s.track(b.add(x, negMax))));               // [..., D]
  const inv = s.track(b.unary('reciprocal', s.track(b.reduce('sum', e))));    // [..., 1]
  const out = b.mul(e, inv);                                                  // [..., D]
  s.dispose();
  return out;
}

/**
 * Rotate-half RoPE on x [T, H, D]: out₁ = x₁·cos − x₂·sin, out₂ = x₂·cos + x₁·sin for the halves
 * x₁ = x[..., :D/2], x₂ = x[..., D/2:]. The float64 table (src/tensor/rope-table.ts) goes up
 * repeated over the heads, since add/mul broadcast only over leading dims.
 */
export function defaultRope(b: TensorBackend, x: Tensor, positions: Int32Array, theta: number): Tensor {
  const { t, h, d } = ropeDims(x.shape, positions.length);
  const half = d / 2, s = new TensorScope(b);
  const { cos, sin } = ropeTable(positions, theta, d);                        // [T, D/2]
  const perHead = (table: Float64Array) => {
    const out = new Float32Array(t * h * half);                               // [T, H, D/2]
    for (let ti = 0; ti < t; ti++) {
      for (let hi = 0; hi < h; hi++) out.set(table.subarray(ti * half, (ti + 1) * half), (ti * h + hi) * half);
    }
    return s.track(b.upload(out, [t, h, half]));
  };
  const c = perHead(cos), sn = perHead(sin);
  const x1 = s.track(b.slice(x, 2, 0, half)), x2 = s.track(b.slice(x, 2, half, d));            // [T, H, D/2]
  const first = s.track(b.add(s.track(b.mul(x1, c)), s.track(b.scale(s.track(b.mul(x2, sn)), -1))));
  const second = s.track(b.add(s.track(b.mul(x2, c)), s.track(b.mul(x1, sn))));
  const out = b.concat([first, second], 2);                                   // [T, H, D]
  s.dispose();
  return out;
}

/**
 * Patch convolution as one matmul: pixels [C, H, W] → [C, H/P, P, W/P, P] → [H/P, W/P, C, P, P]
 * → patches [N, C·P·P] in (channel, y, x) order, times weight [O, C·P·P]ᵀ plus bias → [N, O].
 */
export function defaultPatchEmbed(b: TensorBackend, pixels: Tensor, weight: Tensor, bias: Tensor, patch: number): Tensor {
  const { c, o, gh, gw } = patchEmbedDims(pixels.shape, weight.shape, sizeOf(bias.shape), patch);
  const s = new TensorScope(b), k = c * patch * patch;
  const grid = s.track(b.reshape(pixels, [c, gh, patch, gw, patch]));         // [C, gh, P, gw, P]
  const rows = s.track(b.transpose(grid, [1, 3, 0, 2, 4]));                   // [gh, gw, C, P, P]
  const patches = s.track(b.reshape(rows, [gh * gw, k]));                     // [N, C·P·P]
  const w = s.track(b.reshape(weight, [o, k]));                               // [O, C·P·P]
  const out = b.matmul(patches, w, { transposeB: true, bias });               // [N, O]
  s.dispose();
  return out;
}

function lastDim(x: Tensor): number {
  return x.shape[x.shape.length - 1];
}

/** A one-element tensor: add broadcasts it onto a [..., 1] reduction. */
function scalar(b: TensorBackend, value: number): Tensor {
  return b.upload(new Float32Array([value]), [1]);
}
