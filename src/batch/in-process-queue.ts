/**
 * The single-machine queue behind `paligemma batch run`: the same rules as the Redis one (id =
 * line id, user errors fail at once, other errors retried with backoff), held in memory.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { BatchJob, JobOutcome, QueueCounts } from './batch-job.js';
import {
  DEFAULT_RETRY, byJobOrder, failureReason, isPermanentFailure,
  type JobHandler, type JobQueue, type RetryPolicy, type SubmitReport, type WorkOptions,
} from './job-queue.js';

interface Entry {
  job: BatchJob;
  state: 'waiting' | 'active' | 'completed' | 'failed';
  attempts: number;
  /** Earliest time (ms, performance clock) a retry may start. */
  notBefore: number;
  outcome?: JobOutcome;
}

export class InProcessJobQueue implements JobQueue {
  private readonly entries = new Map<string, Entry>();

  constructor(private readonly retry: RetryPolicy = DEFAULT_RETRY) {}

  async submit(jobs: readonly BatchJob[]): Promise<SubmitReport> {
    let added = 0;
    for (const job of jobs) {
      if (this.entries.has(job.id)) continue;
      this.entries.set(job.id, { job, state: 'waiting', attempts: 0, notBefore: 0 });
      added++;
    }
    return { added, duplicates: jobs.length - added };
  }

  async counts(): Promise<QueueCounts> {
    const c: QueueCounts = { waiting: 0, active: 0, completed: 0, failed: 0 };
    for (const e of this.entries.values()) c[e.state]++;
    return c;
  }

  async outcomes(): Promise<JobOutcome[]> {
    return byJobOrder([...this.entries.values()].filter((e) => e.outcome).map((e) => ({ line: e.job.line, item: e.outcome! })));
  }

  /** Runs every queued job (`concurrency` at once) and resolves when none is left, or on abort. */
  async work(handler: JobHandler, opts: WorkOptions = {}): Promise<void> {
    const concurrency = opts.concurrency ?? 1;
    // A FIFO of waiting jobs (retries join its end once their backoff is over): O(1) per job.
    const ready: Entry[] = [...this.entries.values()].filter((e) => e.state === 'waiting' && e.notBefore === 0);
    const backingOff = new Set<Entry>([...this.entries.values()].filter((e) => e.state === 'waiting' && e.notBefore > 0));
    let head = 0;
    const runner = async (): Promise<void> => {
      for (;;) {
        if (opts.signal?.aborted) return;
        if (head < ready.length) {
          const next = ready[head++];
          if (head > 1024 && head * 2 > ready.length) { ready.splice(0, head); head = 0; }
          await this.runOne(next, handler, opts);
          if (next.state === 'waiting') backingOff.add(next);
          continue;
        }
        // The jobs other runners hold are theirs to finish (and retry).
        if (backingOff.size === 0) return;
        const due = Math.min(...[...backingOff].map((e) => e.notBefore));
        const now = performance.now();
        if (due > now) { await sleep(due - now); continue; }
        for (const e of backingOff) if (e.notBefore <= now) { backingOff.delete(e); ready.push(e); }
      }
    };
    await Promise.all(Array.from({ length: concurrency }, runner));
  }

  private async runOne(e: Entry, handler: JobHandler, opts: WorkOptions): Promise<void> {
    e.state = 'active';
    e.attempts++;
    try {
      const result = await handler(e.job, () => {});
      e.state = 'completed';
      e.outcome = { id: e.job.id, status: 'completed', ...result };
    } catch (err) {
      if (!isPermanentFailure(err) && e.attempts < this.retry.attempts) {
        e.state = 'waiting';
        e.notBefore = performance.now() + this.retry.backoffMs * 2 ** (e.attempts - 1);
        return;
      }
      e.state = 'failed';
      e.outcome = { id: e.job.id, status: 'failed', error: failureReason(err) };
    }
    opts.onOutcome?.(e.outcome);
  }

  async close(): Promise<void> {}
}
