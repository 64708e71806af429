/**
 * What runs a job on the model. A worker loads the pipeline once and hands every job it holds
 * to a `JobExecutor`: `PipelineJobExecutor` calls `generate` per job (concurrency 1);
 * `BatchedJobExecutor` (batched-executor.ts) runs the jobs it holds through one continuous-batching
 * scheduler. `jobExecutorFor` picks between them; the queue code is the same for both.
 */
import { PaliGemmaError } from '../interfaces/errors.js';
import type { GenerationPipeline } from '../generation/generation-pipeline.js';
import type { PartRegistry } from '../plugin/part-registry.js';
import type { Sampler } from '../interfaces/sampler.js';
import type { BatchJob, JobResult } from './batch-job.js';
import type { JobHandler } from './job-queue.js';

export interface JobExecutor {
  run(job: BatchJob, progress: (fraction: number) => void): Promise<JobResult>;
  /** Waits for running jobs and frees what the executor holds (not the pipeline). */
  close?(): Promise<void>;
}

export const DEFAULT_MAX_NEW_TOKENS = 32;

export class PipelineJobExecutor implements JobExecutor {
  /**
   * `registry` makes the samplers jobs name in their options (the same names as
   * `generate --sampler`); without one, jobs run on the pipeline's own sampler.
   */
  constructor(private readonly pipe: GenerationPipeline, private readonly registry?: PartRegistry) {}

  async run(job: BatchJob, progress: (fraction: number) => void): Promise<JobResult> {
    const o = job.options;
    const maxNewTokens = o.maxNewTokens ?? DEFAULT_MAX_NEW_TOKENS;
    const stream = this.pipe.stream(job.image, job.prompt, {
      maxNewTokens, seed: o.seed ?? 0, logprobs: o.logprobs, sampler: samplerForJob(job, this.registry),
    });
    let done = 0;
    for (;;) {
      const r = await stream.next();
      if (r.done) {
        const { text, tokens, finishReason, logprobs } = r.value;
        return { text, tokens, finishReason, ...(logprobs ? { logprobs } : {}) };
      }
      progress(++done / maxNewTokens);
    }
  }
}

/**
 * The sampler a job's options name, made by `registry` as `generate --sampler` makes it;
 * undefined when the job names none (the pipeline's own sampler runs).
 */
export function samplerForJob(job: BatchJob, registry?: PartRegistry): Sampler | undefined {
  const { sampler, temperature, topK, topP } = job.options;
  if (sampler === undefined && temperature === undefined && topK === undefined && topP === undefined) return undefined;
  if (!registry) throw new PaliGemmaError(`job ${job.id}: options name a sampler, but this executor has no part registry to make one`);
  // As in `generate`: without a sampler name, the sampling options given choose one.
  const name = sampler ?? (topP !== undefined ? 'top-p' : topK !== undefined ? 'top-k' : 'temperature');
  const options = {
    ...(temperature !== undefined ? { temperature } : {}),
    ...(topK !== undefined ? { topK } : {}),
    ...(topP !== undefined ? { topP } : {}),
  };
  return registry.get('sampler', name).create(options);
}

export function executorHandler(executor: JobExecutor): JobHandler {
  return (job, progress) => executor.run(job, progress);
}
