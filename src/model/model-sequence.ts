/**
 * The Sequence API (PaliGemmaModel.begin / stepBatch): one object owns a prompt's KV cache and
 * positions; each call passes its own mask.
 *
 * ```ts
 * const a = await model.begin(pixels, ids, { capacity: ids.length + 32 });  // or image rows [N, H]
 * let logits = a.logits;                                  // [V] of the last prompt row
 * logits = await a.step(token);                           // one decode step
 * const b = a.fork();                                     // same KV state, continues on its own
 * const [la, lb] = await model.stepBatch([a, b], Int32Array.of(t1, t2));   // one batched step
 * a.dispose(); b.dispose();
 * ```
 *
 * A batched step runs every sequence's next token through each matmul together (one weight
 * read for the whole batch) and attention per sequence over its own cache; a sequence's logits
 * are those it gets alone: GemmaDecoder.forwardBatch runs the same layer code as a single
 * sequence's step, for Gemma and Gemma 2 alike.
 */
import type { PixelValues } from '../interfaces/image-processor.js';
import type { Tensor } from '../interfaces/tensor-backend.js';
import { PaliGemmaError } from '../interfaces/errors.js';
import { applyFinalSoftcap } from './gemma2.js';
import type { ModelSession, PaliGemmaModel } from './paligemma-model.js';

export interface BeginOptions {
  /** Positions the cache holds: prompt + new tokens. */
  capacity: number;
  /**
   * Leading ids that attend bidirectionally (image + prompt); later ids are causal, as tokens
   * fed back are. Default: all of ids.
   */
  prefixLength?: number;
  /** Also keep the logits of rows [logitsFrom, T) in `promptLogits` (teacher-forced scoring). */
  logitsFrom?: number;
  /** Awaited between prefill layers (the event loop runs there); a pause that throws aborts the prefill. */
  pause?: () => Promise<void>;
}

/** Where begin spent its time. */
export interface BeginTimings {
  /** Vision tower + projector (0 when image rows were passed). */
  visionMs: number;
  /** Embedding the prompt and the decoder prefill. */
  prefillMs: number;
}

const isPixels = (x: PixelValues | Tensor): x is PixelValues => x.shape.length === 3 && 'data' in x;

/**
 * Prefills image + prompt (bidirectional over ids[0, prefixLength)) and returns the sequence,
 * its `logits` those of the last prompt row. `image` is pixels or image rows [N, H] the caller
 * keeps (and may pass again: the vision tower then does not run). PaliGemmaModel.begin.
 */
export async function beginSequence(m: PaliGemmaModel, image: PixelValues | Tensor, ids: Int32Array, opts: BeginOptions): Promise<Sequence> {
  const b = m.backend;
  if (!Number.isInteger(opts.capacity) || opts.capacity < ids.length) {
    throw new PaliGemmaError(`capacity ${opts.capacity}: expected an integer ≥ the prompt length ${ids.length}`);
  }
  const prefixLength = opts.prefixLength ?? ids.length;
  const logitsFrom = opts.logitsFrom ?? ids.length - 1;
  if (!Number.isInteger(prefixLength) || prefixLength < 1 || prefixLength > ids.length) {
    throw new PaliGemmaError(`prefixLength ${prefixLength}: expected an integer from 1 to the prompt length ${ids.length}`);
  }
  if (!Number.isInteger(logitsFrom) || logitsFrom < 0 || logitsFrom >= ids.length) {
    throw new PaliGemmaError(`logitsFrom ${logitsFrom}: expected an integer from 0 to ${ids.length - 1}`);
  }
  const t0 = performance.now();
  const rows = isPixels(image) ? m.imageRows(image) : image;                 // [N, H]
  const t1 = performance.now();
  let embeds: Tensor;
  try {
    embeds = m.embedPrompt(ids, rows);                                        // [T, H]
  } finally {
    if (rows !== image) b.dispose(rows);
  }
  const session = m.session(opts.capacity);
  try {
    const all = await session.prefill(embeds, prefixLength, logitsFrom, opts.pause);   // [T - logitsFrom, V]
    const v = all.length / (ids.length - logitsFrom);
    const seq = new Sequence(m, session, ids.length, all.length === v ? all : all.slice(all.length - v));
    if (opts.logitsFrom !== undefined) seq.promptLogits = all;
    seq.timings = { visionMs: isPixels(image) ? t1 - t0 : 0, prefillMs: performance.now() - t1 };
    return seq;
  } catch (e) {
    session.dispose();
    throw e;
  } finally {
    b.dispose(embeds);
  }
}

/**
 * One decode step for every sequence: ids[i] is seqs[i]'s next token. Each sequence's
 * `logits` becomes its new [V] row; the rows are returned in order. PaliGemmaModel.stepBatch.
 */
export async function stepSequences(m: PaliGemmaModel, seqs: readonly Sequence[], ids: Int32Array): Promise<Float32Array[]> {
  if (seqs.length !== ids.length) throw new Error(`stepBatch: ${ids.length} ids for ${seqs.length} sequences`);
  if (new Set(seqs).size !== seqs.length) throw new Error('stepBatch: a sequence appears twice in one step');
  for (const s of seqs) s.checkStep();
  if (seqs.length === 0) return [];
  if (seqs.length === 1) {
    const out: Float32Array[] = [];
    for (let i = 0; i < seqs.length; i++) out.push(await seqs[i].step(ids[i]));
    return out;
  }
  const b = m.backend;
  const x = m.embedText(ids);                                                 // [B, H]
  let logits: Tensor | undefined;
  try {
    // Decode rows sit past the prompt, where a prefix-LM mask and a causal one agree.
    const decoder = m.decoder;
    const hidden = decoder.forwardBatch(x, seqs.map((s) => ({ cache: s.session.cache, mask: { kind: 'causal' } })));
    logits = decoder.logits(hidden);                                          // [B, V]
    b.dispose(hidden);
    const flat = applyFinalSoftcap(await b.read(logits), decoder.finalLogitSoftcap);
    const v = flat.length / seqs.length;
    return seqs.map((s, i) => (s.logits = flat.slice(i * v, (i + 1) * v)));
  } finally {
    b.dispose(logits ? [x, logits] : x);
  }
}

export class Sequence {
  private disposed = false;
  /** With begin's logitsFrom: logits [T - logitsFrom, V] (flat) of those prompt rows. */
  promptLogits?: Float32Array;
  /** Where begin spent its time. */
  timings: BeginTimings = { visionMs: 0, prefillMs: 0 };

  /** @internal made by PaliGemmaModel.begin / fork */
  constructor(
    private readonly model: PaliGemmaModel,
    /** @internal */ readonly session: ModelSession,
    /** Prompt positions (image + text). */
    readonly promptLength: number,
    /** Logits [V] predicting the next token. */
    public logits: Float32Array,
  ) {}

  /** Positions held: prompt + tokens stepped. */
  get length(): number { return this.session.cache.length; }
  get capacity(): number { return this.session.cache.capacity; }
  get isDisposed(): boolean { return this.disposed; }

  /** Feeds the next token; returns (and keeps) the logits [V] after it. */
  async step(id: number): Promise<Float32Array> {
    this.checkStep();
    this.logits = await this.session.step(id);
    return this.logits;
  }

  /** A copy of the KV state and logits that continues on its own (n samples of one prefill). */
  fork(capacity = this.capacity): Sequence {
    if (this.disposed) throw new Error('fork of a disposed sequence');
    if (capacity < this.length) throw new PaliGemmaError(`fork capacity ${capacity}: expected ≥ the sequence length ${this.length}`);
    const m = this.model, b = m.backend;
    const copy = m.session(capacity);
    const n = this.length;
    try {
      for (let layer = 0; layer < m.config.text.numLayers; layer++) {
        const k = b.slice(this.session.cache.keys(layer), 0, 0, n);               // [n, Hkv, D]
        const v = b.slice(this.session.cache.values(layer), 0, 0, n);
        copy.cache.write(layer, k, v);
        b.dispose([k, v]);
      }
      copy.cache.advance(n);
    } catch (e) {
      copy.dispose();
      throw e;
    }
    // The copy's decode rows sit past the prompt, where its causal mask equals the prefix-LM one.
    return new Sequence(this.model, copy, this.promptLength, this.logits.slice());
  }

  /** Frees the KV cache; idempotent. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.session.dispose();
  }

  /** @internal */
  checkStep(): void {
    if (this.disposed) throw new Error('step of a disposed sequence');
    if (this.length >= this.capacity) {
      throw new PaliGemmaError(`sequence is full: ${this.length} positions of capacity ${this.capacity}`, 'capacity');
    }
  }
}
