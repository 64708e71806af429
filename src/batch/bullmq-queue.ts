/**
 * The distributed queue: BullMQ on Redis. Any number of `paligemma batch worker` processes, on
 * any machines, take jobs from one named queue.
 *
 * - Job id = the line's id (escaped: BullMQ refuses ids that are integers or contain ':'), so a
 *   resubmitted id is not queued again while Redis holds it (finished jobs are kept).
 * - A user error (PaliGemmaError: corrupt image, bad prompt) is thrown as UnrecoverableError:
 *   failed at once with its one-line reason. Other errors are retried `attempts` times with
 *   exponential backoff.
 * - A worker holds a lock per running job and renews it every lockDuration/2. A worker that dies
 *   (SIGKILL, lost machine) stops renewing; after lockDuration another worker's stalled check
 *   (every stalledInterval) moves the job back to waiting, up to maxStalledCount times.
 */
import { Queue, UnrecoverableError, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import { PaliGemmaError } from '../interfaces/errors.js';
import type { BatchJob, JobOutcome, JobResult, QueueCounts } from './batch-job.js';
import {
  DEFAULT_RETRY, DEFAULT_STALL, byJobOrder, failureReason, isPermanentFailure,
  type JobHandler, type JobQueue, type RetryPolicy, type StallPolicy, type SubmitReport, type WorkOptions,
} from './job-queue.js';

export interface BullmqQueueOptions {
  /** Queue name (letters, digits, '-', '_', '.'). */
  name: string;
  /** redis:// or rediss:// URL. */
  redisUrl: string;
  retry?: RetryPolicy;
  stall?: Partial<StallPolicy>;
  /** Keep reconnecting when Redis goes away (workers) instead of failing the command (submit, status). */
  persistent?: boolean;
  /** Give up on the first connection after this long, ms (default 5000). */
  connectTimeoutMs?: number;
  /**
   * Told of each connection error after the first connect (Redis restarted, network lost); the
   * client keeps reconnecting. Without it they are dropped (BullMQ would print each stack).
   */
  onConnectionError?: (message: string) => void;
}

const JOB_NAME = 'generate';
const PAGE = 1000;
const PROGRESS_MS = 500;

/** The BullMQ job id of a line id: the same id always maps to the same job id. */
export function bullmqJobId(id: string): string {
  return `j.${encodeURIComponent(id)}`;
}

function checkOptions(o: BullmqQueueOptions): void {
  if (!/^[A-Za-z0-9_.-]{1,200}$/.test(o.name)) {
    throw new PaliGemmaError(`invalid --queue ${JSON.stringify(o.name)}: expected letters, digits, '-', '_' or '.'`);
  }
  let url: URL | undefined;
  try { url = new URL(o.redisUrl); } catch { /* reported below */ }
  if (!url || (url.protocol !== 'redis:' && url.protocol !== 'rediss:')) {
    throw new PaliGemmaError(`invalid --redis ${JSON.stringify(o.redisUrl)}: expected a redis:// or rediss:// URL`);
  }
}

/** Redacts a password in a URL for messages. */
function shownUrl(u: string): string {
  try { const url = new URL(u); if (url.password) url.password = '***'; return url.toString(); } catch { return u; }
}

export class BullmqJobQueue implements JobQueue {
  private readonly connection: Redis;
  private readonly queue: Queue;
  private readonly retry: RetryPolicy;
  private readonly stall: StallPolicy;
  private readonly workers = new Set<Worker>();

  private constructor(private readonly opts: BullmqQueueOptions, connection: Redis) {
    this.connection = connection;
    this.retry = opts.retry ?? DEFAULT_RETRY;
    this.stall = { ...DEFAULT_STALL, ...opts.stall };
    this.queue = new Queue(opts.name, { connection });
    this.queue.on('error', (e: Error) => this.connectionError(e));
  }

  private connectionError(e: Error): void {
    this.opts.onConnectionError?.(failureReason(e));
  }

  /** Connects (failing with one line naming the URL when Redis cannot be reached) and opens the queue. */
  static async open(opts: BullmqQueueOptions): Promise<BullmqJobQueue> {
    checkOptions(opts);
    const timeout = opts.connectTimeoutMs ?? 5000;
    const started = Date.now();
    const connection = new Redis(opts.redisUrl, {
      // BullMQ's blocking commands need unlimited retries per request.
      maxRetriesPerRequest: null,
      lazyConnect: true,
      retryStrategy: (times) => {
        if (!opts.persistent && Date.now() - started > timeout) return null;
        return Math.min(100 * times, 2000);
      },
    });
    let lastError = '';
    connection.on('error', (e: Error) => { lastError = e.message; });
    try {
      await Promise.race([
        connection.connect(),
        new Promise((_, reject) => setTimeout(() => reject(new Error(lastError || 'timed out')), timeout).unref()),
      ]);
    } catch (e) {
      connection.disconnect();
      throw new PaliGemmaError(`cannot reach Redis at ${shownUrl(opts.redisUrl)}: ${lastError || (e as Error).message}`, 'redis_unreachable');
    }
    return new BullmqJobQueue(opts, connection);
  }

  async submit(jobs: readonly BatchJob[]): Promise<SubmitReport> {
    let added = 0;
    for (let i = 0; i < jobs.length; i += PAGE) {
      const page = jobs.slice(i, i + PAGE);
      // Counting only: BullMQ itself never adds a second job with an id it holds.
      const known = await Promise.all(page.map((j) => this.queue.getJob(bullmqJobId(j.id))));
      const fresh = page.filter((_, k) => !known[k]);
      await this.queue.addBulk(fresh.map((job) => ({
        name: JOB_NAME,
        data: job,
        opts: {
          jobId: bullmqJobId(job.id),
          attempts: this.retry.attempts,
          backoff: { type: 'exponential', delay: this.retry.backoffMs },
        },
      })));
      added += fresh.length;
    }
    return { added, duplicates: jobs.length - added };
  }

  async counts(): Promise<QueueCounts> {
    const c = await this.queue.getJobCounts('waiting', 'delayed', 'prioritized', 'waiting-children', 'active', 'completed', 'failed');
    return {
      // Delayed jobs are retries waiting out their backoff: still to do.
      waiting: (c.waiting ?? 0) + (c.delayed ?? 0) + (c.prioritized ?? 0) + (c['waiting-children'] ?? 0),
      active: c.active ?? 0,
      completed: c.completed ?? 0,
      failed: c.failed ?? 0,
    };
  }

  async outcomes(): Promise<JobOutcome[]> {
    const items: Array<{ line: number; item: JobOutcome }> = [];
    for (const state of ['completed', 'failed'] as const) {
      const total = await this.queue.getJobCountByTypes(state);
      for (let start = 0; start < total; start += PAGE) {
        const page = (await this.queue.getJobs([state], start, start + PAGE - 1, true)) as Array<Job<BatchJob, JobResult>>;
        for (const job of page) {
          if (!job?.data) continue;
          const item: JobOutcome = state === 'completed'
            ? { id: job.data.id, status: 'completed', ...job.returnvalue }
            : { id: job.data.id, status: 'failed', error: job.failedReason };
          items.push({ line: job.data.line, item });
        }
      }
    }
    // Paging while workers move jobs between states can see one job twice: keep one per id.
    const seen = new Set<string>();
    return byJobOrder(items).filter((o) => !seen.has(o.id) && seen.add(o.id));
  }

  /**
   * Takes jobs from the queue until `signal` aborts (running jobs finish first), or, with
   * `untilIdle`, until nothing is waiting or running.
   */
  async work(handler: JobHandler, opts: WorkOptions & { untilIdle?: boolean } = {}): Promise<void> {
    if (opts.signal?.aborted) return;
    const worker = new Worker<BatchJob, JobResult>(this.opts.name, async (job) => {
      try {
        let lastAt = performance.now();
        return await handler(job.data, (fraction) => {
          // Each progress write is a Redis round trip: at most one per PROGRESS_MS, so short jobs write none.
          const now = performance.now();
          if (now - lastAt < PROGRESS_MS) return;
          lastAt = now;
          void job.updateProgress(Math.round(fraction * 100)).catch(() => {});
        });
      } catch (e) {
        if (isPermanentFailure(e)) throw new UnrecoverableError(failureReason(e));
        throw new Error(failureReason(e));
      }
    }, {
      connection: this.connection,
      concurrency: opts.concurrency ?? 1,
      lockDuration: this.stall.lockMs,
      stalledInterval: this.stall.stalledIntervalMs,
      maxStalledCount: this.stall.maxStalledCount,
      autorun: false,
    });
    this.workers.add(worker);
    worker.on('completed', (job, result) => opts.onOutcome?.({ id: job.data.id, status: 'completed', ...result }));
    worker.on('failed', (job, err) => {
      // Only a final failure is an outcome; a failure with tries left is a retry.
      if (job && (err instanceof UnrecoverableError || job.attemptsMade >= (job.opts.attempts ?? 1))) {
        opts.onOutcome?.({ id: job.data.id, status: 'failed', error: job.failedReason ?? failureReason(err) });
      }
    });
    worker.on('error', (e) => this.connectionError(e));   // retried by the client
    let timer: NodeJS.Timeout | undefined;
    const stopped = new Promise<void>((resolve) => {
      opts.signal?.addEventListener('abort', () => resolve(), { once: true });
      if (opts.untilIdle) {
        const check = async () => {
          const c = await this.counts().catch(() => undefined);
          if (c && c.waiting === 0 && c.active === 0) resolve();
        };
        worker.on('drained', () => { void check(); });
        // 'drained' is not emitted when a queue was empty from the start, nor after a retry's backoff.
        timer = setInterval(() => { void check(); }, 1000);
      }
    });
    const running = worker.run();
    await stopped;
    clearInterval(timer);
    await worker.close();
    await running;
    this.workers.delete(worker);
  }

  async close(): Promise<void> {
    for (const w of this.workers) await w.close(true);
    await this.queue.close();
    this.connection.disconnect();
  }
}
