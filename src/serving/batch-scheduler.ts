/**
 * Continuous batching. Requests wait in a bounded queue; between decode steps the scheduler
 * prefills waiting requests while the batch has room, then runs one batched step for every
 * active sequence (PaliGemmaModel.stepBatch: one weight read per step for the whole batch).
 * A request that arrives mid-decode joins at the next step; a sequence that finishes or is
 * cancelled leaves at once and its KV cache is freed. `n > 1` choices fork one prefill.
 */
import type { PixelValues } from '../interfaces/image-processor.js';
import type { Rng, Sampler } from '../interfaces/sampler.js';
import type { Tensor } from '../interfaces/tensor-backend.js';
import { PaliGemmaError } from '../interfaces/errors.js';
import type { Sequence } from '../model/model-sequence.js';
import type { PaliGemmaModel } from '../model/paligemma-model.js';
import type { TokenLogprob } from '../generation/generation-types.js';
import { tokenLogprobs } from './token-logprobs.js';
import type { VisionCache } from './vision-cache.js';

export type ChoiceFinish = 'eos' | 'length' | 'stop' | 'aborted' | 'error';

export interface SampledToken {
  token: number;
  logprob?: number;
  top?: TokenLogprob[];
}

export interface ChoiceSpec {
  sampler: Sampler;
  rng: Rng;
}

export interface BatchRequest {
  /** Hash of the image bytes (VisionCache key). */
  imageKey: string;
  /** Produces the pixels when the image rows are not cached. */
  pixels: () => Promise<PixelValues> | PixelValues;
  ids: Int32Array;
  maxNewTokens: number;
  /** One entry per choice (n). */
  choices: ChoiceSpec[];
  /** Top-N log-probabilities per token (0: none). */
  logprobs: number;
  signal?: AbortSignal;
  /** A choice's new token; return true to end that choice here ('stop', e.g. a stop string). */
  onToken(choice: number, t: SampledToken): boolean | void;
  onFinish(choice: number, reason: ChoiceFinish): void;
  /** Called once the prompt is prefilled (time to first token). */
  onPrefill?(): void;
}

export interface SchedulerOptions {
  /** Most sequences decoded together. */
  maxBatch: number;
  /** Most requests waiting for a place in the batch. */
  maxQueue: number;
  eosId: number;
}

interface Row {
  req: BatchRequest;
  choice: number;
  seq: Sequence;
  last: number;
  generated: number;
}

interface Waiting {
  req: BatchRequest;
  resolve(): void;
  reject(e: unknown): void;
  pending: number;
}

export class BatchScheduler {
  private readonly queue: Waiting[] = [];
  private readonly rows: Row[] = [];
  private readonly owners = new Map<BatchRequest, Waiting>();
  private running = false;
  private closed = false;
  private idleWaiters: Array<() => void> = [];
  readonly stats = { steps: 0, stepRows: 0, prefills: 0, forks: 0, completed: 0, cancelled: 0, rejected: 0 };

  constructor(private readonly model: PaliGemmaModel, private readonly vision: VisionCache, readonly opts: SchedulerOptions) {
    if (!(opts.maxBatch >= 1) || !(opts.maxQueue >= 0)) throw new PaliGemmaError('max batch must be ≥ 1 and max queue ≥ 0');
  }

  get queued(): number { return this.queue.length; }
  get active(): number { return this.rows.length; }

  /**
   * Queues a request; resolves once every choice has finished. Throws a PaliGemmaError with
   * code 'queue_full' at once when maxQueue requests already wait, 'shutting_down' once closed.
   */
  submit(req: BatchRequest): Promise<void> {
    if (this.closed) throw new PaliGemmaError('the server is shutting down', 'shutting_down');
    if (req.choices.length < 1 || req.choices.length > this.opts.maxBatch) {
      throw new PaliGemmaError(`n ${req.choices.length}: expected 1 to the max batch ${this.opts.maxBatch}`);
    }
    if (this.queue.length >= this.opts.maxQueue) {
      this.stats.rejected++;
      throw new PaliGemmaError(`the queue is full (${this.opts.maxQueue} requests waiting)`, 'queue_full');
    }
    return new Promise<void>((resolve, reject) => {
      const w: Waiting = { req, resolve, reject, pending: req.choices.length };
      this.queue.push(w);
      this.owners.set(req, w);
      req.signal?.addEventListener('abort', () => this.kick(), { once: true });
      this.kick();
    });
  }

  /** Stops taking requests; resolves when the queue and the batch are empty. */
  drain(): Promise<void> {
    this.closed = true;
    if (!this.running && this.queue.length === 0 && this.rows.length === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  private kick(): void {
    if (this.running) return;
    this.running = true;
    void this.loop();
  }

  private async loop(): Promise<void> {
    try {
      for (;;) {
        this.dropCancelled();
        await this.admit();
        if (this.rows.length === 0 && this.queue.length === 0) break;
        if (this.rows.length > 0) await this.step();
        // Let the event loop take new requests and disconnects: they join or leave at the next step.
        await new Promise((r) => setImmediate(r));
      }
    } finally {
      this.running = false;
      if (this.queue.length > 0 || this.rows.length > 0) this.kick();
      else for (const r of this.idleWaiters.splice(0)) r();
    }
  }

  private dropCancelled(): void {
    for (let i = this.queue.length - 1; i >= 0; i--) {
      const w = this.queue[i];
      if (!w.req.signal?.aborted) continue;
      this.queue.splice(i, 1);
      this.stats.cancelled++;
      for (let c = 0; c < w.req.choices.length; c++) this.finish(w, c, 'aborted');
    }
    for (let i = this.rows.length - 1; i >= 0; i--) {
      const r = this.rows[i];
      if (r.req.signal?.aborted) { this.leave(i, 'aborted'); this.stats.cancelled++; }
    }
  }

  /** Prefills waiting requests while the batch has room for all their choices. */
  private async admit(): Promise<void> {
    while (this.queue.length > 0 && this.rows.length + this.queue[0].req.choices.length <= this.opts.maxBatch) {
      const w = this.queue.shift()!;
      const req = w.req;
      let seq: Sequence | undefined;
      try {
        let rows: Tensor | undefined = this.vision.get(req.imageKey);
        if (rows === undefined) {
          const pixels = await req.pixels();
          rows = this.model.imageRows(pixels);                            // [N, H]
          this.vision.set(req.imageKey, rows);
        }
        // begin uses the rows before its first await, so a later eviction cannot touch them.
        seq = await this.model.begin(rows, req.ids, { capacity: req.ids.length + req.maxNewTokens });
        this.stats.prefills++;
      } catch (e) {
        this.owners.delete(req);
        w.reject(e);
        continue;
      }
      req.onPrefill?.();
      const seqs = [seq];
      for (let c = 1; c < req.choices.length; c++) { seqs.push(seq.fork()); this.stats.forks++; }
      for (let c = 0; c < seqs.length; c++) {
        const row: Row = { req, choice: c, seq: seqs[c], last: -1, generated: 0 };
        this.rows.push(row);
        this.emit(this.rows.length - 1, seqs[c].logits);
      }
    }
  }

  private async step(): Promise<void> {
    const rows = this.rows.slice();
    let out: Float32Array[];
    try {
      out = await this.model.stepBatch(rows.map((r) => r.seq), Int32Array.from(rows, (r) => r.last));
    } catch (e) {
      // A failed step fails the sequences in it, never the server.
      for (const r of rows) { const i = this.rows.indexOf(r); if (i >= 0) this.leave(i, 'error', e); }
      return;
    }
    this.stats.steps++;
    this.stats.stepRows += rows.length;
    for (let j = 0; j < rows.length; j++) {
      const i = this.rows.indexOf(rows[j]);
      if (i >= 0) this.emit(i, out[j]);
    }
  }

  /** Samples row i's next token from `logits`, reports it, and lets the row leave when done. */
  private emit(i: number, logits: Float32Array): void {
    const r = this.rows[i];
    const spec = r.req.choices[r.choice];
    const token = spec.sampler.sample(logits, { rng: spec.rng });
    const t: SampledToken = { token };
    if (r.req.logprobs > 0) {
      const lp = tokenLogprobs(logits, token, r.req.logprobs);
      t.logprob = lp.logprob;
      t.top = lp.top;
    }
    r.last = token;
    r.generated++;
    let stop: boolean | void = false;
    try {
      stop = r.req.onToken(r.choice, t);
    } catch (e) {
      this.leave(i, 'error', e);
      return;
    }
    if (token === this.opts.eosId) this.leave(i, 'eos');
    else if (stop) this.leave(i, 'stop');
    else if (r.generated >= r.req.maxNewTokens) this.leave(i, 'length');
  }

  private leave(i: number, reason: ChoiceFinish, error?: unknown): void {
    const [r] = this.rows.splice(i, 1);
    r.seq.dispose();
    const w = this.owners.get(r.req);
    if (w) this.finish(w, r.choice, reason, error);
  }

  private finish(w: Waiting, choice: number, reason: ChoiceFinish, error?: unknown): void {
    try { w.req.onFinish(choice, reason); } catch { /* a listener's failure stays with its request */ }
    if (error !== undefined) {
      // The other choices of a failed request leave too.
      for (let k = this.rows.length - 1; k >= 0; k--) if (this.rows[k].req === w.req) { this.rows[k].seq.dispose(); this.rows.splice(k, 1); }
      this.owners.delete(w.req);
      w.reject(error);
      return;
    }
    if (--w.pending === 0) {
      this.owners.delete(w.req);
      this.stats.completed++;
      w.resolve();
    }
  }
}
