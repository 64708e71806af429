/**
 * PaliGemma-3B (or PaliGemma 2 3B) at 224, 448 or 896 px and chosen depth, with seeded random weights built in memory, and the work each
 * phase has to do (FLOPs for vision and prefill, bytes read per decode step) — the numbers the
 * bench divides by the machine's peak matmul rate and memory bandwidth to get its floors.
 *
 * Real shapes: SigLIP So400m (hidden 1152, MLP 4304, 16 heads, patch 14, 224 px → 256 image
 * tokens) and Gemma-2B (hidden 2048, MLP 16384, 8 query heads, 1 KV head, head dim 256,
 * vocabulary 257216, lm_head tied to the embeddings).
 */
import type { PaliGemmaConfig } from '../model/config-types.js';
import { expectedShapes } from '../checkpoint/weight-names.js';
import { initRule, modelConfig } from '../tiny-models/random-weights.js';

/** PaliGemma 1 (Gemma 2B decoder) or PaliGemma 2 3B (Gemma 2 2B decoder); the vision tower is the same. */
export type BenchModel = 'paligemma' | 'paligemma2';
export const BENCH_MODELS: readonly BenchModel[] = ['paligemma', 'paligemma2'];
/** Published input sizes: 256, 1024 and 4096 image tokens. */
export const BENCH_IMAGE_SIZES: readonly number[] = [224, 448, 896];

export interface BenchModelOptions {
  visionLayers: number;
  textLayers: number;
  /** Default 'paligemma' (PaliGemma-3B). */
  model?: BenchModel;
  /** Input side in pixels (default 224); image tokens = (size / 14)². */
  imageSize?: number;
  /** Divide every width (hidden, MLP, head dim, vocabulary, image side) by this; 1 = real shapes. For tests. */
  scaleDown?: number;
}

/**
 * The config of PaliGemma-3B (or PaliGemma 2 3B) at the given depth and image size (and, for
 * tests, narrower widths). PaliGemma 2's text model is Gemma 2 2B: hidden 2304, MLP 9216,
 * 8 heads, 4 KV heads, head dim 256, soft-caps 50 (attention) and 30 (final), window 4096 on
 * even layers, query scale 256^-0.5.
 */
export function benchConfig(o: BenchModelOptions): PaliGemmaConfig {
  const s = o.scaleDown ?? 1;
  const div = (x: number, min = 1) => Math.max(min, Math.round(x / s));
  const visionHeads = 16, textHeads = 8;
  const patch = 14;
  const imageSize = patch * div((o.imageSize ?? 224) / patch);
  const vocab = div(257216, 64);
  const g2 = o.model === 'paligemma2';
  const textHidden = div(g2 ? 2304 : 2048, 8);
  const config = modelConfig({
    vision: {
      hidden: visionHeads * div(1152 / visionHeads), inter: div(4304), layers: o.visionLayers,
      heads: visionHeads, patch, image: imageSize,
    },
    text: {
      hidden: textHidden, inter: div(g2 ? 9216 : 16384), layers: o.textLayers, heads: textHeads, kvHeads: g2 ? 4 : 1,
      headDim: 2 * div(128), vocab,
    },
    imageTokenIndex: vocab - div(64),                  // 257152 at real size
  });
  if (!g2) return config;
  const t = config.text;
  return {
    ...config,
    text: {
      ...t, modelType: 'gemma2', attnLogitSoftcapping: 50, finalLogitSoftcapping: 30,
      slidingWindow: div(4096), queryPreAttnScalar: t.headDim,
      layerTypes: Array.from({ length: t.numLayers }, (_, i) => (i % 2 === 0 ? 'sliding_attention' : 'full_attention')),
    },
  };
}

/** "PaliGemma-3B-224" or "PaliGemma 2 3B-896", and its full depth (vision + text layers). */
export function benchModelName(c: PaliGemmaConfig): { name: string; fullDepth: [number, number] } {
  const g2 = c.text.modelType === 'gemma2';
  return { name: `${g2 ? 'PaliGemma 2 3B' : 'PaliGemma-3B'}-${c.vision.imageSize}`, fullDepth: [27, g2 ? 26 : 18] };
}

export interface WeightSpec {
  name: string;
  shape: number[];
  /** Values are offset + uniform(−scale, scale). */
  scale: number;
  offset: number;
}

/**
 * Every weight the model reads (`expectedShapes`, classic Hugging Face names; lm_head tied: not
 * listed), each with the mean and spread of the shared init rule (src/tiny-models/random-weights.ts)
 * as a uniform draw of the same mean and standard deviation (scale = √3·std): `fillUniform` is
 * fast enough for the billions of elements of the full-size model, Box–Muller is not.
 */
export function weightSpecs(c: PaliGemmaConfig): WeightSpec[] {
  return [...expectedShapes(c)].map(([name, shape]) => {
    const { mean, std } = initRule(name, shape);
    return { name, shape, scale: Math.sqrt(3) * std, offset: mean };
  });
}

export const elementsOf = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/** Seeded uniform values (xorshift32), fast enough for billions of elements. */
export function fillUniform(out: Float32Array, seed: number, scale: number, offset = 0): Float32Array {
  let s = (seed * 2654435761) >>> 0 || 1;
  const k = (2 * scale) / 4294967296;
  for (let i = 0; i < out.length; i++) {
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
    out[i] = offset - scale + (s >>> 0) * k;
  }
  return out;
}

/** The prompt: N <image> tokens, <bos>, `textTokens` seeded ids, then "\n" (id 108 at real size). */
export function benchPromptIds(c: PaliGemmaConfig, textTokens: number, seed: number): Int32Array {
  const newline = Math.min(108, c.imageTokenIndex - 1);
  let s = seed >>> 0 || 1;
  const text = Array.from({ length: textTokens }, () => {
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
    return 3 + ((s >>> 0) % Math.max(1, c.imageTokenIndex - 3));
  });
  return Int32Array.from([...new Array<number>(c.numImageTokens).fill(c.imageTokenIndex), c.bosTokenId, ...text, newline]);
}

export interface PhaseCosts {
  /** Multiply-adds ×2 of the vision tower + projector (patch conv, linears, attention). */
  visionFlops: number;
  /** Same for the prefill over the whole prompt, logits of its last row included. */
  prefillFlops: number;
  /** Bytes a decode step must read at least, averaged over the steps: text weights, lm_head, KV cache. */
  decodeBytesPerToken: number;
  /** Bytes of all weights at float32. */
  weightBytes: number;
}

/** FLOPs and bytes per phase for a prompt of `promptLength` tokens and `newTokens` decode steps. */
export function phaseCosts(c: PaliGemmaConfig, promptLength: number, newTokens: number, bytesPerWeight = 4): PhaseCosts {
  const v = c.vision, t = c.text;
  const n = c.numImageTokens;
  const linear = (rows: number, inF: number, outF: number) => 2 * rows * inF * outF;
  const visionLayer = 4 * linear(n, v.hiddenSize, v.hiddenSize)
    + 2 * 2 * n * n * v.hiddenSize                                              // QKᵀ and P·V over all heads
    + linear(n, v.hiddenSize, v.intermediateSize) + linear(n, v.intermediateSize, v.hiddenSize);
  const visionFlops = linear(n, v.numChannels * v.patchSize ** 2, v.hiddenSize)
    + v.numLayers * visionLayer + linear(n, v.hiddenSize, c.projectionDim);

  const q = t.numHeads * t.headDim, kv = t.numKvHeads * t.headDim;
  const textLayer = (rows: number, context: number) => linear(rows, t.hiddenSize, q) + 2 * linear(rows, t.hiddenSize, kv)
    + 2 * 2 * rows * context * q                                                // QKᵀ and P·V
    + linear(rows, q, t.hiddenSize) + 3 * linear(rows, t.hiddenSize, t.intermediateSize);
  const prefillFlops = t.numLayers * textLayer(promptLength, promptLength) + linear(1, t.hiddenSize, t.vocabSize);

  const layerParams = 2 * t.hiddenSize + t.hiddenSize * (q + 2 * kv) + q * t.hiddenSize + 3 * t.hiddenSize * t.intermediateSize;
  const stepParams = t.numLayers * layerParams + t.hiddenSize /* final norm */ + t.vocabSize * t.hiddenSize /* lm_head */
    + t.hiddenSize /* the token's embedding row */;
  const meanContext = promptLength + (newTokens + 1) / 2;
  const kvBytes = t.numLayers * 2 * meanContext * kv * 4;                        // the cache is float32
  const weightBytes = weightSpecs(c).reduce((sum, w) => sum + elementsOf(w.shape), 0) * bytesPerWeight;
  return { visionFlops, prefillFlops, decodeBytesPerToken: stepParams * bytesPerWeight + kvBytes, weightBytes };
}
