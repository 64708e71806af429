/**
 * config.json (Hugging Face PaliGemmaConfig, snake_case) → PaliGemmaConfig (camelCase) with the
 * library's defaults filled in, since the published Google configs leave many fields out.
 *
 * Defaults, as Hugging Face's config classes have them:
 * - top level: projection_dim 2048, image_token_index 256000 (the 3B checkpoints set 257152),
 *   bos_token_id 2, eos_token_id 1, pad_token_id 0;
 * - text_config (GemmaConfig): head_dim 256, rms_norm_eps 1e-6, rope_theta 10000,
 *   max_position_embeddings 8192; for `model_type: 'gemma2'` also attn_logit_softcapping 50,
 *   final_logit_softcapping 30, sliding_window 4096, query_pre_attn_scalar 256 (an explicit
 *   `null` switches soft-capping off, as in Gemma2Config), layer_types sliding on even layers;
 * - vision_config (SiglipVisionConfig): image_size 224, num_channels 3, layer_norm_eps 1e-6.
 *
 * num_key_value_heads: GemmaConfig's own default is 16 whatever the head count, which only makes
 * sense for 16-head models. An omitted value here means "no grouping" (= num_attention_heads);
 * every published PaliGemma config states it, so the choice only affects hand-written configs.
 *
 * numImageTokens is (image_size / patch_size)², like the library computes it; any
 * num_image_tokens in the file is ignored.
 *
 * ```ts
 * const config = parseConfig(JSON.parse(text), 'model/config.json');
 * config.text.headDim;   // 256 when the file leaves head_dim out
 * ```
 */
import { PaliGemmaError } from '../interfaces/errors.js';
import type { DType } from '../interfaces/tensor-backend.js';
import type { PaliGemmaConfig, TextConfig, VisionConfig } from '../model/config-types.js';
import { checkArchitecture, ropeThetaOf } from './architecture-check.js';

type Json = Record<string, unknown>;

const GEMMA2_DEFAULTS = {
  attn_logit_softcapping: 50,
  final_logit_softcapping: 30,
  sliding_window: 4096,
  query_pre_attn_scalar: 256,
} as const;

const TORCH_DTYPES: Readonly<Record<string, DType>> = {
  float32: 'f32', float: 'f32', 'torch.float32': 'f32',
  float16: 'f16', half: 'f16', 'torch.float16': 'f16',
  bfloat16: 'bf16', 'torch.bfloat16': 'bf16',
};

function isObject(x: unknown): x is Json {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** Reads fields of one object of config.json, naming `prefix.field` in every error. */
class Fields {
  constructor(private readonly path: string, private readonly obj: Json, private readonly prefix: string) {}

  private name(field: string): string {
    return this.prefix ? `${this.prefix}.${field}` : field;
  }

  fail(message: string): never {
    throw new PaliGemmaError(`${this.path}: ${message}`, 'invalid_config');
  }

  has(field: string): boolean {
    return this.obj[field] !== undefined && this.obj[field] !== null;
  }

  /** A positive integer; `fallback` undefined makes the field required. */
  size(field: string, fallback?: number): number {
    const v = this.obj[field];
    if (v === undefined || v === null) {
      if (fallback === undefined) this.fail(`missing required field ${this.name(field)}`);
      return fallback;
    }
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
      this.fail(`${this.name(field)} must be a positive integer, got ${JSON.stringify(v)}`);
    }
    return v;
  }

  /** A non-negative integer (token ids). */
  id(field: string, fallback: number): number {
    const v = this.obj[field];
    if (v === undefined || v === null) return fallback;
    // Some configs give a list of eos ids; the first is the one generation stops on by default.
    const first = Array.isArray(v) && v.length > 0 ? v[0] : v;
    if (typeof first !== 'number' || !Number.isInteger(first) || first < 0) {
      this.fail(`${this.name(field)} must be a non-negative integer, got ${JSON.stringify(v)}`);
    }
    return first;
  }

  /** A finite positive number. */
  positive(field: string, fallback: number): number {
    const v = this.obj[field];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
      this.fail(`${this.name(field)} must be a positive number, got ${JSON.stringify(v)}`);
    }
    return v;
  }

  /** Like `positive` but absent → `fallback` (possibly undefined) and explicit null → undefined. */
  optionalPositive(field: string, fallback: number | undefined): number | undefined {
    const v = this.obj[field];
    if (v === null) return undefined;
    if (v === undefined) return fallback;
    return this.positive(field, 0);
  }

  object(field: string): Fields {
    const v = this.obj[field];
    if (v === undefined || v === null) this.fail(`missing required field ${this.name(field)}`);
    if (!isObject(v)) this.fail(`${this.name(field)} must be an object`);
    return new Fields(this.path, v, this.name(field));
  }

  string(field: string): string | undefined {
    const v = this.obj[field];
    return typeof v === 'string' ? v : undefined;
  }
}

/** Gemma 2's text_config.layer_types; absent → Gemma2Config's default, sliding on even layers. */
function layerTypes(tc: Fields, obj: Json, numLayers: number): Array<'sliding_attention' | 'full_attention'> {
  const v = obj.layer_types;
  if (v === undefined || v === null) {
    return Array.from({ length: numLayers }, (_, i) => (i % 2 === 0 ? 'sliding_attention' : 'full_attention'));
  }
  if (!Array.isArray(v) || v.length !== numLayers || !v.every((t) => t === 'sliding_attention' || t === 'full_attention')) {
    tc.fail(`text_config.layer_types must list "sliding_attention" or "full_attention" for each of the ${numLayers} layers`);
  }
  return [...v] as Array<'sliding_attention' | 'full_attention'>;
}

/**
 * Validates config.json's parsed JSON and fills defaults. `path` names the file in errors.
 * Throws PaliGemmaError (one line) for a missing required field, a non-positive or
 * non-integer size, a model_type other than 'paligemma', or sizes that cannot fit together.
 */
export function parseConfig(json: unknown, path: string): PaliGemmaConfig {
  if (!isObject(json)) {
    throw new PaliGemmaError(`${path}: must hold a JSON object, got ${Array.isArray(json) ? 'an array' : typeof json}`, 'invalid_config');
  }
  const top = new Fields(path, json, '');
  checkArchitecture(json, path);
  const modelType = json.model_type;
  if (modelType !== undefined && modelType !== 'paligemma') {
    top.fail(`model_type is ${JSON.stringify(modelType)}, expected "paligemma"`);
  }
  const tc = top.object('text_config');
  const vc = top.object('vision_config');

  const textType = tc.string('model_type');
  const gemma2 = textType === 'gemma2';
  const numHeads = tc.size('num_attention_heads');
  const text: TextConfig = {
    hiddenSize: tc.size('hidden_size'),
    intermediateSize: tc.size('intermediate_size'),
    numLayers: tc.size('num_hidden_layers'),
    numHeads,
    numKvHeads: tc.size('num_key_value_heads', numHeads),
    headDim: tc.size('head_dim', 256),
    vocabSize: tc.size('vocab_size'),
    rmsNormEps: tc.positive('rms_norm_eps', 1e-6),
    ropeTheta: tc.positive('rope_theta', ropeThetaOf(json, path) ?? 10000),
    maxPositionEmbeddings: tc.size('max_position_embeddings', 8192),
  };
  const g2 = (field: keyof typeof GEMMA2_DEFAULTS) => tc.optionalPositive(field, gemma2 ? GEMMA2_DEFAULTS[field] : undefined);
  const attnCap = g2('attn_logit_softcapping');
  const finalCap = g2('final_logit_softcapping');
  const window = g2('sliding_window');
  const qScalar = g2('query_pre_attn_scalar');
  if (attnCap !== undefined) text.attnLogitSoftcapping = attnCap;
  if (finalCap !== undefined) text.finalLogitSoftcapping = finalCap;
  if (window !== undefined) {
    if (!Number.isInteger(window)) tc.fail(`text_config.sliding_window must be a positive integer, got ${window}`);
    text.slidingWindow = window;
  }
  if (qScalar !== undefined) text.queryPreAttnScalar = qScalar;
  if (textType !== undefined) text.modelType = textType;
  if (gemma2) text.layerTypes = layerTypes(tc, json.text_config as Json, text.numLayers);
  if (text.numHeads % text.numKvHeads !== 0) {
    tc.fail(`text_config.num_attention_heads (${text.numHeads}) is not a multiple of num_key_value_heads (${text.numKvHeads})`);
  }

  const vision: VisionConfig = {
    hiddenSize: vc.size('hidden_size'),
    intermediateSize: vc.size('intermediate_size'),
    numLayers: vc.size('num_hidden_layers'),
    numHeads: vc.size('num_attention_heads'),
    patchSize: vc.size('patch_size'),
    imageSize: vc.size('image_size', 224),
    numChannels: vc.size('num_channels', 3),
    layerNormEps: vc.positive('layer_norm_eps', 1e-6),
  };
  // SiglipVisionConfig builds a pooling head unless told not to; PaliGemma never uses its output.
  if ((json.vision_config as Json).vision_use_head !== false) vision.useHead = true;
  if (vision.hiddenSize % vision.numHeads !== 0) {
    vc.fail(`vision_config.hidden_size (${vision.hiddenSize}) is not a multiple of num_attention_heads (${vision.numHeads})`);
  }
  if (vision.imageSize % vision.patchSize !== 0) {
    vc.fail(`vision_config.image_size (${vision.imageSize}) is not a multiple of patch_size (${vision.patchSize})`);
  }

  const config: PaliGemmaConfig = {
    vision,
    text,
    projectionDim: top.size('projection_dim', 2048),
    imageTokenIndex: top.id('image_token_index', 256000),
    numImageTokens: (vision.imageSize / vision.patchSize) ** 2,
    bosTokenId: top.id('bos_token_id', 2),
    eosTokenId: top.id('eos_token_id', 1),
    padTokenId: top.id('pad_token_id', 0),
  };
  if (config.projectionDim !== text.hiddenSize) {
    top.fail(`projection_dim (${config.projectionDim}) must equal text_config.hidden_size (${text.hiddenSize})`);
  }
  if (config.imageTokenIndex >= text.vocabSize) {
    top.fail(`image_token_index ${config.imageTokenIndex} is outside text_config.vocab_size ${text.vocabSize}`);
  }
  // Newer files write `dtype`, older ones `torch_dtype`; the text config may carry it alone.
  const dtypeName = top.string('torch_dtype') ?? top.string('dtype') ?? tc.string('torch_dtype') ?? tc.string('dtype');
  const torchDtype = dtypeName === undefined ? undefined : TORCH_DTYPES[dtypeName];
  if (torchDtype !== undefined) config.torchDtype = torchDtype;
  return config;
}
