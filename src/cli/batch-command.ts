/**
 * `paligemma batch`: run a JSONL job file through the model, on this machine (`run`, no Redis)
 * or across machines through a BullMQ queue on Redis (`submit`, `worker`, `status`, `results`).
 */
import { Command } from 'commander';
import { SingleBar, Presets } from 'cli-progress';
import { readJobFile, type JobOutcome, type QueueCounts } from '../batch/batch-job.js';
import { InProcessJobQueue } from '../batch/in-process-queue.js';
import { PipelineJobExecutor, executorHandler } from '../batch/job-executor.js';
import { DEFAULT_RETRY, type RetryPolicy } from '../batch/job-queue.js';
import { readResultsFile, writeResultsFile } from '../batch/results-file.js';
import { createRegistry } from '../create-pipeline.js';
import { parseNumber } from './cli-errors.js';
import { addModelOptions, pipelineFor, type ModelFlags } from './model-options.js';

interface RetryFlags { attempts: string; backoffMs: string }
interface RunFlags extends ModelFlags, RetryFlags { input: string; out: string; concurrency: string }

function concurrencyOf(value: string): number {
  return parseNumber('--concurrency', value, (n) => Number.isInteger(n) && n >= 1 && n <= 1024, 'an integer in 1..1024')!;
}

function retryOf(flags: RetryFlags): RetryPolicy {
  return {
    attempts: parseNumber('--attempts', flags.attempts, (n) => Number.isInteger(n) && n >= 1 && n <= 100, 'an integer in 1..100')!,
    backoffMs: parseNumber('--backoff-ms', flags.backoffMs, (n) => Number.isInteger(n) && n >= 0, 'an integer ≥ 0')!,
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
    .option('--concurrency <n>', 'jobs run at once on the one loaded model', '1')))
    .action(async (flags: RunFlags) => {
      const concurrency = concurrencyOf(flags.concurrency);
      const retry = retryOf(flags);
      const jobs = await readJobFile(flags.input);
      const done = await readResultsFile(flags.out);            // also refuses a file that is not ours
      const todo = jobs.filter((j) => done.get(j.id)?.status !== 'completed');
      if (todo.length < jobs.length) process.stderr.write(`note: ${jobs.length - todo.length} jobs already completed in ${flags.out}; skipping them\n`);
      const queue = new InProcessJobQueue(retry);
      await queue.submit(todo);
      if (todo.length > 0) {
        const registry = await createRegistry(flags.plugin);
        const pipe = await pipelineFor(flags);
        const bar = jobsProgressBar(todo.length);
        const controller = new AbortController();
        const onSigint = () => controller.abort();
        process.once('SIGINT', onSigint);
        try {
          const executor = new PipelineJobExecutor(pipe, registry);
          await queue.work(executorHandler(executor), {
            concurrency, signal: controller.signal, onOutcome: () => { void queue.counts().then((c) => bar.update(c)); },
          });
        } finally {
          bar.stop();
          process.off('SIGINT', onSigint);
          await pipe.close();
        }
      }
      const outcomes = await queue.outcomes();
      // Written even after Ctrl-C: what finished is kept, and a rerun does the rest.
      const lines = await writeResultsFile(flags.out, outcomes);
      process.stderr.write(`${summary(outcomes)}; ${lines} results in ${flags.out}\n`);
    });
}

export function batchCommand(): Command {
  const cmd = new Command('batch').description('run job files through the model: on this machine (run) or on workers sharing a Redis queue');
  for (const sub of [runCommand()]) cmd.addCommand(sub.exitOverride().configureOutput({ writeErr: () => {} }));
  return cmd;
}
