/**
 * Text in, text out over the batch scheduler: tokenizes the prompt, builds each choice's sampler,
 * turns tokens into text deltas (holding back an incomplete UTF-8 character, and text that may
 * still grow into a stop string) and cuts at stop strings. The HTTP routes speak only to this.
 */
import { randomInt } from 'node:crypto';
import type { ImageProcessor, PixelValues, RawPixels } from '../interfaces/image-processor.js';
import type { Sampler } from '../interfaces/sampler.js';
import type { Tokenizer } from '../interfaces/tokenizer.js';
import { PaliGemmaError } from '../interfaces/errors.js';
import type { GenerationPipeline } from '../generation/generation-pipeline.js';
import { promptIds } from '../generation/prompt-format.js';
import { seededRng } from '../samplers/rng.js';
import { temperatureSampler, topPSampler } from '../samplers/index.js';
import { BatchScheduler, type ChoiceFinish, type SampledToken } from './batch-scheduler.js';
import { VisionCache, imageKey } from './vision-cache.js';

export interface EngineOptions {
  maxBatch?: number;
  maxQueue?: number;
  /** Images whose rows stay cached (default 64). */
  visionCacheSize?: number;
  /** Largest max_tokens a request may ask for (default 1024). */
  maxNewTokensLimit?: number;
  /**
   * Makes each choice's sampler instead of temperature / top_p (a plugin's sampler; tests force
   * an answer with one). Requests that set temperature or top_p are then refused.
   */
  sampler?: () => Sampler;
}

export interface CompletionParams {
  /** Encoded image bytes, or decoded pixels (the task helpers decode once for the box sizes). */
  image: Uint8Array | RawPixels;
  prompt: string;
  maxNewTokens: number;
  /** 0 (the default) is greedy. */
  temperature?: number;
  /** A sampler to use instead of temperature / top_p (one choice only: samplers keep state). */
  sampler?: Sampler;
  topP?: number;
  seed?: number;
  n?: number;
  stop?: string[];
  /** Top-N log-probabilities per token; 0 none. Each token's own logprob comes with any N ≥ 0 when `wantLogprobs`. */
  topLogprobs?: number;
  wantLogprobs?: boolean;
  signal?: AbortSignal;
}

export type FinishReason = 'stop' | 'length' | 'aborted';

export interface TokenInfo extends SampledToken { text: string }

export interface ChoiceDelta {
  choice: number;
  /** New text (may be ''). */
  text: string;
  /** Tokens this delta covers. */
  tokens: TokenInfo[];
  /** Set on the choice's last delta. */
  finishReason?: FinishReason;
}

export interface ChoiceResult {
  text: string;
  tokens: TokenInfo[];
  finishReason: FinishReason;
}

export interface CompletionResult {
  choices: ChoiceResult[];
  promptTokens: number;
  completionTokens: number;
  /** ttftMs: arrival to the first token (queue, image, prefill); totalMs: to the last. */
  timings: { ttftMs: number; totalMs: number };
}

/** Decoded pixels keyed by their size and bytes (never equal to an encoded file's key). */
function rawImageKey(r: RawPixels): string {
  return imageKey(Buffer.concat([Buffer.from(`raw:${r.width}x${r.height}x${r.channels}:`), r.data]));
}

const FINISH: Record<ChoiceFinish, FinishReason> = { eos: 'stop', stop: 'stop', length: 'length', aborted: 'aborted', error: 'aborted' };

/** One choice's detokenization and stop-string state. */
class ChoiceText {
  readonly tokens: TokenInfo[] = [];
  private ids: number[] = [];
  private full = '';
  private emitted = 0;
  private pendingTokens: TokenInfo[] = [];
  stopped = false;

  constructor(private readonly tokenizer: Tokenizer, private readonly stops: readonly string[]) {}

  /** Adds a token; returns the text now safe to send and whether a stop string ended it. */
  push(t: SampledToken): { text: string; stop: boolean } {
    const info: TokenInfo = { ...t, text: this.tokenizer.decode([t.token], { skipSpecialTokens: true }) };
    this.tokens.push(info);
    this.pendingTokens.push(info);
    this.ids.push(t.token);
    const decoded = this.tokenizer.decode(this.ids, { skipSpecialTokens: true });
    if (!decoded.endsWith('\uFFFD')) this.full = decoded;
    for (const s of this.stops) {
      const at = this.full.indexOf(s, Math.max(0, this.emitted - s.length + 1));
      if (at >= 0) {
        this.full = this.full.slice(0, at);
        this.stopped = true;
        return { text: this.take(this.full.length), stop: true };
      }
    }
    // Hold back the tail that could still be the start of a stop string.
    const hold = this.stops.reduce((h, s) => Math.max(h, s.length - 1), 0);
    return { text: this.take(Math.max(this.emitted, this.full.length - hold)), stop: false };
  }

  /** Everything not yet sent, at the end. */
  flush(): string { return this.take(this.full.length); }

  takeTokens(): TokenInfo[] { return this.pendingTokens.splice(0); }

  get text(): string { return this.full; }

  private take(upTo: number): string {
    const out = this.full.slice(this.emitted, Math.max(this.emitted, upTo));
    this.emitted = Math.max(this.emitted, upTo);
    return out;
  }
}

export class ServingEngine {
  readonly vision: VisionCache;
  readonly scheduler: BatchScheduler;
  readonly maxNewTokensLimit: number;
  private readonly samplerOverride?: () => Sampler;
  private readonly tokenizer: Tokenizer;
  private readonly images: ImageProcessor;
  private inflight = 0;
  private draining = false;
  private idle: Array<() => void> = [];

  constructor(readonly pipeline: GenerationPipeline, opts: EngineOptions = {}) {
    this.tokenizer = pipeline.tokenizer;
    this.images = pipeline.imageProcessor;
    this.vision = new VisionCache(pipeline.backend, opts.visionCacheSize ?? 64);
    this.scheduler = new BatchScheduler(pipeline.model, this.vision, {
      maxBatch: opts.maxBatch ?? 8, maxQueue: opts.maxQueue ?? 64, eosId: this.tokenizer.special.eos,
    });
    this.maxNewTokensLimit = opts.maxNewTokensLimit ?? 1024;
    this.samplerOverride = opts.sampler;
  }

  get maxBatch(): number { return this.scheduler.opts.maxBatch; }

  /** Requests accepted and not yet answered: decoding their image, queued, or in the batch. */
  get inFlight(): number { return this.inflight; }

  /** Runs one request to completion, reporting each choice's deltas as they come. */
  async complete(p: CompletionParams, onDelta?: (d: ChoiceDelta) => void): Promise<CompletionResult> {
    if (this.draining) throw new PaliGemmaError('the server is shutting down', 'shutting_down');
    this.inflight++;
    try {
      return await this.run(p, onDelta);
    } finally {
      if (--this.inflight === 0) for (const r of this.idle.splice(0)) r();
    }
  }

  private async run(p: CompletionParams, onDelta?: (d: ChoiceDelta) => void): Promise<CompletionResult> {
    const t0 = performance.now();
    const n = p.n ?? 1;
    if (!Number.isInteger(p.maxNewTokens) || p.maxNewTokens < 1 || p.maxNewTokens > this.maxNewTokensLimit) {
      throw new PaliGemmaError(`max tokens ${p.maxNewTokens}: expected an integer from 1 to ${this.maxNewTokensLimit}`, 'invalid_max_tokens');
    }
    if (p.sampler !== undefined && (n !== 1 || p.temperature !== undefined || p.topP !== undefined)) {
      throw new PaliGemmaError('a request with its own sampler takes neither n > 1 nor temperature / top_p', 'invalid_argument');
    }
    const given = p.sampler;
    const samplerFor = given ? () => given : this.samplerFactory(p);
    const ids = Int32Array.from(promptIds(this.tokenizer, p.prompt, this.pipeline.model.config.numImageTokens));
    const key = p.image instanceof Uint8Array ? imageKey(p.image) : rawImageKey(p.image);
    // Decode the image before queueing (unless its rows are cached): a corrupt one fails here, alone.
    let pixels: PixelValues | undefined;
    if (!this.vision.has(key)) pixels = await this.images.process(p.image);
    const seed = p.seed ?? randomInt(0, 2 ** 31);
    const texts = Array.from({ length: n }, () => new ChoiceText(this.tokenizer, p.stop ?? []));
    const finish: FinishReason[] = new Array(n).fill('aborted');
    let tPrefill = t0;
    const done = this.scheduler.submit({
      imageKey: key,
      pixels: async () => pixels ?? this.images.process(p.image),
      ids,
      maxNewTokens: p.maxNewTokens,
      choices: Array.from({ length: n }, (_, c) => ({ sampler: samplerFor(), rng: seededRng(seed + c) })),
      logprobs: p.wantLogprobs ? Math.max(1, p.topLogprobs ?? 0) : 0,
      signal: p.signal,
      onPrefill: () => { tPrefill = performance.now(); },
      onToken: (c, t) => {
        const r = texts[c].push(t);
        if (onDelta && (r.text || !r.stop)) onDelta({ choice: c, text: r.text, tokens: texts[c].takeTokens() });
        return r.stop;
      },
      onFinish: (c, reason) => {
        finish[c] = FINISH[reason];
        const rest = texts[c].stopped ? '' : texts[c].flush();
        onDelta?.({ choice: c, text: rest, tokens: texts[c].takeTokens(), finishReason: finish[c] });
      },
    });
    await done;
    pixels = undefined;
    const choices = texts.map((t, c) => ({ text: t.text, tokens: t.tokens, finishReason: finish[c] }));
    return {
      choices,
      promptTokens: ids.length,
      completionTokens: choices.reduce((s, c) => s + c.tokens.length, 0),
      timings: { ttftMs: tPrefill - t0, totalMs: performance.now() - t0 },
    };
  }

  /** Each choice's sampler for these sampling fields (validated; the configured one if set). */
  samplerFactory(p: Pick<CompletionParams, 'temperature' | 'topP'>): () => Sampler {
    if (this.samplerOverride) {
      if (p.temperature !== undefined || p.topP !== undefined) {
        throw new PaliGemmaError('temperature / top_p: this server samples with its own configured sampler', 'unsupported_parameter');
      }
      return this.samplerOverride;
    }
    const t = p.temperature ?? 0;
    if (!(t >= 0 && t <= 2)) throw new PaliGemmaError(`temperature ${t}: expected a number from 0 to 2`, 'invalid_temperature');
    const topP = p.topP ?? 1;
    if (!(topP > 0 && topP <= 1)) throw new PaliGemmaError(`top_p ${topP}: expected a number in (0, 1]`, 'invalid_top_p');
    return () => (topP < 1 ? topPSampler(topP, t) : temperatureSampler(t));
  }

  /**
   * Refuses new requests ('shutting_down'), waits for every accepted one (also those still
   * decoding their image, not yet queued) to finish, then frees the cached image rows.
   */
  async drain(): Promise<void> {
    this.draining = true;
    if (this.inflight > 0) await new Promise<void>((r) => this.idle.push(r));
    await this.scheduler.drain();
    this.vision.clear();
  }
}
