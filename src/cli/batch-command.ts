/**
 * `paligemma batch`: run a JSONL job file through the model, on this machine (`run`, no Redis)
 * or across machines through a BullMQ queue on Redis (`submit`, `worker`, `status`, `results`).
 */
import { statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { Command } from 'commander';
import { SingleBar, Presets } from 'cli-progress';
import { readJobFile, type JobOutcome, type QueueCounts } from '../batch/batch-job.js';
import type { BullmqJobQueue, BullmqQueueOptions } from '../batch/bullmq-queue.js';
import { InProcessJobQueue } from '../batch/in-process-queue.js';
import { jobExecutorFor } from '../batch/batched-executor.js';
import { executorHandler } from '../batch/job-executor.js';
import { DEFAULT_RETRY, DEFAULT_STALL, type RetryPolicy } from '../batch/job-queue.js';
import { readResultsFile, writeResultsFile } from '../batch/results-file.js';
import { openBullmqJobQueue } from '../batch/index.js';
import { createRegistry } from '../create-pipeline.js';
import { PaliGemmaError } from '../interfaces/errors.js';
import { parseInteger } from './cli-errors.js';
import { addModelOptions, pipelineFor, type ModelFlags } from './model-options.js';

interface RetryFlags { attempts: string; backoffMs: string }
interface RunFlags extends ModelFlags, RetryFlags { input: string; out: string; concurrency: string }
interface QueueFlags { queue: string; redis: string; json?: boolean }
interface SubmitFlags extends QueueFlags, RetryFlags { input: string }
interface WorkerFlags extends QueueFlags, ModelFlags {
  concurrency: string; lockMs: string; stalledIntervalMs: string; maxStalled: string; untilIdle?: boolean;
}
interface ResultsFlags extends QueueFlags { out: string }
interface StatusFlags extends QueueFlags { watch?: boolean }

const RUN_FLUSH_MS = 30_000;
const DEFAULT_REDIS = process.env.PALIGEMMA_REDIS ?? 'redis://127.0.0.1:6379';

function addQueueOptions(cmd: Command): Command {
  return cmd
    .requiredOption('--queue <name>', 'queue name (the same on submit, workers, status and results)')
    .option('--redis <url>', 'Redis URL (env PALIGEMMA_REDIS)', DEFAULT_REDIS);
}

function queueOptions(flags: QueueFlags, extra: Partial<BullmqQueueOptions> = {}): BullmqQueueOptions {
  return { name: flags.queue, redisUrl: flags.redis, ...extra };
}

/** BullMQ and its Redis client take about a second to load: only the commands that use them pay. */
const openQueue = openBullmqJobQueue;

function countsLine(c: QueueCounts): string {
  const total = c.waiting + c.active + c.completed + c.failed;
  return `waiting ${c.waiting}, active ${c.active}, completed ${c.completed}, failed ${c.failed} (${total} jobs)`;
}

/** One stderr line per new Redis error message, and at most one every 10 s: an outage is not a flood. */
function redisWarning(redisUrl: string): (message: string) => void {
  let url = redisUrl;
  try { const u = new URL(redisUrl); if (u.password) { u.password = '***'; url = u.toString(); } } catch { /* shown as given */ }
  let last = '';
  let at = 0;
  return (message) => {
    const now = Date.now();
    if (message === last && now - at < 10_000) return;
    last = message;
    at = now;
    process.stderr.write(`warning: Redis at ${url}: ${message}\n`);
  };
}

function concurrencyOf(value: string): number {
  return parseInteger('--concurrency', value, 1, 1024)!;
}

function retryOf(flags: RetryFlags): RetryPolicy {
  return {
    attempts: parseInteger('--attempts', flags.attempts, 1, 100)!,
    backoffMs: parseInteger('--backoff-ms', flags.backoffMs, 0)!,
  };
}

function addRetryOptions(cmd: Command): Command {
  return cmd
    .option('--attempts <n>', 'tries per job for failures other than user errors', String(DEFAULT_RETRY.attempts))
    .option('--backoff-ms <ms>', 'delay before the first retry, doubled on each further one', String(DEFAULT_RETRY.backoffMs));
}

/** A bar of finished/total jobs on stderr when it is a terminal; nothing otherwise. */
export function jobsProgressBar(total: number): { update(c: QueueCounts): void; stop(): void } {
  if (!process.stderr.isTTY) return { update() {}, stop() {} };
  const bar = new SingleBar({
    stream: process.stderr,
    format: 'jobs [{bar}] {value}/{total} done ({failed} failed, {active} running, {waiting} waiting)',
    hideCursor: true,
  }, Presets.shades_classic);
  bar.start(total, 0, { failed: 0, active: 0, waiting: total });
  return {
    update(c) { bar.setTotal(c.waiting + c.active + c.completed + c.failed); bar.update(c.completed + c.failed, { ...c }); },
    stop() { bar.stop(); },
  };
}

function summary(outcomes: readonly JobOutcome[]): string {
  const failed = outcomes.filter((o) => o.status === 'failed').length;
  return `${outcomes.length - failed} completed, ${failed} failed`;
}

function runCommand(): Command {
  return addRetryOptions(addModelOptions(new Command('run')
    .description('run a job file on this machine, no Redis needed (an in-process queue)')
    .requiredOption('--input <jobs.jsonl>', 'job file: one {id, image, prompt | task, options} per line')
    .requiredOption('--out <results.jsonl>', 'results file: one line per id; ids already completed there are skipped')
    .option('--concurrency <n>', 'jobs run at once on the one loaded model, decoded as one batch', '1')))
    .action(async (flags: RunFlags) => {
      const concurrency = concurrencyOf(flags.concurrency);
      const retry = retryOf(flags);
      const jobs = await readJobFile(flags.input);
      const outDir = dirname(resolve(flags.out));
      if (!statSync(outDir, { throwIfNoEntry: false })?.isDirectory()) {
        throw new PaliGemmaError(`--out ${flags.out}: folder ${outDir} does not exist`);
      }
      const done = await readResultsFile(flags.out);            // also refuses a file that is not ours
      const todo = jobs.filter((j) => done.get(j.id)?.status !== 'completed');
      if (todo.length < jobs.length) process.stderr.write(`note: ${jobs.length - todo.length} jobs already completed in ${flags.out}; skipping them\n`);
      const queue = new InProcessJobQueue(retry);
      await queue.submit(todo);
      // What has finished reaches the results file every half minute, so a crash loses little.
      let flushing: Promise<unknown> = Promise.resolve();
      const flush = () => { flushing = flushing.catch(() => {}).then(async () => writeResultsFile(flags.out, await queue.outcomes())); return flushing; };
      const timer = setInterval(() => { void flush().catch(() => {}); }, RUN_FLUSH_MS);
      timer.unref();
      if (todo.length > 0) {
        const registry = await createRegistry(flags.plugin);
        const pipe = await pipelineFor(flags);
        const bar = jobsProgressBar(todo.length);
        const controller = new AbortController();
        const onSigint = () => controller.abort();
        process.once('SIGINT', onSigint);
        const executor = jobExecutorFor(pipe, concurrency, registry);
        try {
          await queue.work(executorHandler(executor), {
            concurrency, signal: controller.signal, onOutcome: () => { void queue.counts().then((c) => bar.update(c)); },
          });
        } finally {
          await executor.close?.();
          bar.stop();
          process.off('SIGINT', onSigint);
          await pipe.close();
        }
      }
      clearInterval(timer);
      await flushing.catch(() => {});
      const outcomes = await queue.outcomes();
      // Written even after Ctrl-C: what finished is kept, and a rerun does the rest.
      const lines = await writeResultsFile(flags.out, outcomes);
      process.stderr.write(`${summary(outcomes)}; ${lines} results in ${flags.out}\n`);
    });
}

function submitCommand(): Command {
  return addRetryOptions(addQueueOptions(new Command('submit')
    .description('queue a job file; ids the queue already holds are not queued again')
    .requiredOption('--input <jobs.jsonl>', 'job file: one {id, image, prompt | task, options} per line (relative images resolve against its folder)')
    .option('--json', 'print {added, duplicates} as JSON')))
    .action(async (flags: SubmitFlags) => {
      const retry = retryOf(flags);
      const jobs = await readJobFile(flags.input);
      const queue = await openQueue(queueOptions(flags, { retry }));
      try {
        const r = await queue.submit(jobs);
        if (flags.json) process.stdout.write(`${JSON.stringify(r)}\n`);
        else process.stdout.write(`queued ${r.added} jobs on ${flags.queue}; ${r.duplicates} already there\n`);
      } finally {
        await queue.close();
      }
    });
}

function workerCommand(): Command {
  return addModelOptions(addQueueOptions(new Command('worker')
    .description('load the model once and run jobs from the queue until stopped (Ctrl-C or SIGTERM lets running jobs finish)')
    .option('--concurrency <n>', 'jobs run at once on the one loaded model, decoded as one batch', '1')
    .option('--lock-ms <ms>', "a running job's lock; a dead worker's jobs are retried this long after it stops renewing", String(DEFAULT_STALL.lockMs))
    .option('--stalled-interval-ms <ms>', 'how often to look for jobs of dead workers', String(DEFAULT_STALL.stalledIntervalMs))
    .option('--max-stalled <n>', "times a job is retried after its worker died before it is failed", String(DEFAULT_STALL.maxStalledCount))
    .option('--until-idle', 'exit once nothing is waiting or running')))
    .action(async (flags: WorkerFlags) => {
      const concurrency = concurrencyOf(flags.concurrency);
      const ms = (flag: string, v: string) => parseInteger(flag, v, 100)!;
      const stall = {
        lockMs: ms('--lock-ms', flags.lockMs),
        stalledIntervalMs: ms('--stalled-interval-ms', flags.stalledIntervalMs),
        maxStalledCount: parseInteger('--max-stalled', flags.maxStalled, 0)!,
      };
      const queue = await openQueue(queueOptions(flags, { stall, persistent: true, onConnectionError: redisWarning(flags.redis) }));
      const controller = new AbortController();
      const stop = () => { process.stderr.write('stopping: running jobs finish first\n'); controller.abort(); };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      try {
        const registry = await createRegistry(flags.plugin);
        const pipe = await pipelineFor(flags);
        const executor = jobExecutorFor(pipe, concurrency, registry);
        try {
          process.stderr.write(`worker ${process.pid} ready on queue ${flags.queue} (concurrency ${concurrency})\n`);
          await queue.work(executorHandler(executor), {
            concurrency,
            signal: controller.signal,
            untilIdle: flags.untilIdle,
            onOutcome: (o) => process.stderr.write(o.status === 'completed' ? `job ${o.id} completed\n` : `job ${o.id} failed: ${o.error}\n`),
          });
        } finally {
          await executor.close?.();
          await pipe.close();
        }
      } finally {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        await queue.close();
      }
    });
}

function statusCommand(): Command {
  return addQueueOptions(new Command('status')
    .description('count waiting, active, completed and failed jobs (a progress bar in a terminal)')
    .option('--watch', 'refresh every second until nothing is waiting or running')
    .option('--json', 'print the counts as JSON'))
    .action(async (flags: StatusFlags) => {
      const queue = await openQueue(queueOptions(flags));
      try {
        let c = await queue.counts();
        const tty = !flags.json && process.stdout.isTTY;
        if (tty) {
          const bar = new SingleBar({
            stream: process.stdout,
            format: '[{bar}] {percentage}% | waiting {waiting}, active {active}, completed {completed}, failed {failed}',
            hideCursor: true,
            noTTYOutput: false,
          }, Presets.shades_classic);
          const total = (x: QueueCounts) => x.waiting + x.active + x.completed + x.failed;
          bar.start(Math.max(1, total(c)), c.completed + c.failed, { ...c });
          while (flags.watch && c.waiting + c.active > 0) {
            await new Promise((r) => setTimeout(r, 1000));
            c = await queue.counts();
            bar.setTotal(Math.max(1, total(c)));
            bar.update(c.completed + c.failed, { ...c });
          }
          bar.stop();
        } else {
          while (flags.watch && !flags.json && c.waiting + c.active > 0) {
            process.stdout.write(`${countsLine(c)}\n`);
            await new Promise((r) => setTimeout(r, 1000));
            c = await queue.counts();
          }
          process.stdout.write(flags.json ? `${JSON.stringify(c)}\n` : `${countsLine(c)}\n`);
        }
      } finally {
        await queue.close();
      }
    });
}

function resultsCommand(): Command {
  return addQueueOptions(new Command('results')
    .description('write the finished jobs to a results file (one line per id; safe to run again)')
    .requiredOption('--out <results.jsonl>', 'results file; merged with what it already holds'))
    .action(async (flags: ResultsFlags) => {
      const queue = await openQueue(queueOptions(flags));
      try {
        const outcomes = await queue.outcomes();
        const c = await queue.counts();
        const lines = await writeResultsFile(flags.out, outcomes);
        const pending = c.waiting + c.active;
        process.stderr.write(`${summary(outcomes)}; ${lines} results in ${flags.out}${pending ? `; ${pending} jobs not finished yet` : ''}\n`);
      } finally {
        await queue.close();
      }
    });
}

export function batchCommand(): Command {
  const cmd = new Command('batch').description('run job files through the model: on this machine (run) or on workers sharing a Redis queue');
  for (const sub of [runCommand(), submitCommand(), workerCommand(), statusCommand(), resultsCommand()]) cmd.addCommand(sub.exitOverride().configureOutput({ writeErr: () => {} }));
  return cmd;
}
