/**
 * Thresholds for a backend that stores float32 weights lossily (`TensorBackend.lossyWeights`).
 *
 * Such a backend is still judged against the exact oracle, but the cases whose weights it may
 * narrow get thresholds sized for the rounding it declares, and everything else keeps the exact
 * thresholds. The figures below each sit about ten times above what a correct backend of that
 * kind was measured to give on these cases, and stay far below what a wrong op gives (a
 * misplaced row, a dropped term or a scrambled layout lands near NMSE 1):
 *
 * - f16: rounding each weight to half (relative error ≤ 2⁻¹¹) gives a matmul or a gather an NMSE
 *   of ≈ 8e-8; through a few layers the logits drift to ≈ 1e-6.
 * - int8 (one scale per output channel, activations quantized per call): 3e-5 to 2e-4 on the
 *   matmul cases, ≈ 6e-4 on the tiny models' logits, 0.06 on their log-probs.
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
};

/** The NMSE threshold an op case is judged by on a backend with these weights. */
export function opThreshold(c: Pick<OpCase, 'threshold' | 'weightOperand'>, lossy: LossyWeights | undefined): number {
  return lossy && c.weightOperand ? Math.max(c.threshold, LOSSY_THRESHOLDS[lossy].weightOps) : c.threshold;
}

/** How many of `draws` sampler draws may differ from the oracle's on a backend with these weights. */
export function samplerMismatchAllowed(draws: number, lossy: LossyWeights | undefined): number {
  return lossy ? Math.floor(draws * LOSSY_THRESHOLDS[lossy].samplerMismatch) : 0;
}
