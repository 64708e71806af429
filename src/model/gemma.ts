/**
 * Gemma decoder as PaliGemma 1 uses it (Gemma Team, "Gemma: Open Models Based on Gemini
 * Research and Technology"; Hugging Face GemmaModel). Conventions pinned by the tests:
 * RMSNorm x·rsqrt(mean(x²)+eps)·(1+w) in float32; rotate-half RoPE at 1-based positions;
 * grouped-query attention (query head h reads kv head h // (heads/kvHeads)); gated tanh-GELU
 * MLP; final norm; lm_head tied to embed_tokens unless the checkpoint has its own.
 */
import type { AttentionKernel, AttentionMask } from '../interfaces/attention-kernel.js';
import type { KVCache } from '../interfaces/kv-cache-store.js';
import type { Tensor, TensorOps } from '../interfaces/tensor-backend.js';
import type { TextConfig } from './config-types.js';
import type { ModelWeights } from './model-weights.js';
import { TensorScope } from '../tensor/tensor-scope.js';

const P = 'language_model.model';

/**
 * Rows that attend over one KV cache. A forward pass takes either one sequence with T rows
 * (prefill, or a decode step of one sequence) or B sequences with one row each (a batched
 * decode step: every projection and the MLP see the B rows in one matmul, since decode is bound
 * by reading the weights; each row writes and reads its own cache).
 */
export interface DecoderRows {
  cache: KVCache;
  mask: AttentionMask;
}

/** Where a layer's RMSNorms sit, by weight name (Gemma has two, Gemma 2 four). */
export interface LayerNorms {
  /** Normalises the attention output before the residual add (Gemma 2). */
  afterAttention?: string;
  /** Normalises the MLP input. */
  beforeMlp: string;
  /** Normalises the MLP output before the residual add (Gemma 2). */
  afterMlp?: string;
}

export class GemmaDecoder {
  /** Final logit soft-cap applied to the logits read back (Gemma 2 option); none for Gemma. */
  readonly finalLogitSoftcap: number | undefined = undefined;
  protected readonly norms: LayerNorms = { beforeMlp: 'post_attention_layernorm' };

  constructor(
    protected readonly backend: TensorOps,
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
    return this.forwardRows(x, [{ cache, mask }]);
  }

  /**
   * One decode step of B sequences: x [B, H], row b being sequences[b]'s next token (at its
   * cache.length) → final-normed [B, H]; every cache advances by one. The same layer code as
   * forward, so a sequence's logits do not depend on which others share its step.
   */
  forwardBatch(x: Tensor, sequences: readonly DecoderRows[]): Tensor {
    if (x.shape[0] !== sequences.length) throw new Error(`batched step: ${x.shape[0]} rows for ${sequences.length} sequences`);
    return this.forwardRows(x, sequences);
  }

  /**
   * forward, awaiting `pause` between layers: the event loop runs there (timers, signals), and
   * a pause that throws (an abort) stops the pass, releasing its tensors; the cache is then
   * left unusable, as the caller discards it.
   */
  async forwardPausing(x: Tensor, cache: KVCache, mask: AttentionMask, pause: () => Promise<void>): Promise<Tensor> {
    const run = this.layers(x, [{ cache, mask }]);
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

  /** hidden [R, H] → logits [R, V] through the (tied) head. */
  logits(hidden: Tensor): Tensor {
    const head = this.weights.has('language_model.lm_head.weight')
      ? this.weights.get('language_model.lm_head.weight')
      : this.weights.get(`${P}.embed_tokens.weight`);                    // [V, H]
    return this.backend.matmul(hidden, head, { transposeB: true });
  }

  /** The sliding window layer i attends within, or undefined for full attention (Gemma 2 overrides). */
  windowOf(_layer: number): number | undefined {
    return undefined;
  }

  private forwardRows(x: Tensor, seqs: readonly DecoderRows[]): Tensor {
    const run = this.layers(x, seqs);
    for (;;) {
      const r = run.next();
      if (r.done) return r.value;
    }
  }

  /** The layer loop; yields after each layer but the last. */
  private *layers(x: Tensor, seqs: readonly DecoderRows[]): Generator<void, Tensor> {
    const b = this.backend;
    const t = x.shape[0];
    // RoPE positions are 1-based: cache row r holds position r + 1.
    const positions = seqs.length === 1
      ? Int32Array.from({ length: t }, (_, i) => seqs[0].cache.length + i + 1)
      : Int32Array.from(seqs, (q) => q.cache.length + 1);
    let h = x;
    try {
      for (let i = 0; i < this.cfg.numLayers; i++) {
        if (i > 0) yield;
        const next = this.layer(h, i, seqs, positions);
        if (h !== x) b.dispose(h);
        h = next;
      }
      for (const q of seqs) q.cache.advance(seqs.length === 1 ? t : 1);
      return b.rmsNorm(h, this.weights.get(`${P}.norm.weight`), this.cfg.rmsNormEps);  // [T, H]
    } finally {
      if (h !== x) b.dispose(h);
    }
  }

  /** One decoder layer over x [T, H]: attention with the residual, then the gated MLP with the residual. */
  private layer(x: Tensor, i: number, seqs: readonly DecoderRows[], positions: Int32Array): Tensor {
    const b = this.backend, s = new TensorScope(b), c = this.cfg, norms = this.norms;
    const w = (n: string) => this.weights.get(`${P}.layers.${i}.${n}`);
    const proj = (h: Tensor, name: string) => s.track(b.matmul(h, w(`${name}.weight`), { transposeB: true }));
    const norm = (h: Tensor, name: string | undefined) => (name ? s.track(b.rmsNorm(h, w(`${name}.weight`), c.rmsNormEps)) : h);
    const t = x.shape[0];

    const h1 = norm(x, 'input_layernorm');                                              // [T, H]
    const q = s.track(b.rope(s.track(b.reshape(proj(h1, 'self_attn.q_proj'), [t, c.numHeads, c.headDim])),
      positions, c.ropeTheta));                                                          // [T, Hq, D]
    const k = s.track(b.rope(s.track(b.reshape(proj(h1, 'self_attn.k_proj'), [t, c.numKvHeads, c.headDim])),
      positions, c.ropeTheta));                                                          // [T, Hkv, D]
    const v = s.track(b.reshape(proj(h1, 'self_attn.v_proj'), [t, c.numKvHeads, c.headDim]));
    const attn = this.attendRows(s, i, q, k, v, seqs);                                   // [T, Hq, D]
    const o = proj(s.track(b.reshape(attn, [t, c.numHeads * c.headDim])), 'self_attn.o_proj'); // [T, H]
    const x2 = s.track(b.add(x, norm(o, norms.afterAttention)));                        // [T, H]

    const h2 = norm(x2, norms.beforeMlp);
    const gate = s.track(b.gelu(proj(h2, 'mlp.gate_proj')));                             // [T, I]
    const up = proj(h2, 'mlp.up_proj');                                                  // [T, I]
    const down = proj(s.track(b.mul(gate, up)), 'mlp.down_proj');                        // [T, H]
    const out = b.add(x2, norm(down, norms.afterMlp));
    s.dispose();
    return out;
  }

  /**
   * Writes layer i's keys/values and attends: one sequence takes all T rows; B sequences take
   * one row each, over their own caches. q [T, Hq, D], k/v [T, Hkv, D] → [T, Hq, D].
   */
  private attendRows(s: TensorScope, i: number, q: Tensor, k: Tensor, v: Tensor, seqs: readonly DecoderRows[]): Tensor {
    const b = this.backend, c = this.cfg, t = q.shape[0];
    const window = this.windowOf(i);
    const attend = (seq: DecoderRows, qr: Tensor, kr: Tensor, vr: Tensor) => {
      const rows = qr.shape[0];
      seq.cache.write(i, kr, vr);
      return s.track(this.attention.attend(b, qr, seq.cache.keys(i), seq.cache.values(i), {
        scale: (c.queryPreAttnScalar ?? c.headDim) ** -0.5,
        mask: seq.mask,
        queryOffset: seq.cache.length,
        kvLength: seq.cache.length + rows,
        ...(c.attnLogitSoftcapping !== undefined ? { softCap: c.attnLogitSoftcapping } : {}),
        ...(window !== undefined ? { slidingWindow: window } : {}),
      }));
    };
    if (seqs.length === 1) return attend(seqs[0], q, k, v);
    const row = (x: Tensor, j: number) => s.track(b.slice(x, 0, j, j + 1));              // [1, ·, D]
    const outs = seqs.map((seq, j) => attend(seq, row(q, j), row(k, j), row(v, j)));
    return s.track(b.concat(outs, 0));                                                   // [B, Hq, D]
  }
}
