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
import type { AttentionKernel, AttentionMask } from '../interfaces/attention-kernel.js';
import type { KVCache } from '../interfaces/kv-cache-store.js';
import type { Tensor, TensorBackend } from '../interfaces/tensor-backend.js';
import type { TextConfig } from './config-types.js';
import { GemmaDecoder } from './gemma.js';
import { resolveGemma2Options, type Gemma2Options } from './gemma2-options.js';
import type { ModelWeights } from './model-weights.js';
import { TensorScope } from './tensor-scope.js';

const P = 'language_model.model';

export class Gemma2Decoder extends GemmaDecoder {
  override readonly finalLogitSoftcap: number | undefined;
  private readonly window: number | undefined;

  constructor(backend: TensorBackend, attention: AttentionKernel, weights: ModelWeights, cfg: TextConfig, opts: Gemma2Options = {}) {
    super(backend, attention, weights, cfg);
    const resolved = resolveGemma2Options(cfg, opts);
    this.finalLogitSoftcap = resolved.finalLogitSoftcap;
    this.window = resolved.slidingWindow;
  }

  /** The window layer i runs with, or undefined for a full-attention layer. */
  windowOf(i: number): number | undefined {
    const type = this.cfg.layerTypes?.[i] ?? (i % 2 === 0 ? 'sliding_attention' : 'full_attention');
    return type === 'sliding_attention' ? this.window : undefined;
  }

  protected override layer(x: Tensor, i: number, cache: KVCache, positions: Int32Array, mask: AttentionMask): Tensor {
    const b = this.backend, s = new TensorScope(b), c = this.cfg;
    const w = (n: string) => this.weights.get(`${P}.layers.${i}.${n}`);
    const proj = (h: Tensor, name: string) => s.track(b.matmul(h, w(`${name}.weight`), { transposeB: true }));
    const norm = (h: Tensor, name: string) => s.track(b.rmsNorm(h, w(`${name}.weight`), c.rmsNormEps));
    const t = x.shape[0];

    const h1 = norm(x, 'input_layernorm');                                              // [T, H]
    const q = s.track(b.rope(s.track(b.reshape(proj(h1, 'self_attn.q_proj'), [t, c.numHeads, c.headDim])),
      positions, c.ropeTheta));                                                          // [T, Hq, D]
    const k = s.track(b.rope(s.track(b.reshape(proj(h1, 'self_attn.k_proj'), [t, c.numKvHeads, c.headDim])),
      positions, c.ropeTheta));                                                          // [T, Hkv, D]
    const v = s.track(b.reshape(proj(h1, 'self_attn.v_proj'), [t, c.numKvHeads, c.headDim]));
    cache.write(i, k, v);
    const window = this.windowOf(i);
    const attn = s.track(this.attention.attend(b, q, cache.keys(i), cache.values(i), {
      scale: (c.queryPreAttnScalar ?? c.headDim) ** -0.5,
      mask,
      queryOffset: cache.length,
      kvLength: cache.length + t,
      ...(c.attnLogitSoftcapping !== undefined ? { softCap: c.attnLogitSoftcapping } : {}),
      ...(window !== undefined ? { slidingWindow: window } : {}),
    }));                                                                                 // [T, Hq, D]
    const o = proj(s.track(b.reshape(attn, [t, c.numHeads * c.headDim])), 'self_attn.o_proj'); // [T, H]
    const x2 = s.track(b.add(x, norm(o, 'post_attention_layernorm')));                 // [T, H]

    const h2 = norm(x2, 'pre_feedforward_layernorm');
    const gate = s.track(b.gelu(proj(h2, 'mlp.gate_proj')));                             // [T, I]
    const up = proj(h2, 'mlp.up_proj');                                                  // [T, I]
    const down = proj(s.track(b.mul(gate, up)), 'mlp.down_proj');                        // [T, H]
    const out = b.add(x2, norm(down, 'post_feedforward_layernorm'));
    s.dispose();
    return out;
  }
}

/** logits ← cap · tanh(logits / cap), in place (float64 math, stored as float32). */
export function applyFinalSoftcap(logits: Float32Array, cap: number | undefined): Float32Array {
  if (cap === undefined) return logits;
  for (let i = 0; i < logits.length; i++) logits[i] = cap * Math.tanh(logits[i] / cap);
  return logits;
}
