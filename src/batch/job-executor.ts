/**
 * What runs a job on the model. A worker loads the pipeline once and hands every job it holds
 * to a `JobExecutor`; `PipelineJobExecutor` calls `generate` per job. The seam is here so that a
 * worker can later hand its jobs to a continuous-batching scheduler (which batches the rows of
 * the sequences it holds through each matmul) without the queue code changing.
 */
import { PaliGemmaError } from '../interfaces/errors.js';
import type { PaliGemmaPipeline } from '../pipeline/paligemma-pipeline.js';
import type { PartRegistry } from '../plugin/part-registry.js';
import type { Sampler } from '../interfaces/sampler.js';
import type { BatchJob, JobResult } from './batch-job.js';
import type { JobHandler } from './job-queue.js';

export interface JobExecutor {
  run(job: BatchJob, progress: (fraction: number) => void): Promise<JobResult>;
}

const DEFAULT_MAX_NEW_TOKENS = 32;

export class PipelineJobExecutor implements JobExecutor {
  /**
   * `registry` makes the samplers jobs name in their options (the same names as
   * `generate --sampler`); without one, jobs run on the pipeline's own sampler.
   */
  constructor(private readonly pipe: PaliGemmaPipeline, private readonly registry?: PartRegistry) {}

  async run(job: BatchJob, progress: (fraction: number) => void): Promise<JobResult> {
    const o = job.options;
    const maxNewTokens = o.maxNewTokens ?? DEFAULT_MAX_NEW_TOKENS;
    const stream = this.pipe.stream(job.image, job.prompt, {
      maxNewTokens, seed: o.seed ?? 0, logprobs: o.logprobs, sampler: this.samplerFor(job),
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

  private samplerFor(job: BatchJob): Sampler | undefined {
    const { sampler, temperature, topK, topP } = job.options;
    if (sampler === undefined && temperature === undefined && topK === undefined && topP === undefined) return undefined;
    if (!this.registry) throw new PaliGemmaError(`job ${job.id}: options name a sampler, but this executor has no part registry to make one`);
    // As in `generate`: without a sampler name, the sampling options given choose one.
    const name = sampler ?? (topP !== undefined ? 'top-p' : topK !== undefined ? 'top-k' : 'temperature');
    const options = {
      ...(temperature !== undefined ? { temperature } : {}),
      ...(topK !== undefined ? { topK } : {}),
      ...(topP !== undefined ? { topP } : {}),
    };
    return this.registry.get('sampler', name).create(options);
  }
}

export function executorHandler(executor: JobExecutor): JobHandler {
  return (job, progress) => executor.run(job, progress);
}
