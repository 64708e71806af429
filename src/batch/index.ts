/**
 * Batch jobs: the job file, the queue interface and its in-process engine, the results file and
 * the executor seam. The BullMQ engine loads BullMQ and a Redis client (about a second), so it is
 * reached through `openBullmqJobQueue`, which imports it on first use.
 */
import { isPackageNotFound, PackageNotInstalledError } from '../backends/optional-package.js';
import type { BullmqJobQueue, BullmqQueueOptions } from './bullmq-queue.js';

export * from './batch-job.js';
export * from './job-queue.js';
export { InProcessJobQueue } from './in-process-queue.js';
export { PipelineJobExecutor, executorHandler, samplerForJob, type JobExecutor } from './job-executor.js';
export { BatchedJobExecutor, jobExecutorFor, type BatchedExecutorOptions } from './batched-executor.js';
export { readResultsFile, writeResultsFile } from './results-file.js';
export { taskPrompt, type BatchTask } from './task-prompt.js';
export type { BullmqJobQueue, BullmqQueueOptions };

/** Opens the BullMQ engine; bullmq is an optional peer dependency, so its absence is one line naming the install. */
export async function openBullmqJobQueue(options: BullmqQueueOptions): Promise<BullmqJobQueue> {
  let engine: typeof import('./bullmq-queue.js');
  try {
    engine = await import('./bullmq-queue.js');
  } catch (e) {
    if (isPackageNotFound(e, 'bullmq') || isPackageNotFound(e, 'ioredis')) {
      throw new PackageNotInstalledError('the Redis batch commands need bullmq and ioredis: npm install bullmq ioredis');
    }
    throw e;
  }
  return engine.BullmqJobQueue.open(options);
}
