/**
 * Thresholds for a backend that stores float32 weights lossily (`TensorBackend.lossyWeights`).
 *
 * Such a backend is still judged against the exact oracle, but the cases whose weights it may
 * narrow get thresholds sized for the rounding it declares, and everything else keeps the exact
 * thresholds. Each figure sits above what a correct backend of that kind gave on these cases
 * (below: 4× to 80× for the NMSE and log-prob checks, under 2× for the sampler share), and far
 * below what a wrong op gives (a misplaced row, a dropped term or a scrambled layout lands near
 * NMSE 1, a dropped row among 300 at 3e-3):
 *
 * - f16 (webgpu `weights=f16` on SwiftShader): the weight op cases ≤ 4.6e-8 (half rounding,
 *   relative error ≤ 2⁻¹¹, predicts ≈ 8e-8); tiny models: vision ≤ 1.2e-7, logits ≤ 3.0e-7,
 *   log-probs within 2.6e-3; every sampler draw the same.
 * - int8 (onnx `quantize=int8`: MatMulNBits, blocks of 32 along K with one scale each, each
 *   activation block quantized to int8 per call): the weight op cases 2.6e-5 to 6.0e-5; tiny
 *   models: vision ≤ 1.8e-4, logits ≤ 3.5e-4, cache vs no cache ≤ 3e-14, log-probs within
 *   0.059; greedy tokens unchanged; up to 12 of 64 sampler draws differ.
 * - int4 (onnx `quantize=int4`, same layout with 16 codes per scale, so each weight's rounding
 *   is about 16× int8's): the weight op cases 3.0e-3 to 7.8e-3; tiny models: vision ≤ 2.3e-2,
 *   logits ≤ 6.6e-2, cache vs no cache ≤ 3e-14, log-probs within 0.48; greedy tokens
 *   unchanged; up to 18 of 64 sampler draws differ. The tiny models' random weights have no
 *   outliers to spare, so these margins (3× to 4×, 1.6× for the sampler share) are the
 *   tightest here; a dropped row among 300 (≈ 3e-3) is no longer caught by the weight op
 *   cases at int4, but a scrambled layout (≈ 1) still is.
 */
import type { LossyWeights } from '../interfaces/tensor-backend.js';
import type { OpCase } from './op-case.js';

export interface LossyThresholds {
  /** NMSE for the op cases with a weight operand (matmul's transposed b, an embedding table). */
  weightOps: number;
  /** Whole-model checks, in place of MODEL_THRESHOLDS (model-cases.ts). */
  model: { vision: number; logits: number; kvCache: number; score: number };
  /**
   * Share of a stochastic sampler's draws that may differ between the tested and the oracle
   * logits (a draw near a boundary of the inverse CDF flips with any logit noise).
   */
  samplerMismatch: number;
}

export const LOSSY_THRESHOLDS: Record<LossyWeights, LossyThresholds> = {
  f16: { weightOps: 1e-6, model: { vision: 1e-5, logits: 1e-5, kvCache: 1e-5, score: 1e-2 }, samplerMismatch: 0.1 },
  int8: { weightOps: 1e-3, model: { vision: 1e-2, logits: 1e-2, kvCache: 1e-3, score: 0.5 }, samplerMismatch: 0.25 },
  int4: { weightOps: 3e-2, model: { vision: 1e-1, logits: 0.2, kvCache: 1e-3, score: 1.5 }, samplerMismatch: 0.45 },
};

/** The NMSE threshold an op case is judged by on a backend with these weights. */
export function opThreshold(c: Pick<OpCase, 'threshold' | 'weightOperand'>, lossy: LossyWeights | undefined): number {
  return lossy && c.weightOperand ? Math.max(c.threshold, LOSSY_THRESHOLDS[lossy].weightOps) : c.threshold;
}

/** How many of `draws` sampler draws may differ from the oracle's on a backend with these weights. */
export function samplerMismatchAllowed(draws: number, lossy: LossyWeights | undefined): number {
  return lossy ? Math.floor(draws * LOSSY_THRESHOLDS[lossy].samplerMismatch) : 0;
}
