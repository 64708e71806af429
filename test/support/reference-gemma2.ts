/**
 * A slow, plainly written float64 forward pass of PaliGemma 2 (SigLIP + projector from
 * reference-forward.ts, and a Gemma 2 decoder written here), the oracle the Gemma 2 tests
 * compare src/ against. Like reference-forward.ts it imports nothing from src/.
 *
 * Gemma 2 layer, as transformers' Gemma2DecoderLayer runs it:
 *   h  = x + post_attention_layernorm(attn(input_layernorm(x)))
 *   y  = h + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h)))
 * attention: q scaled by query_pre_attn_scalar^-0.5, scores soft-capped cap·tanh(s/cap) and only
 * then masked; sliding layers (layer_types, default even indices) see key j from row i iff
 * (j ≤ i ∧ j > i − w) ∨ (i and j both in the bidirectional prefix).
 * Head: final norm, tied embedding, then (optionally) cap·tanh(logits/cap).
 *
 * `broken` switches one convention off at a time, for the bug-sensitivity checks.
 */
import {
  add, embedNormalizer, gemmaRmsNorm, geluTanh, linear, mergeEmbeddings, param, resolveReferenceDims,
  ropeRotateHalf, siglipVision, type EmbedScaleDtype, type ReferenceDims, type RefWeights,
} from './reference-forward.js';

const T = 'language_model.model.';

export type Gemma2Break =
  | 'no-attn-softcap'          // scores not soft-capped
  | 'softcap-after-mask'       // soft-cap applied to the masked scores (−∞ → −cap)
  | 'head-dim-scale'           // q scaled by head_dim^-0.5 instead of query_pre_attn_scalar^-0.5
  | 'no-window'                // sliding layers attend to everything the mask allows
  | 'window-before-prefix'     // window also cuts the bidirectional prefix
  | 'window-on-odd-layers'     // sliding/full layers swapped
  | 'no-post-attn-norm'
  | 'no-pre-ffn-norm'
  | 'no-post-ffn-norm'
  | 'norm-weight-not-plus-one' // RMSNorm · w instead of · (1 + w)
  | 'unrounded-normalizer';    // √H not rounded to the weight dtype

export interface Gemma2ReferenceOptions {
  /** Final logit soft-cap; undefined = none (transformers 5 PaliGemma head). */
  finalSoftcap?: number;
  /** false: no sliding window on any layer (big_vision). Default true. */
  window?: boolean;
  embedScaleDtype?: EmbedScaleDtype;
  broken?: Gemma2Break;
}

interface Gemma2Consts {
  attnCap: number | undefined;
  window: number | undefined;
  qScalar: number;
  layerTypes: string[];
}

function consts(config: Record<string, unknown>, dims: ReferenceDims): Gemma2Consts {
  const text = config.text_config as Record<string, unknown>;
  if (text.model_type !== 'gemma2') throw new Error('reference-gemma2: text_config.model_type must be gemma2');
  const numOr = (k: string, d: number | undefined) => (text[k] === null ? undefined : (text[k] as number | undefined) ?? d);
  const layerTypes = (text.layer_types as string[] | undefined)
    ?? Array.from({ length: dims.textLayers }, (_, i) => ((i + 1) % 2 ? 'sliding_attention' : 'full_attention'));
  return {
    attnCap: numOr('attn_logit_softcapping', 50),
    window: numOr('sliding_window', 4096),
    qScalar: numOr('query_pre_attn_scalar', 256) as number,
    layerTypes,
  };
}

function rmsNorm(x: Float64Array, w: ArrayLike<number>, eps: number, broken?: Gemma2Break): Float64Array {
  if (broken !== 'norm-weight-not-plus-one') return gemmaRmsNorm(x, w, eps);
  const minusOne = Float64Array.from(w as ArrayLike<number>, (v) => v - 1);   // (1 + (w − 1)) = w
  return gemmaRmsNorm(x, minusOne, eps);
}

/**
 * Gemma 2 attention. q [T, nH·hd], k/v [T, nKV·hd] → [T, nH·hd].
 * allow(i, j): mask ∩ window; cap: soft-cap of the scaled scores.
 */
function attention2(
  q: Float64Array, k: Float64Array, v: Float64Array, dims: ReferenceDims, scale: number,
  cap: number | undefined, allow: (i: number, j: number) => boolean, capAfterMask: boolean,
): Float64Array {
  const { heads: nH, kvHeads: nKV, headDim: hd } = dims;
  const t = q.length / (nH * hd);
  const out = new Float64Array(t * nH * hd); // [T, nH·hd]
  for (let h = 0; h < nH; h++) {
    const g = Math.floor(h / (nH / nKV));
    for (let i = 0; i < t; i++) {
      const s = new Float64Array(t); // [T] scores of row i
      for (let j = 0; j < t; j++) {
        let dot = 0;
        for (let d = 0; d < hd; d++) dot += q[(i * nH + h) * hd + d] * k[(j * nKV + g) * hd + d];
        let x = dot * scale;
        if (cap !== undefined && !capAfterMask) x = cap * Math.tanh(x / cap);
        if (!allow(i, j)) x = -Infinity;
        if (cap !== undefined && capAfterMask) x = cap * Math.tanh(x / cap);
        s[j] = x;
      }
      let max = -Infinity;
      for (let j = 0; j < t; j++) max = Math.max(max, s[j]);
      let sum = 0;
      for (let j = 0; j < t; j++) { s[j] = Math.exp(s[j] - max); sum += s[j]; }
      for (let j = 0; j < t; j++) {
        const p = s[j] / sum;
        for (let d = 0; d < hd; d++) out[(i * nH + h) * hd + d] += p * v[(j * nKV + g) * hd + d];
      }
    }
  }
  return out;
}

/** One Gemma 2 decoder layer. x [T, H] → [T, H]. */
function gemma2Layer(
  x: Float64Array, positions: number[], prefixLength: number, weights: RefWeights, dims: ReferenceDims,
  c: Gemma2Consts, layer: number, opts: Gemma2ReferenceOptions,
): Float64Array {
  const { hidden: h, intermediate: im, heads: nh, kvHeads: nkv, headDim: hd, rmsEps: eps, ropeTheta: theta } = dims;
  const br = opts.broken;
  const p = (name: string, shape: number[]) => param(weights, `${T}layers.${layer}.${name}`, shape);
  const norm = (y: Float64Array, name: string) => rmsNorm(y, p(`${name}.weight`, [h]).data, eps, br);

  let type = c.layerTypes[layer];
  if (br === 'window-on-odd-layers') type = type === 'sliding_attention' ? 'full_attention' : 'sliding_attention';
  const w = type === 'sliding_attention' && opts.window !== false && br !== 'no-window' ? c.window : undefined;
  const causalOrPrefix = (i: number, j: number) => j <= i || (i < prefixLength && j < prefixLength);
  const allow = (i: number, j: number): boolean => {
    if (w === undefined) return causalOrPrefix(i, j);
    if (br === 'window-before-prefix') return i - j < w && causalOrPrefix(i, j);
    return (j <= i && j > i - w) || (i < prefixLength && j < prefixLength);
  };

  const n1 = norm(x, 'input_layernorm'); // [T, H]
  const q = ropeRotateHalf(linear(n1, p('self_attn.q_proj.weight', [nh * hd, h])), positions, nh, hd, theta); // [T, nH·hd]
  const k = ropeRotateHalf(linear(n1, p('self_attn.k_proj.weight', [nkv * hd, h])), positions, nkv, hd, theta); // [T, nKV·hd]
  const v = linear(n1, p('self_attn.v_proj.weight', [nkv * hd, h])); // [T, nKV·hd]
  const scale = (br === 'head-dim-scale' ? hd : c.qScalar) ** -0.5;
  const cap = br === 'no-attn-softcap' ? undefined : c.attnCap;
  const a = attention2(q, k, v, dims, scale, cap, allow, br === 'softcap-after-mask'); // [T, nH·hd]
  const o = linear(a, p('self_attn.o_proj.weight', [h, nh * hd])); // [T, H]
  const r1 = add(x, br === 'no-post-attn-norm' ? o : norm(o, 'post_attention_layernorm')); // [T, H]

  const n2 = br === 'no-pre-ffn-norm' ? r1 : norm(r1, 'pre_feedforward_layernorm'); // [T, H]
  const gate = linear(n2, p('mlp.gate_proj.weight', [im, h])); // [T, I]
  const up = linear(n2, p('mlp.up_proj.weight', [im, h])); // [T, I]
  const gated = gate.map((g, i) => geluTanh(g) * up[i]); // [T, I]
  const down = linear(gated, p('mlp.down_proj.weight', [h, im])); // [T, H]
  return add(r1, br === 'no-post-ffn-norm' ? down : norm(down, 'post_feedforward_layernorm')); // [T, H]
}

/**
 * PaliGemma 2 forward pass in float64: logits [T, V] for every row. Rows < prefixLength form the
 * bidirectional prefix; later rows are causal (as generated or teacher-forced tokens are).
 */
export function referenceGemma2Forward(
  weights: RefWeights, config: Record<string, unknown>, pixelValues: Float32Array, inputIds: number[],
  prefixLength: number, opts: Gemma2ReferenceOptions = {},
): Float64Array {
  const dims = resolveReferenceDims(weights, config);
  const c = consts(config, dims);
  const { visionHidden: dv, hidden: h, vocab } = dims;
  const visionOut = siglipVision(pixelValues, weights, dims); // [N, Dv]
  const imageFeatures = linear(visionOut, param(weights, 'multi_modal_projector.linear.weight', [h, dv]),
    param(weights, 'multi_modal_projector.linear.bias', [h])); // [N, H]
  const embed = param(weights, `${T}embed_tokens.weight`, [vocab, h]); // [V, H]
  const normalizer = opts.broken === 'unrounded-normalizer' ? Math.sqrt(h) : embedNormalizer(h, opts.embedScaleDtype ?? 'f32');
  let x = mergeEmbeddings(inputIds, imageFeatures, embed, dims, normalizer); // [T, H]
  const positions = inputIds.map((_, i) => i + 1); // [T], 1-based
  for (let l = 0; l < dims.textLayers; l++) x = gemma2Layer(x, positions, prefixLength, weights, dims, c, l, opts);
  const hidden = rmsNorm(x, param(weights, `${T}norm.weight`, [h]).data, dims.rmsEps, opts.broken); // [T, H]
  const head = dims.tiedLmHead ? embed : param(weights, 'language_model.lm_head.weight', [vocab, h]); // [V, H]
  const logits = linear(hidden, head); // [T, V]
  const cap = opts.finalSoftcap;
  return cap === undefined ? logits : logits.map((z) => cap * Math.tanh(z / cap));
}
