/**
 * The user-facing pipeline: image + prompt → streamed tokens, text, log-probabilities and
 * scores. Every part is injected (inversify), so any of them can be swapped by rebinding.
 */
import 'reflect-metadata';
import { inject, injectable } from 'inversify';
import { AttentionKernel } from '../interfaces/attention-kernel.js';
import { PaliGemmaError } from '../interfaces/errors.js';
import { ImageProcessor, type ImageInput } from '../interfaces/image-processor.js';
import { KVCacheStore } from '../interfaces/kv-cache-store.js';
import { Sampler } from '../interfaces/sampler.js';
import { TensorBackend } from '../interfaces/tensor-backend.js';
import { Tokenizer } from '../interfaces/tokenizer.js';
import { logSoftmax } from '../samplers/log-softmax.js';
import { seededRng } from '../samplers/rng.js';
import type {
  GenerateOptions, GeneratedToken, GenerationResult, ScoreResult, TokenLogprob,
} from './generation-types.js';
import { checkTokenizerMatchesConfig } from '../model/model-consistency.js';
import type { Sequence } from '../model/model-sequence.js';
import { PaliGemmaModel, type ModelCheckpoint } from '../model/paligemma-model.js';
import { promptIds, suffixIds } from './prompt-format.js';
import {
  checkGenerateOptions, checkImage, checkPromptFits, checkText, newTokenBudget,
} from './api-arguments.js';
import { Aborted, nextTurn, pauseFor } from './event-loop.js';
import { TextDeltas } from './text-deltas.js';

/** DI token of the loaded checkpoint the pipeline runs. */
export const ModelCheckpointToken = Symbol('ModelCheckpoint');
export type LoadedModel = ModelCheckpoint & { dispose?(): void };

const DEFAULT_MAX_NEW_TOKENS = 32;

/**
 * generate / stream / score over a Sequence. The task shortcuts (detect, segment, …) sit one
 * layer up, in PaliGemmaPipeline (src/paligemma-pipeline.ts), which is what createPipeline returns.
 */
@injectable()
export class GenerationPipeline {
  readonly model: PaliGemmaModel;

  constructor(
    @inject(TensorBackend) readonly backend: TensorBackend,
    @inject(AttentionKernel) attention: AttentionKernel,
    @inject(KVCacheStore) kvCacheStore: KVCacheStore,
    @inject(Sampler) readonly sampler: Sampler,
    @inject(Tokenizer) readonly tokenizer: Tokenizer,
    @inject(ImageProcessor) readonly imageProcessor: ImageProcessor,
    @inject(ModelCheckpointToken) private readonly checkpoint: LoadedModel,
  ) {
    checkTokenizerMatchesConfig(tokenizer, checkpoint.config);
    this.model = new PaliGemmaModel({ backend, attention, kvCacheStore }, checkpoint);
  }

  /** Name of the engine that runs the math, e.g. 'reference' or 'tfjs (wasm)'. */
  get backendName(): string {
    return this.backend.engine ?? this.backend.name;
  }

  /** Generates to completion. */
  async generate(image: ImageInput, prompt: string, opts: GenerateOptions = {}): Promise<GenerationResult> {
    const it = this.stream(image, prompt, opts);
    for (;;) {
      const r = await it.next();
      if (r.done) return r.value;
    }
  }

  /**
   * Streams generated tokens as they are decoded; the generator's return value is the full
   * result. Prefill runs image + prompt at once (bidirectional); each step adds one causal token.
   * The arguments are checked here, at the call, before anything runs.
   */
  stream(image: ImageInput, prompt: string, opts: GenerateOptions = {}): AsyncGenerator<GeneratedToken, GenerationResult> {
    this.checkOpen('stream');
    checkImage(image);
    checkText('prompt', prompt);
    const checked = checkGenerateOptions(opts, this.tokenizer.vocabSize);
    // The context is checked before any model work; a larger request is clamped to what fits.
    const ids = Int32Array.from(promptIds(this.tokenizer, prompt, this.model.config.numImageTokens));
    const maxNew = newTokenBudget(ids.length, checked.maxNewTokens ?? DEFAULT_MAX_NEW_TOKENS, this.model.config.text.maxPositionEmbeddings);
    return this.run(image, ids, maxNew, checked.seed, checked.logprobs, opts);
  }

  private async *run(
    image: ImageInput, ids: Int32Array, maxNew: number, seed: number, topN: number, opts: GenerateOptions,
  ): AsyncGenerator<GeneratedToken, GenerationResult> {
    const sampler = opts.sampler ?? this.sampler;
    const rng = seededRng(seed);
    const signal = opts.signal;
    const t0 = performance.now();

    const pixels = await this.imageProcessor.process(image);
    const t1 = performance.now();

    const tokens: number[] = [];
    const logprobs: Array<TokenLogprob & { top: TokenLogprob[] }> = [];
    const deltas = new TextDeltas(this.tokenizer);
    let finishReason: GenerationResult['finishReason'] = 'length';
    let seq: Sequence | undefined;
    try {
      // Between prefill layers the event loop runs, so an abort lands within one layer.
      seq = await this.model.begin(pixels, ids, { capacity: ids.length + maxNew - 1, pause: pauseFor(signal) });   // the last token is never fed
    } catch (e) {
      if (!(e instanceof Aborted)) throw e;
      finishReason = 'aborted';
    }
    const t3 = performance.now();
    const { visionMs, prefillMs } = seq?.timings ?? { visionMs: 0, prefillMs: t3 - t1 };
    try {
      let logits = seq?.logits;                                                   // [V]
      for (let step = 0; seq && logits && step < maxNew; step++) {
        if (signal?.aborted) { finishReason = 'aborted'; break; }
        const token = sampler.sample(logits, { rng });
        tokens.push(token);
        const piece: GeneratedToken = { token, text: deltas.push(token) };
        if (topN > 0) {
          const lp = logSoftmax(logits);
          const entry = { token, logprob: lp[token], top: topLogprobs(lp, topN) };
          logprobs.push(entry);
          Object.assign(piece, { logprob: entry.logprob, top: entry.top });
        }
        const last = token === this.tokenizer.special.eos || step + 1 === maxNew;
        if (last) piece.text += deltas.flush();
        yield piece;
        if (token === this.tokenizer.special.eos) { finishReason = 'eos'; break; }
        if (!last) {
          // One event-loop turn per step: a timer-fired abort is seen before the next one.
          await nextTurn();
          if (signal?.aborted) { finishReason = 'aborted'; break; }
          logits = await seq.step(token);
        }
      }
    } finally {
      seq?.dispose();
    }
    const t4 = performance.now();
    const generated = tokens.length;
    return {
      text: this.tokenizer.decode(tokens, { skipSpecialTokens: true }),
      tokens,
      finishReason,
      ...(topN > 0 ? { logprobs } : {}),
      backend: this.backendName,
      timings: {
        imageMs: t1 - t0,
        visionMs,
        prefillMs,
        decodeMs: t4 - t3,
        decodeMsPerToken: generated > 1 ? (t4 - t3) / (generated - 1) : 0,
        totalMs: t4 - t0,
        promptTokens: ids.length,
        generatedTokens: generated,
      },
    };
  }

  /**
   * Teacher-forced log-probability of each suffix token (with <eos> appended) given the image
   * and prompt: the prompt attends bidirectionally, the suffix causally.
   */
  async score(image: ImageInput, prompt: string, suffix: string): Promise<ScoreResult> {
    this.checkOpen('score');
    checkImage(image);
    checkText('prompt', prompt);
    checkText('suffix', suffix);
    const prefix = promptIds(this.tokenizer, prompt, this.model.config.numImageTokens);
    const target = suffixIds(this.tokenizer, suffix);
    const ids = Int32Array.from([...prefix, ...target]);
    checkPromptFits(ids.length, this.model.config.text.maxPositionEmbeddings, 'prompt + suffix');
    const pixels = await this.imageProcessor.process(image);
    // Rows prefix-1+i predict target[i]; the prompt attends bidirectionally, the suffix causally.
    const seq = await this.model.begin(pixels, ids, {
      capacity: ids.length, prefixLength: prefix.length, logitsFrom: prefix.length - 1, pause: pauseFor(undefined),
    });
    try {
      const logits = seq.promptLogits!;                                            // [S+1, V] flat
      const v = logits.length / (target.length + 1);
      const lps = target.map((tok, i) => logSoftmax(logits.subarray(i * v, (i + 1) * v))[tok]);
      return { tokens: target, logprobs: lps, total: lps.reduce((a, b) => a + b, 0) };
    } finally {
      seq.dispose();
    }
  }

  private closed = false;

  protected checkOpen(call: string): void {
    if (this.closed) throw new PaliGemmaError(`${call}() was called after close(): create a new pipeline`, 'closed');
  }

  /** The model folder the pipeline was loaded from (set by createPipeline). */
  modelDir?: string;

  /** What a subclass attached (task helpers) is released here, after the pipeline is marked closed. */
  protected async releaseAttached(): Promise<void> {}

  /** Releases the weights and the backend; later generate/stream/score calls fail with code 'closed'. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.releaseAttached();
    this.checkpoint.dispose?.();
    await this.backend.close?.();
  }
}

/** The n most likely tokens, best first (ties: lower id), without sorting the whole vocabulary. */
export function topLogprobs(lp: Float64Array, n: number): TokenLogprob[] {
  const best: TokenLogprob[] = [];
  for (let token = 0; token < lp.length; token++) {
    const logprob = lp[token];
    if (best.length === n && logprob <= best[n - 1].logprob) continue;
    let at = best.length;
    while (at > 0 && best[at - 1].logprob < logprob) at--;
    best.splice(at, 0, { token, logprob });
    if (best.length > n) best.pop();
  }
  return best;
}
