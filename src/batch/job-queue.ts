/**
 * The queue behind `paligemma batch`: one interface, two engines. `InProcessJobQueue` (no Redis,
 * for `batch run`) and `BullmqJobQueue` (Redis, workers on many machines) keep the same rules:
 * the job id is the line's id (a resubmitted id is not queued again), a user error fails the job
 * at once with its one-line reason, anything else is retried with backoff a bounded number of times.
 */
import { PaliGemmaError } from '../interfaces/errors.js';
import type { BatchJob, JobOutcome, JobResult, QueueCounts } from './batch-job.js';

/** Runs one job; `progress` takes the fraction done in [0, 1]. */
export type JobHandler = (job: BatchJob, progress: (fraction: number) => void) => Promise<JobResult>;

export interface SubmitReport {
  /** Jobs newly queued. */
  added: number;
  /** Ids already known to the queue (waiting, running or finished), left as they were. */
  duplicates: number;
}

export interface RetryPolicy {
  /** Tries per job, the first included (default 3). */
  attempts: number;
  /** Delay before the first retry in ms; doubles on each further one (default 1000). */
  backoffMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 3, backoffMs: 1000 };

export interface StallPolicy {
  /** How long a running job's lock lasts without renewal, ms (default 30000). Must exceed the longest event-loop block of a job. */
  lockMs: number;
  /** How often a worker looks for jobs whose lock expired, ms (default 30000). */
  stalledIntervalMs: number;
  /** Times a job may be recovered from a dead worker before it is failed (default 2). */
  maxStalledCount: number;
}

export const DEFAULT_STALL: StallPolicy = { lockMs: 30_000, stalledIntervalMs: 30_000, maxStalledCount: 2 };

export interface WorkOptions {
  /** Jobs run at once (default 1). */
  concurrency?: number;
  /** Stops taking new jobs; running ones finish. */
  signal?: AbortSignal;
  /** Called as each job finishes. */
  onOutcome?: (outcome: JobOutcome) => void;
}

export interface JobQueue {
  /** Queues the jobs whose ids the queue has not seen. */
  submit(jobs: readonly BatchJob[]): Promise<SubmitReport>;
  counts(): Promise<QueueCounts>;
  /** Every finished job (completed or failed), in job-file order. */
  outcomes(): Promise<JobOutcome[]>;
  close(): Promise<void>;
}

/**
 * A failure is permanent when retrying cannot help: the user's input is wrong (corrupt image,
 * missing file, bad prompt or option). Fetching an image URL is the exception: a server may be
 * down for a moment, so that failure is retried like any other.
 */
export function isPermanentFailure(e: unknown): boolean {
  return e instanceof PaliGemmaError && e.code !== 'image_fetch_failed';
}

/** The one-line reason recorded for a failed job. */
export function failureReason(e: unknown): string {
  const message = e instanceof Error ? e.message : String(e);
  return message.split('\n')[0];
}

/** Sorts outcomes by the job file's line (then id), the order `batch results` writes. */
export function byJobOrder<T extends { id: string }>(items: Array<{ line: number; item: T }>): T[] {
  return items
    .sort((a, b) => a.line - b.line || (a.item.id < b.item.id ? -1 : a.item.id > b.item.id ? 1 : 0))
    .map((x) => x.item);
}
