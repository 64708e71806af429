/**
 * PaliGemma 1 and 2 (Beyer et al., "PaliGemma: A versatile 3B VLM for transfer"; Steiner et al.,
 * "PaliGemma 2"): SigLIP image rows
 * projected into Gemma's embedding space, followed by the prompt, decoded with a prefix-LM mask.
 *
 * Lifecycle (explicit, no hidden state):
 *   const rows = model.imageRows(pixels);                 // [N, H]
 *   const s = model.session(capacity);                    // allocates the KV cache once
 *   const last = await s.prefill(model.embedPrompt(ids, rows), ids.length);   // logits [V]
 *   const next = await s.step(tokenId);                   // one decode step
 *   s.dispose();
 */
import type { AttentionKernel, AttentionMask } from '../interfaces/attention-kernel.js';
import type { PixelValues } from '../interfaces/image-processor.js';
import type { KVCache, KVCacheStore } from '../interfaces/kv-cache-store.js';
import type { DType, Tensor, TensorBackend, TensorOps } from '../interfaces/tensor-backend.js';
import { withDefaultOps } from '../ops/with-default-ops.js';
import type { PaliGemmaConfig } from './config-types.js';
import { GemmaDecoder } from './gemma.js';
import { Gemma2Decoder, applyFinalSoftcap } from './gemma2.js';
import { beginSequence, stepSequences, type BeginOptions, type Sequence } from './model-sequence.js';
import type { Gemma2Options } from './gemma2-options.js';
import { PaliGemmaError } from '../interfaces/errors.js';
import { ModelWeights } from './model-weights.js';
import { assertFiniteLogits } from '../tensor/finite-check.js';
import { roundToDtype } from '../tensor/round-to-dtype.js';
import { SiglipVisionTower, projectImageFeatures } from './siglip.js';

/**
 * The decoder for text_config.model_type: Gemma (PaliGemma 1) or Gemma 2 (PaliGemma 2, with
 * `gemma2` options); any other type is refused by name rather than run as something it is not.
 */
export function decoderFor(backend: TensorBackend, attention: AttentionKernel, weights: ModelWeights, text: PaliGemmaConfig['text'], gemma2?: Gemma2Options): GemmaDecoder {
  const type = text.modelType ?? 'gemma';
  if (type === 'gemma') {
    if (gemma2 && Object.values(gemma2).some((v) => v !== undefined)) {
      throw new PaliGemmaError('the gemma2 options (finalLogitSoftcap, slidingWindow) apply to PaliGemma 2 only; this model\'s text_config.model_type is "gemma"', 'invalid_option');
    }
    return new GemmaDecoder(withDefaultOps(backend), attention, weights, text);
  }
  if (type === 'gemma2') return new Gemma2Decoder(withDefaultOps(backend), attention, weights, text, gemma2);
  throw new PaliGemmaError(`text_config.model_type ${JSON.stringify(type)} is not supported: expected "gemma" (PaliGemma 1) or "gemma2" (PaliGemma 2)`, 'unsupported_model');
}

export interface ModelParts {
  backend: TensorBackend;
  attention: AttentionKernel;
  kvCacheStore: KVCacheStore;
}

export interface ModelCheckpoint {
  config: PaliGemmaConfig;
  weights: ReadonlyMap<string, Tensor>;
  /** Stored dtype of the embeddings; √H is rounded to it, as Hugging Face does. */
  weightDtype: DType;
  /** PaliGemma 2 only: the conventions where references disagree (see gemma2-options.ts). */
  gemma2?: Gemma2Options;
}

export class PaliGemmaModel {
  readonly config: PaliGemmaConfig;
  /** parts.backend with the default composites for the ones it does not declare (src/ops). */
  readonly backend: TensorOps;
  /** The resolved weights (read by the batched decode step). */
  readonly weights: ModelWeights;
  private readonly vision: SiglipVisionTower;
  /** The decoder text_config.model_type names (decoderFor). */
  readonly decoder: GemmaDecoder;
  /** √H rounded to the weight dtype: text rows are embed·√H. */
  readonly embedScale: number;

  constructor(readonly parts: ModelParts, checkpoint: ModelCheckpoint) {
    this.config = checkpoint.config;
    this.backend = withDefaultOps(parts.backend);
    this.weights = new ModelWeights(checkpoint.weights);
    this.vision = new SiglipVisionTower(this.backend, parts.attention, this.weights, this.config.vision);
    this.decoder = decoderFor(this.backend, parts.attention, this.weights, this.config.text, checkpoint.gemma2);
    this.embedScale = roundToDtype(Math.sqrt(this.config.text.hiddenSize), checkpoint.weightDtype);
  }

  /** Normalised pixels → vision tower output [N, Dv] (after post_layernorm). */
  visionFeatures(pixels: PixelValues): Tensor {
    const px = this.backend.upload(pixels.data, pixels.shape);          // [C, S, S]
    const out = this.vision.forward(px);
    this.backend.dispose(px);
    return out;
  }

  /** Normalised pixels → image rows [N, H] that replace the <image> tokens. */
  imageRows(pixels: PixelValues): Tensor {
    const features = this.visionFeatures(pixels);                       // [N, Dv]
    const rows = projectImageFeatures(this.backend, this.weights, features);
    this.backend.dispose(features);
    return rows;
  }

  /**
   * ids [T] → decoder input [T, H]: text rows are embed(id)·√H; the i-th <image> token takes
   * image row i. Hugging Face divides the features by √H before the decoder multiplies every
   * row by √H, so image rows enter as the projector output itself.
   */
  embedPrompt(ids: Int32Array, imageRows: Tensor): Tensor {
    const b = this.backend, image = this.config.imageTokenIndex;
    const pieces: Tensor[] = [];
    let imageRow = 0;
    for (let start = 0; start < ids.length;) {
      const isImage = ids[start] === image;
      let end = start + 1;
      while (end < ids.length && (ids[end] === image) === isImage) end++;
      if (isImage) {
        if (imageRow + (end - start) > imageRows.shape[0]) {
          throw new Error(`prompt has more <image> tokens than the ${imageRows.shape[0]} image rows`);
        }
        pieces.push(b.slice(imageRows, 0, imageRow, imageRow + end - start));   // [n, H]
        imageRow += end - start;
      } else {
        const raw = this.decoder.embed(ids.subarray(start, end));                // [n, H]
        pieces.push(b.scale(raw, this.embedScale));
        b.dispose(raw);
      }
      start = end;
    }
    const out = pieces.length === 1 ? pieces[0] : b.concat(pieces, 0);           // [T, H]
    if (pieces.length > 1) b.dispose(pieces);
    return out;
  }

  /**
   * Prefills image + prompt and returns a Sequence that owns its KV cache and positions:
   * `logits` [V] predict the next token; `step(id)`, `fork()`, `dispose()`. `image` is pixels or
   * image rows [N, H] from imageRows, which the caller may keep and pass again (the vision tower
   * then does not run). See model-sequence.ts.
   */
  begin(image: PixelValues | Tensor, ids: Int32Array, opts: BeginOptions): Promise<Sequence> {
    return beginSequence(this, image, ids, opts);
  }

  /** One decode step for B sequences in one batch (each weight read once); ids[i] is seqs[i]'s next token. */
  stepBatch(seqs: readonly Sequence[], ids: Int32Array): Promise<Float32Array[]> {
    return stepSequences(this, seqs, ids);
  }

  /** A decoding session whose KV cache holds up to `capacity` positions. */
  session(capacity: number): ModelSession {
    const t = this.config.text;
    const cache = this.parts.kvCacheStore.create(this.backend, {
      layers: t.numLayers, kvHeads: t.numKvHeads, headDim: t.headDim, capacity,
    });
    return new ModelSession(this, this.decoder, cache);
  }

  /** Text rows for ids [T]: embed·√H. */
  embedText(ids: Int32Array): Tensor {
    const raw = this.decoder.embed(ids);
    const out = this.backend.scale(raw, this.embedScale);
    this.backend.dispose(raw);
    return out;
  }
}

/**
 * Prefill + decode over one KV cache. The mask is each call's own: prefill's rows see the
 * prefix bidirectionally, and a decode row (past the prefix) sees every earlier position, where
 * a prefix-LM mask and a causal one agree; nothing is kept between calls but the cache.
 */
export class ModelSession {
  constructor(
    private readonly model: PaliGemmaModel,
    private readonly decoder: GemmaDecoder,
    readonly cache: KVCache,
  ) {}

  /**
   * Prefill: runs the whole input [T, H] through the decoder at once. The first
   * `prefixLength` rows attend bidirectionally (image + prompt); later rows are causal.
   * Returns logits [R, V] for rows [logitsFrom, T) (default: the last row only).
   */
  async prefill(embeds: Tensor, prefixLength: number, logitsFrom = embeds.shape[0] - 1, pause?: () => Promise<void>): Promise<Float32Array> {
    return this.run(embeds, { kind: 'prefixLm', prefixLength }, logitsFrom, pause);
  }

  /** Decode: one token at the next position; it sees the whole cache. Returns logits [V]. */
  async step(tokenId: number): Promise<Float32Array> {
    const x = this.model.embedText(Int32Array.of(tokenId));                       // [1, H]
    const logits = await this.run(x, { kind: 'causal' }, 0);
    this.model.backend.dispose(x);
    return logits;
  }

  dispose(): void {
    this.cache.dispose();
  }

  private async run(x: Tensor, mask: AttentionMask, logitsFrom: number, pause?: () => Promise<void>): Promise<Float32Array> {
    const b = this.model.backend;
    const hidden = pause
      ? await this.decoder.forwardPausing(x, this.cache, mask, pause)            // [T, H], yielding between layers
      : this.decoder.forward(x, this.cache, mask);                               // [T, H]
    const rows = logitsFrom === 0 ? hidden : b.slice(hidden, 0, logitsFrom, hidden.shape[0]);
    const logits = this.decoder.logits(rows);                                     // [R, V]
    const out = applyFinalSoftcap(await b.read(logits), this.decoder.finalLogitSoftcap);
    b.dispose(rows === hidden ? [hidden, logits] : [hidden, rows, logits]);
    const start = this.cache.length - x.shape[0];
    assertFiniteLogits(out, this.model.config.text.vocabSize,
      x.shape[0] > 1 ? `prefill of positions ${start}…${this.cache.length - 1}` : `decode step at position ${start}`,
      b.engine ?? b.name);
    return out;
  }
}
