import type { Sampler } from '../interfaces/sampler.js';

export interface GenerateOptions {
  /** Stop after this many new tokens (default 32). */
  maxNewTokens?: number;
  /** Overrides the pipeline's sampler for this request. */
  sampler?: Sampler;
  /** Seed of the sampler's RNG; the same seed gives the same tokens (default 0). */
  seed?: number;
  /** Report the top-N log-probabilities per step (log-softmax of the raw logits). */
  logprobs?: number;
  /** Cancels generation; the result's finishReason is then 'aborted'. */
  signal?: AbortSignal;
}

export interface TokenLogprob {
  token: number;
  logprob: number;
}

/** One generated token, as streamed. */
export interface GeneratedToken {
  token: number;
  /** Newly decoded text this token completes (may be '' mid-character or for special tokens). */
  text: string;
  logprob?: number;
  top?: TokenLogprob[];
}

export type FinishReason = 'eos' | 'length' | 'aborted';

export interface GenerationTimings {
  imageMs: number;
  visionMs: number;
  prefillMs: number;
  decodeMs: number;
  decodeMsPerToken: number;
  totalMs: number;
  promptTokens: number;
  generatedTokens: number;
}

export interface GenerationResult {
  text: string;
  /** Generated ids, including a final <eos> when one ended generation. */
  tokens: number[];
  finishReason: FinishReason;
  logprobs?: Array<TokenLogprob & { top: TokenLogprob[] }>;
  backend: string;
  timings: GenerationTimings;
}

export interface ScoreResult {
  /** Suffix ids including the appended <eos>. */
  tokens: number[];
  /** log p(token | image, prompt, earlier suffix tokens), teacher-forced. */
  logprobs: number[];
  total: number;
}
