/**
 * The executor a worker uses with `--concurrency N > 1`: the N jobs it holds run through one
 * continuous-batching scheduler (src/serving/batch-scheduler.ts), so each decode step reads the
 * weights once for all of them (PaliGemmaModel.stepBatch). A job that finishes leaves at once and
 * the next one the queue hands over joins at the next step.
 *
 * A job's result is that of a direct `generate`: the same argument checks and token budget, the
 * same sampler and seeded rng per job, the same log-probabilities; the batched step gives each
 * sequence the logits it gets alone (test/model-sequence.test.ts pins that).
 */
import { PaliGemmaError } from '../interfaces/errors.js';
import type { PixelValues } from '../interfaces/image-processor.js';
import { checkGenerateOptions, newTokenBudget } from '../generation/api-arguments.js';
import type { TokenLogprob } from '../generation/generation-types.js';
import type { GenerationPipeline } from '../generation/generation-pipeline.js';
import { promptIds } from '../generation/prompt-format.js';
import type { PartRegistry } from '../plugin/part-registry.js';
import { seededRng } from '../samplers/rng.js';
import { BatchScheduler, type ChoiceFinish } from '../serving/batch-scheduler.js';
import { VisionCache } from '../serving/vision-cache.js';
import type { BatchJob, JobResult } from './batch-job.js';
import { DEFAULT_MAX_NEW_TOKENS, PipelineJobExecutor, samplerForJob, type JobExecutor } from './job-executor.js';

const FINISH: Partial<Record<ChoiceFinish, JobResult['finishReason']>> = { eos: 'eos', length: 'length', aborted: 'aborted' };

export interface BatchedExecutorOptions {
  /** Most jobs decoded together: the worker's concurrency. */
  maxBatch: number;
}

export class BatchedJobExecutor implements JobExecutor {
  private readonly scheduler: BatchScheduler;
  // Rows are held only from the image step to the prefill that uses them: each job gets its own
  // key, so a million distinct images never pile up here.
  private readonly vision: VisionCache;
  private next = 0;

  constructor(private readonly pipe: GenerationPipeline, opts: BatchedExecutorOptions, private readonly registry?: PartRegistry) {
    if (!Number.isInteger(opts.maxBatch) || opts.maxBatch < 1) throw new PaliGemmaError(`max batch ${opts.maxBatch}: expected an integer ≥ 1`);
    this.vision = new VisionCache(pipe.backend, 1);
    // The queue engines never run more than `concurrency` jobs at once, so the scheduler's own
    // queue only ever holds jobs waiting for a free row.
    this.scheduler = new BatchScheduler(pipe.model, this.vision, {
      maxBatch: opts.maxBatch, maxQueue: Number.MAX_SAFE_INTEGER, eosId: pipe.tokenizer.special.eos,
    });
  }

  /** Decode steps run and the rows they held, summed (rows / steps is the mean batch). */
  get stats(): { steps: number; stepRows: number } {
    return { steps: this.scheduler.stats.steps, stepRows: this.scheduler.stats.stepRows };
  }

  async run(job: BatchJob, progress: (fraction: number) => void): Promise<JobResult> {
    const pipe = this.pipe;
    const o = job.options;
    // The checks and the token budget of pipe.generate, in the same order.
    const checked = checkGenerateOptions({
      maxNewTokens: o.maxNewTokens ?? DEFAULT_MAX_NEW_TOKENS, seed: o.seed ?? 0, logprobs: o.logprobs ?? 0,
    }, pipe.tokenizer.vocabSize);
    const ids = Int32Array.from(promptIds(pipe.tokenizer, job.prompt, pipe.model.config.numImageTokens));
    const maxNew = newTokenBudget(ids.length, checked.maxNewTokens!, pipe.model.config.text.maxPositionEmbeddings);
    const sampler = samplerForJob(job, this.registry) ?? pipe.sampler;
    // Decoded before the job takes a place in the batch: a corrupt image fails here, alone.
    let pixels: PixelValues | undefined = await pipe.imageProcessor.process(job.image);

    const tokens: number[] = [];
    const logprobs: Array<TokenLogprob & { top: TokenLogprob[] }> = [];
    let finish: ChoiceFinish = 'aborted';
    await this.scheduler.submit({
      imageKey: `job ${this.next++}`,
      pixels: async () => {
        // The scheduler prefills the jobs waiting for a row back to back; one event-loop turn
        // before each lets timers run in between (BullMQ renews job locks on a timer).
        await new Promise((r) => setImmediate(r));
        const p = pixels!;
        pixels = undefined;
        return p;
      },
      ids,
      maxNewTokens: maxNew,
      choices: [{ sampler, rng: seededRng(checked.seed) }],
      logprobs: checked.logprobs,
      onToken: (_, t) => {
        tokens.push(t.token);
        if (checked.logprobs > 0) logprobs.push({ token: t.token, logprob: t.logprob!, top: t.top! });
        progress(tokens.length / maxNew);
      },
      onFinish: (_, reason) => { finish = reason; },
    });
    const finishReason = FINISH[finish];
    // 'stop' is never asked for and 'error' rejects the submit above: refuse rather than guess.
    if (finishReason === undefined) throw new Error(`job ${job.id}: the scheduler ended it with ${finish}`);
    return {
      text: pipe.tokenizer.decode(tokens, { skipSpecialTokens: true }),
      tokens,
      finishReason,
      ...(checked.logprobs > 0 ? { logprobs } : {}),
    };
  }

  /** Waits for running jobs, then frees what the executor holds. */
  async close(): Promise<void> {
    await this.scheduler.drain();
    this.vision.clear();
  }
}

/**
 * The executor for a worker running `concurrency` jobs at once on one loaded pipeline: one
 * `generate` at a time for 1, the batched scheduler above for more.
 */
export function jobExecutorFor(pipe: GenerationPipeline, concurrency: number, registry?: PartRegistry): JobExecutor {
  return concurrency > 1 ? new BatchedJobExecutor(pipe, { maxBatch: concurrency }, registry) : new PipelineJobExecutor(pipe, registry);
}
