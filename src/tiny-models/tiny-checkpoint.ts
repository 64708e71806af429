/**
 * Tiny PaliGemma checkpoints with seeded random weights, written in the real Hugging Face layout
 * (config.json, model.safetensors or shards + index, preprocessor_config.json, tokenizer.json,
 * tokenizer_config.json), so the whole loading path runs as it does on a downloaded model.
 *
 * config.json leaves out what the published Google configs leave out (text rms_norm_eps,
 * rope_theta, max_position_embeddings; vision layer_norm_eps, num_channels), so the defaults
 * are exercised. It states head_dim, image_size and projection_dim, whose defaults (256, 224,
 * 2048) do not fit a tiny model.
 *
 * Values come from `randomTensor` in random-weights.ts: linear weights ~ N(0, 1/fan_in) (attention
 * is far from uniform), RMSNorm weights ~ N(0, 0.3) (Gemma scales by 1 + w), LayerNorm weights
 * ~ 1 + N(0, 0.1), biases ~ N(0, 0.1), position embeddings ~ N(0, 0.5), embed_tokens ~ N(0, 0.5).
 * Each tensor draws from its own stream seeded by (seed, canonical name), so the values do not
 * depend on the name scheme, the sharding or the order of tensors.
 *
 * ```ts
 * const dir = await makeTempDir('pg-');
 * const ckpt = await buildTinyCheckpoint(dir, { ...mqaSpec(), dtype: 'BF16', shards: 2 });
 * ckpt.weights['language_model.model.norm.weight'].data;   // the values as stored (bf16-rounded)
 * ```
 */
import { rmSync } from 'node:fs';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../tensor/dtype.js';
import { mulberry32, randomTensor } from './random-weights.js';
import { encodeSafetensors, type WriterDtype, type WriterTensor } from './safetensors-writer.js';
import { TINY_TOKENIZER, buildTinyTokenizerConfig, buildTinyTokenizerJson } from './tiny-tokenizer.js';

export interface TinyTextSpec {
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
}

export interface TinyVisionSpec {
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  patchSize: number;
  imageSize: number;
}

/** Gemma 2 text fields; present → text_config.model_type 'gemma2' and four norms per layer. */
export interface TinyGemma2Spec {
  slidingWindow: number;
  /** null writes an explicit null (soft-capping off). */
  attnLogitSoftcapping: number | null;
  finalLogitSoftcapping: number | null;
  queryPreAttnScalar: number;
  /** Written as text_config.layer_types when given. */
  layerTypes?: Array<'sliding_attention' | 'full_attention'>;
}

/** Gemma 2 fields of a tiny PaliGemma 2: a window shorter than the prompt, caps small enough to bite. */
export function tinyGemma2Fields(): TinyGemma2Spec {
  return { slidingWindow: 5, attnLogitSoftcapping: 1.5, finalLogitSoftcapping: 3.5, queryPreAttnScalar: 24 };
}

/** A tiny PaliGemma 2 (Gemma 2 decoder, grouped-query attention, 3 layers: sliding, full, sliding). */
export function gemma2Spec(): TinySpec {
  return {
    text: { hiddenSize: 48, intermediateSize: 96, numLayers: 3, numHeads: 4, numKvHeads: 2, headDim: 16 },
    vision: { ...TINY_VISION },
    gemma2: tinyGemma2Fields(),
  };
}

export interface TinySpec {
  text: TinyTextSpec;
  /** Makes the checkpoint a PaliGemma 2 one. */
  gemma2?: TinyGemma2Spec;
  vision: TinyVisionSpec;
  /** Stored dtype of every tensor (default F32). */
  dtype?: WriterDtype;
  /** 'classic' (language_model.model.*) or 'newer' (model.language_model.*, transformers ≥ 4.52). Default classic. */
  nameScheme?: 'classic' | 'newer';
  /** Number of safetensors files; > 1 writes model.safetensors.index.json. Default 1. */
  shards?: number;
  /** true: an untied lm_head with its own random values; 'copy': lm_head bytes equal to embed_tokens. Default false (tied). */
  includeLmHead?: boolean | 'copy';
  /** PRNG seed (default 1). */
  seed?: number;
}

export interface TinyCheckpoint {
  dir: string;
  spec: TinySpec;
  /** config.json exactly as written (snake_case). */
  configJson: Record<string, unknown>;
  /** Canonical (classic) name → values after rounding to the stored dtype. */
  weights: Record<string, { data: Float32Array; shape: number[] }>;
}

const TINY_VISION: TinyVisionSpec = {
  hiddenSize: 48, intermediateSize: 96, numLayers: 2, numHeads: 3, patchSize: 4, imageSize: 16,
};

/** Like PaliGemma-3B: one key/value head shared by all query heads. */
export function mqaSpec(): TinySpec {
  return {
    text: { hiddenSize: 64, intermediateSize: 128, numLayers: 2, numHeads: 4, numKvHeads: 1, headDim: 16 },
    vision: { ...TINY_VISION },
  };
}

/** Plain multi-head attention: as many key/value heads as query heads. */
export function mhaSpec(): TinySpec {
  return {
    text: { hiddenSize: 64, intermediateSize: 128, numLayers: 2, numHeads: 4, numKvHeads: 4, headDim: 16 },
    vision: { ...TINY_VISION },
  };
}

/**
 * Grouped-query attention with 2 groups, where numHeads·headDim (64) ≠ hidden (48) and √48 is
 * not exact; the vision tower uses another head count and patch size than the other presets.
 */
export function gqaSpec(): TinySpec {
  return {
    text: { hiddenSize: 48, intermediateSize: 96, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16 },
    vision: { hiddenSize: 32, intermediateSize: 64, numLayers: 2, numHeads: 2, patchSize: 8, imageSize: 24 },
  };
}

// ── seeded randomness ───────────────────────────────────────────────────────

export { gaussian, mulberry32 } from './random-weights.js';

/** Values as the dtype stores them (round to nearest even, then widened back). */
export function roundValues(data: Float32Array, dtype: WriterDtype): Float32Array {
  if (dtype === 'F32') return new Float32Array(data);
  return dtype === 'BF16' ? bf16ToF32(f32ToBf16(data)) : f16ToF32(f32ToF16(data));
}

// ── weights ─────────────────────────────────────────────────────────────────

/** Canonical name → shape, in the order the file stores them (values: see random-weights.ts). */
function weightPlan(spec: TinySpec): Map<string, number[]> {
  const m = new Map<string, number[]>();
  const linear = (name: string, out: number, inp: number, bias: boolean) => {
    m.set(`${name}.weight`, [out, inp]);
    if (bias) m.set(`${name}.bias`, [out]);
  };
  const layerNorm = (name: string, n: number) => {
    m.set(`${name}.weight`, [n]);
    m.set(`${name}.bias`, [n]);
  };
  const rmsNorm = (name: string, n: number) => m.set(`${name}.weight`, [n]);

  const v = spec.vision, t = spec.text;
  const V = 'vision_tower.vision_model';
  const patches = (v.imageSize / v.patchSize) ** 2;
  m.set(`${V}.embeddings.patch_embedding.weight`, [v.hiddenSize, 3, v.patchSize, v.patchSize]);
  m.set(`${V}.embeddings.patch_embedding.bias`, [v.hiddenSize]);
  m.set(`${V}.embeddings.position_embedding.weight`, [patches, v.hiddenSize]);
  for (let i = 0; i < v.numLayers; i++) {
    const L = `${V}.encoder.layers.${i}`;
    layerNorm(`${L}.layer_norm1`, v.hiddenSize);
    for (const p of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) linear(`${L}.self_attn.${p}`, v.hiddenSize, v.hiddenSize, true);
    layerNorm(`${L}.layer_norm2`, v.hiddenSize);
    linear(`${L}.mlp.fc1`, v.intermediateSize, v.hiddenSize, true);
    linear(`${L}.mlp.fc2`, v.hiddenSize, v.intermediateSize, true);
  }
  layerNorm(`${V}.post_layernorm`, v.hiddenSize);
  linear('multi_modal_projector.linear', t.hiddenSize, v.hiddenSize, true);

  const T = 'language_model.model';
  m.set(`${T}.embed_tokens.weight`, [TINY_TOKENIZER.vocabSize, t.hiddenSize]);
  for (let i = 0; i < t.numLayers; i++) {
    const L = `${T}.layers.${i}`;
    rmsNorm(`${L}.input_layernorm`, t.hiddenSize);
    linear(`${L}.self_attn.q_proj`, t.numHeads * t.headDim, t.hiddenSize, false);
    linear(`${L}.self_attn.k_proj`, t.numKvHeads * t.headDim, t.hiddenSize, false);
    linear(`${L}.self_attn.v_proj`, t.numKvHeads * t.headDim, t.hiddenSize, false);
    linear(`${L}.self_attn.o_proj`, t.hiddenSize, t.numHeads * t.headDim, false);
    rmsNorm(`${L}.post_attention_layernorm`, t.hiddenSize);
    if (spec.gemma2) {
      rmsNorm(`${L}.pre_feedforward_layernorm`, t.hiddenSize);
      rmsNorm(`${L}.post_feedforward_layernorm`, t.hiddenSize);
    }
    linear(`${L}.mlp.gate_proj`, t.intermediateSize, t.hiddenSize, false);
    linear(`${L}.mlp.up_proj`, t.intermediateSize, t.hiddenSize, false);
    linear(`${L}.mlp.down_proj`, t.hiddenSize, t.intermediateSize, false);
  }
  rmsNorm(`${T}.norm`, t.hiddenSize);
  if (spec.includeLmHead === true) m.set('language_model.lm_head.weight', [TINY_TOKENIZER.vocabSize, t.hiddenSize]);
  return m;
}

/** Classic name → the name the newer scheme writes. */
function newerSchemeName(classic: string): string {
  if (classic === 'language_model.lm_head.weight') return 'lm_head.weight';
  if (classic.startsWith('language_model.model.')) return `model.language_model.${classic.slice('language_model.model.'.length)}`;
  return `model.${classic}`;
}

const TORCH_DTYPE: Record<WriterDtype, string> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

/** config.json in the published layout (field order and omissions as in Google's files). */
export function tinyConfigJson(spec: TinySpec): Record<string, unknown> {
  const t = spec.text, v = spec.vision;
  const torchDtype = TORCH_DTYPE[spec.dtype ?? 'F32'];
  const numImageTokens = (v.imageSize / v.patchSize) ** 2;
  const g2 = spec.gemma2;
  const textConfig: Record<string, unknown> = {
    head_dim: t.headDim,
    hidden_size: t.hiddenSize,
    intermediate_size: t.intermediateSize,
    model_type: g2 ? 'gemma2' : 'gemma',
    num_attention_heads: t.numHeads,
    num_hidden_layers: t.numLayers,
    num_image_tokens: numImageTokens,
    num_key_value_heads: t.numKvHeads,
    torch_dtype: torchDtype,
    vocab_size: TINY_TOKENIZER.vocabSize,
  };
  if (g2) {
    Object.assign(textConfig, {
      attn_logit_softcapping: g2.attnLogitSoftcapping,
      final_logit_softcapping: g2.finalLogitSoftcapping,
      hidden_activation: 'gelu_pytorch_tanh',
      query_pre_attn_scalar: g2.queryPreAttnScalar,
      sliding_window: g2.slidingWindow,
    });
    if (g2.layerTypes) textConfig.layer_types = g2.layerTypes;
  }
  return {
    architectures: ['PaliGemmaForConditionalGeneration'],
    bos_token_id: TINY_TOKENIZER.bos,
    eos_token_id: TINY_TOKENIZER.eos,
    hidden_size: t.hiddenSize,
    ignore_index: -100,
    image_token_index: TINY_TOKENIZER.image,
    model_type: 'paligemma',
    pad_token_id: TINY_TOKENIZER.pad,
    projection_dim: t.hiddenSize,
    text_config: textConfig,
    torch_dtype: torchDtype,
    transformers_version: spec.nameScheme === 'newer' ? '4.52.4' : '4.41.0.dev0',
    vision_config: {
      hidden_size: v.hiddenSize,
      image_size: v.imageSize,
      intermediate_size: v.intermediateSize,
      model_type: 'siglip_vision_model',
      num_attention_heads: v.numHeads,
      num_hidden_layers: v.numLayers,
      num_image_tokens: numImageTokens,
      patch_size: v.patchSize,
      projection_dim: t.hiddenSize,
      projector_hidden_act: 'gelu_fast',
      vision_use_head: false,
    },
  };
}

/** preprocessor_config.json of a SigLIP image processor for the spec's image size. */
export function tinyPreprocessorJson(spec: TinySpec): Record<string, unknown> {
  const s = spec.vision.imageSize;
  return {
    do_convert_rgb: null,
    do_normalize: true,
    do_rescale: true,
    do_resize: true,
    image_mean: [0.5, 0.5, 0.5],
    image_processor_type: 'SiglipImageProcessor',
    image_seq_length: (s / spec.vision.patchSize) ** 2,
    image_std: [0.5, 0.5, 0.5],
    processor_class: 'PaliGemmaProcessor',
    resample: 3,
    rescale_factor: 1 / 255,
    size: { height: s, width: s },
  };
}

function shardName(i: number, n: number): string {
  return `model-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`;
}

/** Writes a tiny checkpoint into `dir` (created if missing) and returns what it wrote. */
export async function buildTinyCheckpoint(dir: string, spec: TinySpec): Promise<TinyCheckpoint> {
  const dtype = spec.dtype ?? 'F32';
  const seed = spec.seed ?? 1;
  const shards = spec.shards ?? 1;
  if (!Number.isInteger(shards) || shards < 1) throw new Error(`buildTinyCheckpoint: shards must be a positive integer, got ${shards}`);
  const { text: t, vision: v } = spec;
  if (v.imageSize % v.patchSize !== 0) throw new Error('buildTinyCheckpoint: image size must be a multiple of the patch size');
  if (t.numHeads % t.numKvHeads !== 0) throw new Error('buildTinyCheckpoint: heads must be a multiple of kv heads');
  if (v.hiddenSize % v.numHeads !== 0) throw new Error('buildTinyCheckpoint: vision hidden size must be a multiple of its heads');
  await mkdir(dir, { recursive: true });

  const weights: TinyCheckpoint['weights'] = {};
  const stored: [string, WriterTensor][] = [];
  for (const [name, shape] of weightPlan(spec)) {
    const data = roundValues(randomTensor(seed, name, shape), dtype);
    weights[name] = { data, shape };
    const fileName = spec.nameScheme === 'newer' ? newerSchemeName(name) : name;
    stored.push([fileName, { data, shape, dtype }]);
  }
  if (spec.includeLmHead === 'copy') {
    const embed = weights['language_model.model.embed_tokens.weight'];
    const name = 'language_model.lm_head.weight';
    weights[name] = { data: new Float32Array(embed.data), shape: [...embed.shape] };
    stored.push([spec.nameScheme === 'newer' ? newerSchemeName(name) : name, { data: embed.data, shape: embed.shape, dtype }]);
  }

  const metadata = { format: 'pt' };
  if (shards === 1) {
    await writeFile(join(dir, 'model.safetensors'), encodeSafetensors(Object.fromEntries(stored), metadata));
  } else {
    const weightMap: Record<string, string> = {};
    let totalSize = 0;
    const perShard = Math.ceil(stored.length / shards);
    for (let s = 0; s < shards; s++) {
      const part = stored.slice(s * perShard, (s + 1) * perShard);
      const file = shardName(s, shards);
      for (const [name, w] of part) {
        weightMap[name] = file;
        totalSize += w.data.length * (dtype === 'F32' ? 4 : 2);
      }
      await writeFile(join(dir, file), encodeSafetensors(Object.fromEntries(part), metadata));
    }
    await writeFile(join(dir, 'model.safetensors.index.json'),
      JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2));
  }

  const configJson = tinyConfigJson(spec);
  await writeFile(join(dir, 'config.json'), JSON.stringify(configJson, null, 2));
  await writeFile(join(dir, 'preprocessor_config.json'), JSON.stringify(tinyPreprocessorJson(spec), null, 2));
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(buildTinyTokenizerJson()));
  await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify(buildTinyTokenizerConfig(), null, 2));
  return { dir, spec, configJson, weights };
}

// ── temporary folders and images ────────────────────────────────────────────

const tempDirs: string[] = [];
let cleanupRegistered = false;

/**
 * A fresh folder under the OS temp dir, removed when the process exits (set
 * PALIGEMMA_KEEP_TEMP=1 to keep it for inspection).
 */
export async function makeTempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  tempDirs.push(dir);
  if (!cleanupRegistered) {
    cleanupRegistered = true;
    process.once('exit', () => {
      if (process.env.PALIGEMMA_KEEP_TEMP) return;
      for (const d of tempDirs) {
        try { rmSync(d, { recursive: true, force: true }); } catch { /* best effort */ }
      }
    });
  }
  return dir;
}

/**
 * A deterministic RGB test image (row-major, 3 bytes per pixel): smooth gradients, a
 * checkerboard and seeded noise, so resizing and patching have structure to work on.
 */
export function makeTestImage(width: number, height: number, seed = 0): { data: Uint8Array; width: number; height: number; channels: 3 } {
  const rand = mulberry32(0x5eed0000 ^ seed);
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      const fx = width > 1 ? x / (width - 1) : 0, fy = height > 1 ? y / (height - 1) : 0;
      const check = ((x >> 2) + (y >> 2)) % 2 === 0 ? 40 : 0;
      const noise = Math.floor(rand() * 48);
      data[i] = Math.min(255, Math.round(200 * fx) + check + (noise >> 1));
      data[i + 1] = Math.min(255, Math.round(200 * fy) + (noise >> 2) + ((seed * 53) % 40));
      data[i + 2] = Math.min(255, Math.round(120 * (1 - fx) + 100 * fy) + check + noise);
    }
  }
  return { data, width, height, channels: 3 };
}
