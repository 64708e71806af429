/**
 * A slow, plainly written float64 forward pass of PaliGemma 1 (SigLIP vision tower, linear
 * projector, Gemma 1 decoder), used by the tests as the oracle that the real implementation in
 * src/ is compared against.
 *
 * Rules this file keeps so that it stays an independent check:
 *  - it imports nothing from src/ (and nothing else either: only plain TypeScript);
 *  - every tensor is a row-major Float64Array, every operation is a small function of nested
 *    loops, and every tensor line carries a comment with its shape;
 *  - it is written for obvious correctness, not speed: meant for tiny models only
 *    (hidden ≤ 128, vocabulary ≈ 1.5k, ≤ 100 positions).
 *
 * Weights are keyed by the classic Hugging Face PaliGemmaForConditionalGeneration names
 * (`vision_tower.vision_model...`, `multi_modal_projector.linear...`, `language_model.model...`).
 * PyTorch Linear layout throughout: weight [out, in], y = x·Wᵀ + b.
 *
 * Conventions (matching transformers' PaliGemmaForConditionalGeneration, SiglipVisionModel and
 * GemmaModel for PaliGemma 1):
 *  - SigLIP: patch conv with kernel = stride = P, patches in row-major order over the grid, plus a
 *    learned position embedding per patch index; pre-norm encoder layers (LayerNorm with biased
 *    variance), bidirectional attention scaled by head_dim^-0.5, tanh-approximated GELU MLP;
 *    post_layernorm at the end; no pooling head.
 *  - Projector: one Linear (with bias) from the vision width to the text width.
 *  - Merge: text rows are embed_tokens[id] · normalizer, where normalizer = sqrt(hidden_size)
 *    rounded to the model's compute dtype. Image rows are the projected features unchanged (see
 *    `mergeEmbeddings` for why the net factor is taken as 1).
 *  - Gemma 1: pre-norm layers with RMSNorm scaled by (1 + w), rotate-half RoPE on 1-BASED
 *    positions (token t sits at position t + 1), grouped-query attention, tanh-GELU gated MLP,
 *    final RMSNorm, logits against lm_head or (if absent) the tied embedding table.
 *  - Mask: positions < prefixLength see every prefix position; positions ≥ prefixLength see the
 *    whole prefix and suffix positions up to and including themselves.
 */

/** One weight tensor: row-major data plus its shape. */
export interface RefTensor {
  data: Float32Array | Float64Array;
  shape: number[];
}

export type RefWeights = Record<string, RefTensor>;

/** The dtype the real model would hold its embedding scale in. */
export type EmbedScaleDtype = 'f32' | 'bf16' | 'f16';

export interface ReferenceOptions {
  /** Dtype that sqrt(hidden_size) is rounded to before scaling text embeddings; default 'f32'. */
  embedScaleDtype?: EmbedScaleDtype;
}

export interface ReferenceOutput {
  /** [T, V] next-token logits for every position. */
  logits: Float64Array;
  /** [N, Dv] vision tower output after post_layernorm. */
  visionOut: Float64Array;
  /** [N, projDim] projector output (projDim = text hidden size). */
  imageFeatures: Float64Array;
  /** [T, H] decoder output after the final RMSNorm. */
  hidden: Float64Array;
}

/** Every size and constant the forward pass needs, after defaults and shape checks. */
export interface ReferenceDims {
  // vision
  channels: number; // C
  imageSize: number; // S
  patchSize: number; // P
  numPatches: number; // N = (S / P)²
  visionHidden: number; // Dv
  visionIntermediate: number; // Iv
  visionHeads: number;
  visionHeadDim: number; // Dv / visionHeads
  visionLayers: number;
  visionEps: number;
  // text
  hidden: number; // H
  intermediate: number; // I
  vocab: number; // V
  heads: number; // nH
  kvHeads: number; // nKV
  headDim: number; // hd
  textLayers: number;
  rmsEps: number;
  ropeTheta: number;
  imageTokenId: number;
  tiedLmHead: boolean;
}

// ---------------------------------------------------------------------------------------------
// Scalar helpers
// ---------------------------------------------------------------------------------------------

/** GELU, tanh approximation: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))). */
export function geluTanh(x: number): number {
  const c = Math.sqrt(2 / Math.PI);
  return 0.5 * x * (1 + Math.tanh(c * (x + 0.044715 * x * x * x)));
}

/**
 * Rounds a float64 straight to a binary floating-point format with `fractionBits` stored
 * fraction bits, smallest normal exponent `minExponent` and largest finite value `maxFinite`,
 * round-to-nearest, ties-to-even (IEEE default). Subnormals are handled by clamping the
 * exponent; overflow goes to ±Infinity.
 */
function roundToFormat(x: number, fractionBits: number, minExponent: number, maxFinite: number): number {
  if (!Number.isFinite(x) || x === 0) return x;
  const sign = x < 0 ? -1 : 1;
  const a = Math.abs(x);
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e -= 1; // guard against log2 rounding
  if (2 ** (e + 1) <= a) e += 1;
  if (e < minExponent) e = minExponent; // subnormal range: fixed spacing
  const ulp = 2 ** (e - fractionBits);
  const q = a / ulp; // exact: division by a power of two
  let n = Math.floor(q);
  const rest = q - n;
  if (rest > 0.5 || (rest === 0.5 && n % 2 === 1)) n += 1;
  const r = n * ulp;
  return r > maxFinite ? sign * Infinity : sign * r;
}

/** `x` rounded to the given dtype, returned as a float64 number. */
export function roundToDtype(x: number, dtype: EmbedScaleDtype): number {
  switch (dtype) {
    case 'f32':
      return Math.fround(x);
    case 'bf16': // 8 exponent bits, 7 fraction bits
      return roundToFormat(x, 7, -126, (2 - 2 ** -7) * 2 ** 127);
    case 'f16': // 5 exponent bits, 10 fraction bits
      return roundToFormat(x, 10, -14, 65504);
    default:
      throw new Error(`reference: unknown embedScaleDtype ${String(dtype)}`);
  }
}

/** Gemma's embedding scale: sqrt(hidden) held in `dtype`. */
export function embedNormalizer(hidden: number, dtype: EmbedScaleDtype = 'f32'): number {
  return roundToDtype(Math.sqrt(hidden), dtype);
}

// ---------------------------------------------------------------------------------------------
// Tensor operations (row-major Float64Array; row count derived from the length)
// ---------------------------------------------------------------------------------------------

function rowsOf(length: number, width: number, what: string): number {
  const rows = length / width;
  if (!Number.isInteger(rows)) throw new Error(`reference: ${what}: length ${length} is not a multiple of ${width}`);
  return rows;
}

/** y = x·Wᵀ + b for a PyTorch Linear. x [R, in], W [out, in], b [out] → [R, out]. */
export function linear(x: Float64Array, w: RefTensor, b?: RefTensor): Float64Array {
  const [outDim, inDim] = w.shape;
  const rows = rowsOf(x.length, inDim, 'linear input');
  if (b && (b.shape.length !== 1 || b.shape[0] !== outDim)) throw new Error('reference: linear bias shape');
  const y = new Float64Array(rows * outDim); // [R, out]
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outDim; o++) {
      let acc = b ? b.data[o] : 0;
      for (let i = 0; i < inDim; i++) acc += x[r * inDim + i] * w.data[o * inDim + i];
      y[r * outDim + o] = acc;
    }
  }
  return y;
}

/** Elementwise a + b (same shape). */
export function add(a: Float64Array, b: Float64Array): Float64Array {
  if (a.length !== b.length) throw new Error('reference: add shape mismatch');
  const y = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) y[i] = a[i] + b[i];
  return y;
}

/**
 * LayerNorm over the last axis with biased variance: (x − mean) / sqrt(var + eps) · w + b.
 * x [R, D], weight [D], bias [D] → [R, D].
 */
export function layerNorm(x: Float64Array, weight: ArrayLike<number>, bias: ArrayLike<number>, eps: number): Float64Array {
  const d = weight.length;
  const rows = rowsOf(x.length, d, 'layerNorm input');
  const y = new Float64Array(x.length); // [R, D]
  for (let r = 0; r < rows; r++) {
    let mean = 0;
    for (let i = 0; i < d; i++) mean += x[r * d + i];
    mean /= d;
    let variance = 0;
    for (let i = 0; i < d; i++) variance += (x[r * d + i] - mean) ** 2;
    variance /= d; // biased (divide by D, not D − 1)
    const inv = 1 / Math.sqrt(variance + eps);
    for (let i = 0; i < d; i++) y[r * d + i] = (x[r * d + i] - mean) * inv * weight[i] + bias[i];
  }
  return y;
}

/**
 * Gemma RMSNorm over the last axis: x / sqrt(mean(x²) + eps) · (1 + w).
 * x [R, D], weight [D] → [R, D].
 */
export function gemmaRmsNorm(x: Float64Array, weight: ArrayLike<number>, eps: number): Float64Array {
  const d = weight.length;
  const rows = rowsOf(x.length, d, 'gemmaRmsNorm input');
  const y = new Float64Array(x.length); // [R, D]
  for (let r = 0; r < rows; r++) {
    let meanSquare = 0;
    for (let i = 0; i < d; i++) meanSquare += x[r * d + i] ** 2;
    meanSquare /= d;
    const inv = 1 / Math.sqrt(meanSquare + eps);
    for (let i = 0; i < d; i++) y[r * d + i] = x[r * d + i] * inv * (1 + weight[i]);
  }
  return y;
}

/**
 * Rotary position embedding, rotate-half layout (NOT interleaved): within each head, dimension i
 * is paired with i + hd/2. With inv_freq_i = theta^(−2i/hd) and angle = position · inv_freq_i:
 *   out_i        = x_i · cos − x_{i+hd/2} · sin
 *   out_{i+hd/2} = x_{i+hd/2} · cos + x_i · sin
 * x [T, nHeads·hd], positions [T] (taken as given; the caller decides 0- or 1-based) → same shape.
 */
export function ropeRotateHalf(
  x: Float64Array, positions: ArrayLike<number>, nHeads: number, headDim: number, theta: number,
): Float64Array {
  if (headDim % 2 !== 0) throw new Error('reference: RoPE head_dim must be even');
  const t = positions.length;
  const width = nHeads * headDim;
  if (x.length !== t * width) throw new Error(`reference: RoPE input length ${x.length} ≠ ${t}·${width}`);
  const half = headDim / 2;
  const y = new Float64Array(x.length); // [T, nHeads·hd]
  for (let s = 0; s < t; s++) {
    for (let h = 0; h < nHeads; h++) {
      const base = s * width + h * headDim;
      for (let i = 0; i < half; i++) {
        const invFreq = theta ** (-(2 * i) / headDim);
        const angle = positions[s] * invFreq;
        const cos = Math.cos(angle);
        const sin = Math.sin(angle);
        const a = x[base + i];
        const b = x[base + i + half];
        y[base + i] = a * cos - b * sin;
        y[base + i + half] = b * cos + a * sin;
      }
    }
  }
  return y;
}

/**
 * Scaled dot-product attention with grouped-query heads.
 * q [T, nH·hd], k [S, nKV·hd], v [S, nKV·hd] → [T, nH·hd].
 * Query head h reads kv head floor(h / (nH / nKV)). Scores are scaled by hd^−0.5; key j is
 * visible to query i only where allow(i, j) is true (a query that sees nothing is an error).
 */
export function attention(
  q: Float64Array, k: Float64Array, v: Float64Array,
  nH: number, nKV: number, hd: number,
  allow: (i: number, j: number) => boolean,
): Float64Array {
  if (nH % nKV !== 0) throw new Error(`reference: ${nH} query heads not divisible by ${nKV} kv heads`);
  if (k.length !== v.length) throw new Error('reference: attention k and v differ in shape');
  const t = rowsOf(q.length, nH * hd, 'attention q');
  const s = rowsOf(k.length, nKV * hd, 'attention k');
  const group = nH / nKV;
  const scale = 1 / Math.sqrt(hd);
  const qw = nH * hd;
  const kw = nKV * hd;
  const out = new Float64Array(t * qw); // [T, nH·hd]
  for (let h = 0; h < nH; h++) {
    const kvh = Math.floor(h / group);
    for (let i = 0; i < t; i++) {
      const scores = new Float64Array(s); // [S]
      const visible: boolean[] = new Array(s).fill(false);
      let max = -Infinity;
      for (let j = 0; j < s; j++) {
        if (!allow(i, j)) continue;
        visible[j] = true;
        let dot = 0;
        for (let d = 0; d < hd; d++) dot += q[i * qw + h * hd + d] * k[j * kw + kvh * hd + d];
        scores[j] = dot * scale;
        if (scores[j] > max) max = scores[j];
      }
      if (max === -Infinity) throw new Error(`reference: query ${i} may attend to no key`);
      const probs = new Float64Array(s); // [S]
      let sum = 0;
      for (let j = 0; j < s; j++) {
        probs[j] = visible[j] ? Math.exp(scores[j] - max) : 0;
        sum += probs[j];
      }
      for (let j = 0; j < s; j++) {
        if (!visible[j]) continue;
        const p = probs[j] / sum;
        for (let d = 0; d < hd; d++) out[i * qw + h * hd + d] += p * v[j * kw + kvh * hd + d];
      }
    }
  }
  return out;
}

/** PaliGemma prefix-LM mask: the prefix is bidirectional, the suffix causal (and sees the prefix). */
export function prefixLmAllow(prefixLength: number): (i: number, j: number) => boolean {
  return (i, j) => j < prefixLength || j <= i;
}

/** Numerically stable log-softmax of one row. [V] → [V]. */
export function referenceLogSoftmax(row: Float64Array): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i] > max) max = row[i];
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i] - max);
  const logZ = max + Math.log(sum);
  const y = new Float64Array(row.length); // [V]
  for (let i = 0; i < row.length; i++) y[i] = row[i] - logZ;
  return y;
}

// ---------------------------------------------------------------------------------------------
// Config and weights
// ---------------------------------------------------------------------------------------------

const V_PREFIX = 'vision_tower.vision_model.';
const T_PREFIX = 'language_model.model.';

type Json = Record<string, unknown>;

function num(obj: Json, key: string): number | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`reference: config ${key} is not a number`);
  return v;
}

/** Fetches a weight and checks its shape. */
export function param(weights: RefWeights, name: string, shape: number[]): RefTensor {
  const w = weights[name];
  if (!w) throw new Error(`reference: missing weight ${name}`);
  const same = w.shape.length === shape.length && w.shape.every((d, i) => d === shape[i]);
  if (!same) throw new Error(`reference: ${name} has shape [${w.shape}], expected [${shape}]`);
  const count = shape.reduce((a, b) => a * b, 1);
  if (w.data.length !== count) throw new Error(`reference: ${name} holds ${w.data.length} values, shape needs ${count}`);
  return w;
}

function shapeOf(weights: RefWeights, name: string): number[] {
  const w = weights[name];
  if (!w) throw new Error(`reference: missing weight ${name}`);
  return w.shape;
}

/** Number of layers present under `prefix` + `layers.{i}.`. */
function countLayers(weights: RefWeights, layersPrefix: string): number {
  let max = -1;
  for (const name of Object.keys(weights)) {
    if (!name.startsWith(layersPrefix)) continue;
    const i = Number.parseInt(name.slice(layersPrefix.length), 10);
    if (Number.isInteger(i) && i > max) max = i;
  }
  return max + 1;
}

function agree(what: string, fromConfig: number | undefined, fromWeights: number): number {
  if (fromConfig !== undefined && fromConfig !== fromWeights) {
    throw new Error(`reference: config ${what} = ${fromConfig} but the weights say ${fromWeights}`);
  }
  return fromWeights;
}

/**
 * Reads the sizes from the weight shapes, the remaining constants from the raw config.json, and
 * cross-checks the two. Defaults for keys config.json may omit are Hugging Face's:
 *  - text: head_dim 256, rms_norm_eps 1e-6, rope_theta 10000, num_attention_heads 16 (GemmaConfig),
 *    num_key_value_heads = num_attention_heads when omitted. (GemmaConfig's literal default is 16,
 *    which equals its own num_attention_heads default; for an explicitly given head count we take
 *    plain multi-head attention rather than 16, which is the only reading that can be valid.)
 *  - vision: image_size 224, layer_norm_eps 1e-6, num_channels 3, num_attention_heads 12
 *    (SiglipVisionConfig; PaliGemma's shipped config.json always states it).
 *  - image_token_index 256000 (PaliGemmaConfig), also accepted under the newer name image_token_id.
 */
export function resolveReferenceDims(weights: RefWeights, config: Json): ReferenceDims {
  const text = (config.text_config ?? {}) as Json;
  const vision = (config.vision_config ?? {}) as Json;

  // Vision sizes from the weights.
  const patchShape = shapeOf(weights, `${V_PREFIX}embeddings.patch_embedding.weight`); // [Dv, C, P, P]
  if (patchShape.length !== 4 || patchShape[2] !== patchShape[3]) throw new Error('reference: patch_embedding must be [Dv, C, P, P]');
  const visionHidden = agree('vision_config.hidden_size', num(vision, 'hidden_size'), patchShape[0]);
  const channels = agree('vision_config.num_channels', num(vision, 'num_channels') ?? 3, patchShape[1]);
  const patchSize = agree('vision_config.patch_size', num(vision, 'patch_size'), patchShape[2]);
  const imageSize = num(vision, 'image_size') ?? 224;
  if (imageSize % patchSize !== 0) throw new Error(`reference: image_size ${imageSize} not a multiple of patch ${patchSize}`);
  const numPatches = (imageSize / patchSize) ** 2;
  const visionLayers = agree('vision_config.num_hidden_layers', num(vision, 'num_hidden_layers'),
    countLayers(weights, `${V_PREFIX}encoder.layers.`));
  const visionIntermediate = agree('vision_config.intermediate_size', num(vision, 'intermediate_size'),
    shapeOf(weights, `${V_PREFIX}encoder.layers.0.mlp.fc1.weight`)[0]);
  const visionHeads = num(vision, 'num_attention_heads') ?? 12;
  if (visionHidden % visionHeads !== 0) throw new Error('reference: vision hidden not divisible by heads');

  // Text sizes from the weights.
  const embedShape = shapeOf(weights, `${T_PREFIX}embed_tokens.weight`); // [V, H]
  const vocab = agree('text_config.vocab_size', num(text, 'vocab_size'), embedShape[0]);
  const hidden = agree('text_config.hidden_size', num(text, 'hidden_size'), embedShape[1]);
  const intermediate = agree('text_config.intermediate_size', num(text, 'intermediate_size'),
    shapeOf(weights, `${T_PREFIX}layers.0.mlp.gate_proj.weight`)[0]);
  const textLayers = agree('text_config.num_hidden_layers', num(text, 'num_hidden_layers'),
    countLayers(weights, `${T_PREFIX}layers.`));
  const heads = num(text, 'num_attention_heads') ?? 16;
  const kvHeads = num(text, 'num_key_value_heads') ?? heads;
  const headDim = num(text, 'head_dim') ?? 256;
  if (heads % kvHeads !== 0) throw new Error('reference: text heads not divisible by kv heads');

  const imageTokenId = num(config, 'image_token_index') ?? num(config, 'image_token_id') ?? 256000;

  return {
    channels, imageSize, patchSize, numPatches, visionHidden, visionIntermediate, visionHeads,
    visionHeadDim: visionHidden / visionHeads, visionLayers,
    visionEps: num(vision, 'layer_norm_eps') ?? 1e-6,
    hidden, intermediate, vocab, heads, kvHeads, headDim, textLayers,
    rmsEps: num(text, 'rms_norm_eps') ?? 1e-6,
    ropeTheta: num(text, 'rope_theta') ?? 10000,
    imageTokenId,
    tiedLmHead: !('language_model.lm_head.weight' in weights),
  };
}

// ---------------------------------------------------------------------------------------------
// SigLIP vision tower
// ---------------------------------------------------------------------------------------------

/**
 * Conv with kernel = stride = P, then flattened in row-major grid order (patch n = gy·G + gx).
 * pixels [C, S, S], weight [Dv, C, P, P], bias [Dv] → [N, Dv].
 */
function patchEmbed(pixels: ArrayLike<number>, dims: ReferenceDims, weight: RefTensor, bias: RefTensor): Float64Array {
  const { channels: c, imageSize: s, patchSize: p, visionHidden: dv } = dims;
  const grid = s / p;
  const out = new Float64Array(grid * grid * dv); // [N, Dv]
  for (let gy = 0; gy < grid; gy++) {
    for (let gx = 0; gx < grid; gx++) {
      const n = gy * grid + gx;
      for (let o = 0; o < dv; o++) {
        let acc = bias.data[o];
        for (let ch = 0; ch < c; ch++) {
          for (let py = 0; py < p; py++) {
            for (let px = 0; px < p; px++) {
              const w = weight.data[((o * c + ch) * p + py) * p + px];
              const pix = pixels[(ch * s + gy * p + py) * s + gx * p + px];
              acc += w * pix;
            }
          }
        }
        out[n * dv + o] = acc;
      }
    }
  }
  return out;
}

/** One SigLIP encoder layer. x [N, Dv] → [N, Dv]. */
function siglipLayer(x: Float64Array, weights: RefWeights, dims: ReferenceDims, layer: number): Float64Array {
  const { visionHidden: dv, visionIntermediate: iv, visionHeads: nh, visionHeadDim: hd, visionEps: eps } = dims;
  const pre = `${V_PREFIX}encoder.layers.${layer}.`;
  const p = (name: string, shape: number[]) => param(weights, pre + name, shape);

  // Attention block.
  const ln1 = layerNorm(x, p('layer_norm1.weight', [dv]).data, p('layer_norm1.bias', [dv]).data, eps); // [N, Dv]
  const q = linear(ln1, p('self_attn.q_proj.weight', [dv, dv]), p('self_attn.q_proj.bias', [dv])); // [N, Dv]
  const k = linear(ln1, p('self_attn.k_proj.weight', [dv, dv]), p('self_attn.k_proj.bias', [dv])); // [N, Dv]
  const v = linear(ln1, p('self_attn.v_proj.weight', [dv, dv]), p('self_attn.v_proj.bias', [dv])); // [N, Dv]
  const a = attention(q, k, v, nh, nh, hd, () => true); // [N, Dv]
  const o = linear(a, p('self_attn.out_proj.weight', [dv, dv]), p('self_attn.out_proj.bias', [dv])); // [N, Dv]
  const h = add(x, o); // [N, Dv]

  // MLP block.
  const ln2 = layerNorm(h, p('layer_norm2.weight', [dv]).data, p('layer_norm2.bias', [dv]).data, eps); // [N, Dv]
  const up = linear(ln2, p('mlp.fc1.weight', [iv, dv]), p('mlp.fc1.bias', [iv])); // [N, Iv]
  const act = up.map(geluTanh); // [N, Iv]
  const down = linear(act, p('mlp.fc2.weight', [dv, iv]), p('mlp.fc2.bias', [dv])); // [N, Dv]
  return add(h, down); // [N, Dv]
}

/** SigLIP vision model without pooling head. pixels [C, S, S] → [N, Dv] (after post_layernorm). */
export function siglipVision(pixels: ArrayLike<number>, weights: RefWeights, dims: ReferenceDims): Float64Array {
  const { channels: c, patchSize: pz, visionHidden: dv, numPatches: n, visionEps: eps } = dims;
  const patchW = param(weights, `${V_PREFIX}embeddings.patch_embedding.weight`, [dv, c, pz, pz]);
  const patchB = param(weights, `${V_PREFIX}embeddings.patch_embedding.bias`, [dv]);
  const pos = param(weights, `${V_PREFIX}embeddings.position_embedding.weight`, [n, dv]);

  const patches = patchEmbed(pixels, dims, patchW, patchB); // [N, Dv]
  let x: Float64Array = new Float64Array(n * dv); // [N, Dv]
  for (let i = 0; i < n * dv; i++) x[i] = patches[i] + pos.data[i]; // patch n gets position row n

  for (let l = 0; l < dims.visionLayers; l++) x = siglipLayer(x, weights, dims, l); // [N, Dv]

  const postW = param(weights, `${V_PREFIX}post_layernorm.weight`, [dv]);
  const postB = param(weights, `${V_PREFIX}post_layernorm.bias`, [dv]);
  return layerNorm(x, postW.data, postB.data, eps); // [N, Dv]
}

// ---------------------------------------------------------------------------------------------
// Merge and Gemma decoder
// ---------------------------------------------------------------------------------------------

/**
 * Builds the decoder input. Text rows: embed_tokens[id] · normalizer. Image rows (in order, at
 * the positions holding the image token id): the projected image features, unscaled.
 *
 * Why unscaled: Hugging Face divides the image features by sqrt(hidden_size) when it merges them,
 * and the Gemma decoder then multiplies every input row (text and image alike) by the normalizer
 * (sqrt(hidden_size) in the compute dtype). The two cancel up to the rounding of the normalizer;
 * we take the net factor on image rows as exactly 1.
 *
 * imageFeatures [N, H], embed [V, H] → [T, H].
 */
export function mergeEmbeddings(
  inputIds: readonly number[], imageFeatures: Float64Array, embed: RefTensor, dims: ReferenceDims, normalizer: number,
): Float64Array {
  const { hidden: h, vocab, imageTokenId, numPatches } = dims;
  const t = inputIds.length;
  const x = new Float64Array(t * h); // [T, H]
  let nextImageRow = 0;
  for (let s = 0; s < t; s++) {
    const id = inputIds[s];
    if (id === imageTokenId) {
      if (nextImageRow >= numPatches) throw new Error(`reference: more than ${numPatches} image tokens`);
      for (let d = 0; d < h; d++) x[s * h + d] = imageFeatures[nextImageRow * h + d];
      nextImageRow++;
    } else {
      if (!Number.isInteger(id) || id < 0 || id >= vocab) throw new Error(`reference: token id ${id} outside [0, ${vocab})`);
      for (let d = 0; d < h; d++) x[s * h + d] = embed.data[id * h + d] * normalizer;
    }
  }
  if (nextImageRow !== numPatches) {
    throw new Error(`reference: found ${nextImageRow} image tokens, the image gives ${numPatches}`);
  }
  return x;
}

/** One Gemma 1 decoder layer. x [T, H], positions [T] → [T, H]. */
function gemmaLayer(
  x: Float64Array, positions: number[], allow: (i: number, j: number) => boolean,
  weights: RefWeights, dims: ReferenceDims, layer: number,
): Float64Array {
  const { hidden: h, intermediate: im, heads: nh, kvHeads: nkv, headDim: hd, rmsEps: eps, ropeTheta: theta } = dims;
  const pre = `${T_PREFIX}layers.${layer}.`;
  const p = (name: string, shape: number[]) => param(weights, pre + name, shape);

  // Attention block.
  const n1 = gemmaRmsNorm(x, p('input_layernorm.weight', [h]).data, eps); // [T, H]
  const q = linear(n1, p('self_attn.q_proj.weight', [nh * hd, h])); // [T, nH·hd]
  const k = linear(n1, p('self_attn.k_proj.weight', [nkv * hd, h])); // [T, nKV·hd]
  const v = linear(n1, p('self_attn.v_proj.weight', [nkv * hd, h])); // [T, nKV·hd]
  const qr = ropeRotateHalf(q, positions, nh, hd, theta); // [T, nH·hd]
  const kr = ropeRotateHalf(k, positions, nkv, hd, theta); // [T, nKV·hd]
  const a = attention(qr, kr, v, nh, nkv, hd, allow); // [T, nH·hd]
  const o = linear(a, p('self_attn.o_proj.weight', [h, nh * hd])); // [T, H]
  const r1 = add(x, o); // [T, H]

  // Gated MLP block.
  const n2 = gemmaRmsNorm(r1, p('post_attention_layernorm.weight', [h]).data, eps); // [T, H]
  const gate = linear(n2, p('mlp.gate_proj.weight', [im, h])); // [T, I]
  const up = linear(n2, p('mlp.up_proj.weight', [im, h])); // [T, I]
  const gated = new Float64Array(gate.length); // [T, I]
  for (let i = 0; i < gate.length; i++) gated[i] = geluTanh(gate[i]) * up[i];
  const down = linear(gated, p('mlp.down_proj.weight', [h, im])); // [T, H]
  return add(r1, down); // [T, H]
}

// ---------------------------------------------------------------------------------------------
// Whole model
// ---------------------------------------------------------------------------------------------

/**
 * PaliGemma 1 forward pass in float64.
 * pixelValues [C, S, S] (already normalised), inputIds [T] whose image-token positions receive the
 * N image features in order, prefixLength: see `prefixLmAllow`.
 */
export function referenceForward(
  weights: RefWeights,
  config: Record<string, unknown>,
  pixelValues: Float32Array,
  inputIds: number[],
  prefixLength: number,
  opts: ReferenceOptions = {},
): ReferenceOutput {
  const dims = resolveReferenceDims(weights, config);
  const { channels: c, imageSize: s, visionHidden: dv, hidden: h, vocab } = dims;
  const t = inputIds.length;
  if (pixelValues.length !== c * s * s) throw new Error(`reference: pixelValues has ${pixelValues.length} values, expected ${c}·${s}·${s}`);
  if (t === 0) throw new Error('reference: empty inputIds');
  if (!Number.isInteger(prefixLength) || prefixLength < 0 || prefixLength > t) {
    throw new Error(`reference: prefixLength ${prefixLength} outside [0, ${t}]`);
  }

  // Vision tower and projector.
  const visionOut = siglipVision(pixelValues, weights, dims); // [N, Dv]
  const projW = param(weights, 'multi_modal_projector.linear.weight', [h, dv]); // projection_dim must equal H
  const projB = param(weights, 'multi_modal_projector.linear.bias', [h]);
  const imageFeatures = linear(visionOut, projW, projB); // [N, H]

  // Decoder input.
  const embed = param(weights, `${T_PREFIX}embed_tokens.weight`, [vocab, h]); // [V, H]
  const normalizer = embedNormalizer(h, opts.embedScaleDtype ?? 'f32');
  let x = mergeEmbeddings(inputIds, imageFeatures, embed, dims, normalizer); // [T, H]

  // Decoder layers.
  const positions = inputIds.map((_, i) => i + 1); // [T], 1-based
  const allow = prefixLmAllow(prefixLength);
  for (let l = 0; l < dims.textLayers; l++) x = gemmaLayer(x, positions, allow, weights, dims, l); // [T, H]

  // Final norm and head.
  const hidden = gemmaRmsNorm(x, param(weights, `${T_PREFIX}norm.weight`, [h]).data, dims.rmsEps); // [T, H]
  const head = dims.tiedLmHead ? embed : param(weights, 'language_model.lm_head.weight', [vocab, h]); // [V, H]
  const logits = linear(hidden, head); // [T, V]

  return { logits, visionOut, imageFeatures, hidden };
}
