/**
 * Seeded random PaliGemma weights in memory: every tensor `expectedShapes(config)` lists, under
 * its canonical (classic Hugging Face) name, drawn by one rule per kind of tensor. The tiny test
 * checkpoints, the ONNX-vs-reference bench and the in-memory ONNX backend tests all use it.
 *
 * Values (`initRule`): linear and patch-conv weights ~ N(0, 1/fan_in) (fan_in = product of the
 * shape past the first axis), RMSNorm weights ~ N(0, 0.3) (Gemma scales by 1 + w), LayerNorm
 * weights ~ 1 + N(0, 0.1), biases ~ N(0, 0.1), position embeddings, embed_tokens and lm_head
 * ~ N(0, 0.5). Each tensor draws from its own stream seeded by (seed, canonical name), so the
 * values do not depend on the order of tensors or on which other tensors exist.
 *
 * ```ts
 * const weights = randomWeights(config, 3);             // canonical name → { data, shape }
 * for (const [name, w] of randomWeightEntries(config, 3)) upload(name, w);   // one host copy at a time
 * ```
 */
import type { PaliGemmaConfig } from '../model/config-types.js';
import { expectedShapes } from '../checkpoint/weight-names.js';

export interface RandomTensor { data: Float32Array; shape: number[] }

// ── seeded randomness ───────────────────────────────────────────────────────

/** mulberry32: a 32-bit state PRNG, uniform in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal samples by Box–Muller over a uniform source. */
export function gaussian(uniform: () => number): () => number {
  let spare: number | undefined;
  return () => {
    if (spare !== undefined) { const s = spare; spare = undefined; return s; }
    let u = 0;
    while (u === 0) u = uniform();
    const v = uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  };
}

/** FNV-1a over the UTF-16 code units of a string. */
function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

// ── the init rule ───────────────────────────────────────────────────────────

/** Values of a tensor are mean + std · N(0, 1). */
export interface InitDraw { mean: number; std: number }

/** Text-tower RMSNorm weights (Gemma and Gemma 2 names). */
const RMS_NORM = /^language_model\.model\.(norm|layers\.\d+\.(input_layernorm|post_attention_layernorm|pre_feedforward_layernorm|post_feedforward_layernorm))\.weight$/;
/** Vision-tower LayerNorm weights. */
const LAYER_NORM = /^vision_tower\.vision_model\.(post_layernorm|encoder\.layers\.\d+\.layer_norm[12])\.weight$/;
const EMBEDDING = /(\.position_embedding\.weight|\.embed_tokens\.weight|lm_head\.weight)$/;

/** How to draw the tensor with this canonical name and shape (see the file header). */
export function initRule(name: string, shape: readonly number[]): InitDraw {
  if (name.endsWith('.bias')) return { mean: 0, std: 0.1 };
  if (RMS_NORM.test(name)) return { mean: 0, std: 0.3 };
  if (LAYER_NORM.test(name)) return { mean: 1, std: 0.1 };
  if (EMBEDDING.test(name)) return { mean: 0, std: 0.5 };
  if (shape.length < 2) throw new Error(`initRule: no rule for the 1-D tensor ${name}`);
  const fanIn = shape.slice(1).reduce((a, b) => a * b, 1);
  return { mean: 0, std: 1 / Math.sqrt(fanIn) };
}

/** The values of one tensor: `initRule` drawn from the stream of (seed, name). */
export function randomTensor(seed: number, name: string, shape: readonly number[]): Float32Array {
  const { mean, std } = initRule(name, shape);
  const next = gaussian(mulberry32((hashString(name) ^ Math.imul(seed, 0x9e3779b1)) >>> 0));
  const out = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < out.length; i++) out[i] = mean + std * next();
  return out;
}

// ── whole models ────────────────────────────────────────────────────────────

/**
 * Every tensor of `expectedShapes(config)` (lm_head tied: not included), built one at a time as
 * the iteration reaches it, so a caller that uploads and drops each keeps one host copy alive.
 */
export function* randomWeightEntries(config: PaliGemmaConfig, seed: number): Generator<[string, RandomTensor]> {
  for (const [name, shape] of expectedShapes(config)) yield [name, { data: randomTensor(seed, name, shape), shape }];
}

/** Every tensor of `expectedShapes(config)`, canonical name → values and shape. */
export function randomWeights(config: PaliGemmaConfig, seed: number): Map<string, RandomTensor> {
  return new Map(randomWeightEntries(config, seed));
}

/** The sizes of an in-memory PaliGemma; modelConfig fills in the rest as PaliGemma 1 does. */
export interface ModelShape {
  vision: { hidden: number; inter: number; layers: number; heads: number; patch: number; image: number };
  text: { hidden: number; inter: number; layers: number; heads: number; kvHeads: number; headDim: number; vocab: number };
  /** Default: the last vocabulary id. */
  imageTokenIndex?: number;
}

export function modelConfig(s: ModelShape): PaliGemmaConfig {
  return {
    vision: {
      hiddenSize: s.vision.hidden, intermediateSize: s.vision.inter, numLayers: s.vision.layers, numHeads: s.vision.heads,
      patchSize: s.vision.patch, imageSize: s.vision.image, numChannels: 3, layerNormEps: 1e-6,
    },
    text: {
      hiddenSize: s.text.hidden, intermediateSize: s.text.inter, numLayers: s.text.layers, numHeads: s.text.heads,
      numKvHeads: s.text.kvHeads, headDim: s.text.headDim, vocabSize: s.text.vocab, rmsNormEps: 1e-6,
      ropeTheta: 10000, maxPositionEmbeddings: 8192,
    },
    projectionDim: s.text.hidden,
    imageTokenIndex: s.imageTokenIndex ?? s.text.vocab - 1,
    numImageTokens: (s.vision.image / s.vision.patch) ** 2,
    bosTokenId: 2, eosTokenId: 1, padTokenId: 0,
  };
}
