/**
 * Batch jobs: the job file, the queue interface and its in-process engine, the results file and
 * the executor seam. The BullMQ engine loads BullMQ and a Redis client (about a second), so it is
 * reached through `openBullmqJobQueue`, which imports it on first use.
 */
import type { BullmqJobQueue, BullmqQueueOptions } from './bullmq-queue.js';

export * from './batch-job.js';
export * from './job-queue.js';
export { InProcessJobQueue } from './in-process-queue.js';
export { PipelineJobExecutor, executorHandler, type JobExecutor } from './job-executor.js';
export { readResultsFile, writeResultsFile } from './results-file.js';
export { taskPrompt, type BatchTask } from './task-prompt.js';
export type { BullmqJobQueue, BullmqQueueOptions };

export async function openBullmqJobQueue(options: BullmqQueueOptions): Promise<BullmqJobQueue> {
  const { BullmqJobQueue } = await import('./bullmq-queue.js');
  return BullmqJobQueue.open(options);
}
