/**
 * Gemma decoder as PaliGemma 1 uses it (Gemma Team, "Gemma: Open Models Based on Gemini
 * Research and Technology"; Hugging Face GemmaModel). Conventions pinned by the tests:
 * RMSNorm x·rsqrt(mean(x²)+eps)·(1+w) in float32; rotate-half RoPE at 1-based positions;
 * grouped-query attention (query head h reads kv head h // (heads/kvHeads)); gated tanh-GELU
 * MLP; final norm; lm_head tied to embed_tokens unless the checkpoint has its own.
 */
import type { AttentionKernel, AttentionMask } from '../interfaces/attention-kernel.js';
import type { KVCache } from '../interfaces/kv-cache-store.js';
import type { Tensor, TensorBackend } from '../interfaces/tensor-backend.js';
import type { TextConfig } from './config-types.js';
import type { ModelWeights } from './model-weights.js';
import { TensorScope } from './tensor-scope.js';

const P = 'language_model.model';

export class GemmaDecoder {
  /** Final logit soft-cap applied to the logits read back (Gemma 2 option); none for Gemma. */
  readonly finalLogitSoftcap: number | undefined = undefined;

  constructor(
    protected readonly backend: TensorBackend,
    protected readonly attention: AttentionKernel,
    protected readonly weights: ModelWeights,
    protected readonly cfg: TextConfig,
  ) {}

  /** ids [T] → token embeddings [T, H] (not yet scaled). */
  embed(ids: Int32Array): Tensor {
    return this.backend.embedding(this.weights.get(`${P}.embed_tokens.weight`), ids);
  }

  /**
   * Runs every layer over x [T, H] whose rows sit at cache rows [cache.length, cache.length+T),
   * writing their keys/values into the cache and committing them. Returns final-normed [T, H].
   * Prefill passes the whole prompt at once; decode passes one row per step.
   */
  forward(x: Tensor, cache: KVCache, mask: AttentionMask): Tensor {
    const run = this.layers(x, cache, mask);
    for (;;) {
      const r = run.next();
      if (r.done) return r.value;
    }
  }

  /**
   * forward, awaiting `pause` between layers: the event loop runs there (timers, signals), and
   * a pause that throws (an abort) stops the pass, releasing its tensors; the cache is then
   * left unusable, as the caller discards it.
   */
  async forwardPausing(x: Tensor, cache: KVCache, mask: AttentionMask, pause: () => Promise<void>): Promise<Tensor> {
    const run = this.layers(x, cache, mask);
    try {
      for (;;) {
        const r = run.next();
        if (r.done) return r.value;
        await pause();
      }
    } finally {
      run.return(undefined as never);
    }
  }

  /** The layer loop; yields after each layer but the last. */
  private *layers(x: Tensor, cache: KVCache, mask: AttentionMask): Generator<void, Tensor> {
    const b = this.backend;
    const t = x.shape[0];
    const start = cache.length;
    // RoPE positions are 1-based: cache row r holds position r + 1.
    const positions = Int32Array.from({ length: t }, (_, i) => start + i + 1);
    let h = x;
    try {
      for (let i = 0; i < this.cfg.numLayers; i++) {
        if (i > 0) yield;
        const next = this.layer(h, i, cache, positions, mask);
        if (h !== x) b.dispose(h);
        h = next;
      }
      cache.advance(t);
      return b.rmsNorm(h, this.weights.get(`${P}.norm.weight`), this.cfg.rmsNormEps);  // [T, H]
    } finally {
      if (h !== x) b.dispose(h);
    }
  }

  /** hidden [R, H] → logits [R, V] through the (tied) head. */
  logits(hidden: Tensor): Tensor {
    const head = this.weights.has('language_model.lm_head.weight')
      ? this.weights.get('language_model.lm_head.weight')
      : this.weights.get(`${P}.embed_tokens.weight`);                    // [V, H]
    return this.backend.matmul(hidden, head, { transposeB: true });
  }

  /** One decoder layer; Gemma2Decoder overrides it. */
  protected layer(x: Tensor, i: number, cache: KVCache, positions: Int32Array, mask: AttentionMask): Tensor {
    const b = this.backend, s = new TensorScope(b), c = this.cfg;
    const w = (n: string) => this.weights.get(`${P}.layers.${i}.${n}`);
    const proj = (h: Tensor, name: string) => s.track(b.matmul(h, w(`${name}.weight`), { transposeB: true }));
    const t = x.shape[0];

    const h1 = s.track(b.rmsNorm(x, w('input_layernorm.weight'), c.rmsNormEps));          // [T, H]
    const q = s.track(b.rope(s.track(b.reshape(proj(h1, 'self_attn.q_proj'), [t, c.numHeads, c.headDim])),
      positions, c.ropeTheta));                                                          // [T, Hq, D]
    const k = s.track(b.rope(s.track(b.reshape(proj(h1, 'self_attn.k_proj'), [t, c.numKvHeads, c.headDim])),
      positions, c.ropeTheta));                                                          // [T, Hkv, D]
    const v = s.track(b.reshape(proj(h1, 'self_attn.v_proj'), [t, c.numKvHeads, c.headDim]));
    cache.write(i, k, v);
    const attn = s.track(this.attention.attend(b, q, cache.keys(i), cache.values(i), {
      scale: (c.queryPreAttnScalar ?? c.headDim) ** -0.5,
      mask,
      queryOffset: cache.length,
      kvLength: cache.length + t,
      softCap: c.attnLogitSoftcapping,
    }));                                                                                 // [T, Hq, D]
    const o = proj(s.track(b.reshape(attn, [t, c.numHeads * c.headDim])), 'self_attn.o_proj'); // [T, H]
    const x2 = s.track(b.add(x, o));

    const h2 = s.track(b.rmsNorm(x2, w('post_attention_layernorm.weight'), c.rmsNormEps));
    const gate = s.track(b.gelu(proj(h2, 'mlp.gate_proj')));                             // [T, I]
    const up = proj(h2, 'mlp.up_proj');                                                  // [T, I]
    const down = proj(s.track(b.mul(gate, up)), 'mlp.down_proj');                        // [T, H]
    const out = b.add(x2, down);
    s.dispose();
    return out;
  }
}
