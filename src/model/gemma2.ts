/**
 * Gemma 2 decoder as PaliGemma 2 uses it (Gemma Team, "Gemma 2: Improving Open Language Models
 * at a Practical Size"; Hugging Face Gemma2Model). Differences from Gemma (gemma.ts), each pinned
 * by test/gemma2.test.ts against a float64 implementation and a transformers fixture:
 * - four RMSNorms per layer: input → attention → post_attention_layernorm → residual add;
 *   pre_feedforward_layernorm → MLP → post_feedforward_layernorm → residual add;
 * - queries scaled by query_pre_attn_scalar^-0.5 (not head_dim^-0.5: 144 vs 128 in the 28B);
 * - scaled scores soft-capped cap · tanh(s / cap) (attn_logit_softcapping, 50) before the mask;
 * - layers text_config.layer_types marks 'sliding_attention' (even ones by default) see only the
 *   last sliding_window keys, combined with the prefix-LM mask as keyVisible defines;
 * - an optional final logit soft-cap (see gemma2-options.ts), applied to the logits read back.
 */
import type { AttentionKernel } from '../interfaces/attention-kernel.js';
import type { TensorOps } from '../interfaces/tensor-backend.js';
import type { TextConfig } from './config-types.js';
import { GemmaDecoder } from './gemma.js';
import { resolveGemma2Options, type Gemma2Options } from './gemma2-options.js';
import type { ModelWeights } from './model-weights.js';

export class Gemma2Decoder extends GemmaDecoder {
  override readonly finalLogitSoftcap: number | undefined;
  private readonly window: number | undefined;

  constructor(backend: TensorOps, attention: AttentionKernel, weights: ModelWeights, cfg: TextConfig, opts: Gemma2Options = {}) {
    super(backend, attention, weights, cfg);
    const resolved = resolveGemma2Options(cfg, opts);
    this.finalLogitSoftcap = resolved.finalLogitSoftcap;
    this.window = resolved.slidingWindow;
  }

  protected override readonly norms = {
    afterAttention: 'post_attention_layernorm',
    beforeMlp: 'pre_feedforward_layernorm',
    afterMlp: 'post_feedforward_layernorm',
  };

  /** The window layer i runs with, or undefined for a full-attention layer. */
  override windowOf(i: number): number | undefined {
    const type = this.cfg.layerTypes?.[i] ?? (i % 2 === 0 ? 'sliding_attention' : 'full_attention');
    return type === 'sliding_attention' ? this.window : undefined;
  }
}

/** logits ← cap · tanh(logits / cap), in place (float64 math, stored as float32). */
export function applyFinalSoftcap(logits: Float32Array, cap: number | undefined): Float32Array {
  if (cap === undefined) return logits;
  for (let i = 0; i < logits.length; i++) logits[i] = cap * Math.tanh(logits[i] / cap);
  return logits;
}
