/**
 * One decode step for B independent sequences at once: row b is sequence b's next token. Every
 * projection and the MLP see all B rows in one matmul (decode is bound by reading the weights,
 * so B rows cost about what one does); RoPE takes each row's own position; each row writes its
 * own KV cache and attends over it alone. Same math as GemmaDecoder.forward on one row, so a
 * sequence's logits do not depend on which others share its step.
 */
import type { AttentionKernel, AttentionMask } from '../interfaces/attention-kernel.js';
import type { KVCache } from '../interfaces/kv-cache-store.js';
import type { Tensor, TensorBackend } from '../interfaces/tensor-backend.js';
import type { TextConfig } from './config-types.js';
import type { ModelWeights } from './model-weights.js';
import { TensorScope } from './tensor-scope.js';

const P = 'language_model.model';

/** One sequence of a batched step: its cache and the mask its rows attend under. */
export interface BatchRow {
  cache: KVCache;
  mask: AttentionMask;
}

export class GemmaBatchStep {
  constructor(
    private readonly backend: TensorBackend,
    private readonly attention: AttentionKernel,
    private readonly weights: ModelWeights,
    private readonly cfg: TextConfig,
  ) {}

  /** x [B, H] (row b at rows[b].cache.length) → final-normed [B, H]; every cache advances by 1. */
  forward(x: Tensor, rows: readonly BatchRow[]): Tensor {
    const b = this.backend;
    if (x.shape[0] !== rows.length) throw new Error(`batched step: ${x.shape[0]} rows for ${rows.length} sequences`);
    // RoPE positions are 1-based: cache row r holds position r + 1.
    const positions = Int32Array.from(rows, (r) => r.cache.length + 1);
    let h = x;
    for (let i = 0; i < this.cfg.numLayers; i++) {
      const next = this.layer(h, i, rows, positions);
      if (h !== x) b.dispose(h);
      h = next;
    }
    for (const r of rows) r.cache.advance(1);
    const out = b.rmsNorm(h, this.weights.get(`${P}.norm.weight`), this.cfg.rmsNormEps);  // [B, H]
    if (h !== x) b.dispose(h);
    return out;
  }

  /** hidden [B, H] → logits [B, V] through the (tied) head, as GemmaDecoder.logits. */
  logits(hidden: Tensor): Tensor {
    const head = this.weights.has('language_model.lm_head.weight')
      ? this.weights.get('language_model.lm_head.weight')
      : this.weights.get(`${P}.embed_tokens.weight`);                    // [V, H]
    return this.backend.matmul(hidden, head, { transposeB: true });
  }

  private layer(x: Tensor, i: number, rows: readonly BatchRow[], positions: Int32Array): Tensor {
    const b = this.backend, s = new TensorScope(b), c = this.cfg;
    const w = (n: string) => this.weights.get(`${P}.layers.${i}.${n}`);
    const proj = (h: Tensor, name: string) => s.track(b.matmul(h, w(`${name}.weight`), { transposeB: true }));
    const n = x.shape[0];

    const h1 = s.track(b.rmsNorm(x, w('input_layernorm.weight'), c.rmsNormEps));          // [B, H]
    const q = s.track(b.rope(s.track(b.reshape(proj(h1, 'self_attn.q_proj'), [n, c.numHeads, c.headDim])),
      positions, c.ropeTheta));                                                          // [B, Hq, D]
    const k = s.track(b.rope(s.track(b.reshape(proj(h1, 'self_attn.k_proj'), [n, c.numKvHeads, c.headDim])),
      positions, c.ropeTheta));                                                          // [B, Hkv, D]
    const v = s.track(b.reshape(proj(h1, 'self_attn.v_proj'), [n, c.numKvHeads, c.headDim]));
    // Attention per sequence: each row writes and reads its own cache.
    const outs = rows.map((r, j) => {
      const one = (t: Tensor) => (n === 1 ? t : s.track(b.slice(t, 0, j, j + 1)));       // [1, ·, D]
      r.cache.write(i, one(k), one(v));
      return s.track(this.attention.attend(b, one(q), r.cache.keys(i), r.cache.values(i), {
        scale: (c.queryPreAttnScalar ?? c.headDim) ** -0.5,
        mask: r.mask,
        queryOffset: r.cache.length,
        kvLength: r.cache.length + 1,
        softCap: c.attnLogitSoftcapping,
      }));                                                                               // [1, Hq, D]
    });
    const attn = n === 1 ? outs[0] : s.track(b.concat(outs, 0));                         // [B, Hq, D]
    const o = proj(s.track(b.reshape(attn, [n, c.numHeads * c.headDim])), 'self_attn.o_proj'); // [B, H]
    const x2 = s.track(b.add(x, o));

    const h2 = s.track(b.rmsNorm(x2, w('post_attention_layernorm.weight'), c.rmsNormEps));
    const gate = s.track(b.gelu(proj(h2, 'mlp.gate_proj')));                             // [B, I]
    const up = proj(h2, 'mlp.up_proj');                                                  // [B, I]
    const down = proj(s.track(b.mul(gate, up)), 'mlp.down_proj');                        // [B, H]
    const out = b.add(x2, down);
    s.dispose();
    return out;
  }
}
