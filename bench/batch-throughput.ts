/**
 * Throughput of `paligemma batch` on one machine, on a tiny checkpoint (random weights):
 *
 * 1. in one process: N sequential `generate` calls (the baseline) against the same N jobs through
 *    the in-process queue (what `batch run` does) at concurrency 1 (one generate at a time) and
 *    4 and 16 (the jobs held decode as one batch), on one loaded pipeline;
 * 2. `paligemma batch run` end to end as a user runs it (process start and model load included),
 *    at concurrency 1 and 4;
 * 3. with a redis-server on PATH: the same jobs through BullMQ with 1 worker process against one
 *    worker process per core (concurrency 1 each, then 4 each), timed from the moment every
 *    worker has its model loaded.
 *
 *   npx tsx bench/batch-throughput.ts [--jobs 64] [--new-tokens 16] [--workers N] [--hidden 64] [--json]
 *
 * --hidden widens the tiny decoder (hidden size; MLP 2×, 4 heads, 2 layers) so that weight reads,
 * which a batched step shares, weigh more against per-job work than at the default 64.
 *
 * Timings on a shared machine are noisy: compare the ratios printed, which come from one run.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import type { BatchJob } from '../src/batch/batch-job.js';
import { InProcessJobQueue } from '../src/batch/in-process-queue.js';
import { BatchedJobExecutor, jobExecutorFor } from '../src/batch/batched-executor.js';
import { executorHandler } from '../src/batch/job-executor.js';
import { createPipeline } from '../src/create-pipeline.js';
import { buildTinyCheckpoint, makeTempDir, makeTestImage, mqaSpec } from '../src/tiny-models/tiny-checkpoint.js';
import { hasRedisServer, startRedis } from '../test/support/redis-server.js';

const BIN = fileURLToPath(new URL('../bin/paligemma.js', import.meta.url));

const { values: args } = parseArgs({
  options: {
    jobs: { type: 'string', default: '64' },
    'new-tokens': { type: 'string', default: '16' },
    hidden: { type: 'string', default: '64' },
    workers: { type: 'string', default: String(Math.max(2, availableParallelism())) },
    json: { type: 'boolean', default: false },
  },
});
const N = Number(args.jobs);
const NEW_TOKENS = Number(args['new-tokens']);
const WORKERS = Number(args.workers);
const HIDDEN = Number(args.hidden);
if (!Number.isInteger(HIDDEN) || HIDDEN < 16 || HIDDEN % 4 !== 0) throw new Error(`--hidden ${args.hidden}: expected a multiple of 4, ≥ 16`);

interface Row { what: string; seconds: number; imagesPerSecond: number; vsSequential: number; cpuSeconds?: number; cpuVsSequential?: number }
const rows: Row[] = [];
let baseline = 0;
let cpuBaseline = 0;
/** `cpuSeconds`: CPU time of this process during the run (in-process rows), steadier than wall time on a shared machine. */
function record(what: string, seconds: number, cpuSeconds?: number): void {
  const ips = N / seconds;
  if (rows.length === 0) { baseline = ips; cpuBaseline = cpuSeconds ?? 0; }
  const cpu = cpuSeconds === undefined ? {} : { cpuSeconds, cpuVsSequential: cpuBaseline / cpuSeconds };
  rows.push({ what, seconds, imagesPerSecond: ips, vsSequential: ips / baseline, ...cpu });
  if (!args.json) process.stderr.write(`  ${what}: ${seconds.toFixed(2)} s, ${ips.toFixed(1)} images/s${cpuSeconds === undefined ? '' : `, ${cpuSeconds.toFixed(2)} CPU s`}\n`);
}

const dir = await makeTempDir('pg-batch-bench-');
const model = join(dir, 'model');
await mkdir(model);
const spec = mqaSpec();
spec.text = { ...spec.text, hiddenSize: HIDDEN, intermediateSize: 2 * HIDDEN, headDim: HIDDEN / spec.text.numHeads };
await buildTinyCheckpoint(model, { ...spec, includeLmHead: true });
const images: string[] = [];
for (let i = 0; i < 8; i++) {
  const { data, width, height } = makeTestImage(32 + i, 24, i + 1);
  const p = join(dir, `img${i}.png`);
  await sharp(Buffer.from(data), { raw: { width, height, channels: 3 } }).png().toFile(p);
  images.push(p);
}
// Greedy decoding on random weights can end at <eos> early; the token counts are reported.
const jobs: BatchJob[] = Array.from({ length: N }, (_, i) => ({
  id: `job-${i}`, image: images[i % images.length], prompt: 'caption en', options: { maxNewTokens: NEW_TOKENS }, line: i + 1,
}));
const jobsFile = join(dir, 'jobs.jsonl');
await writeFile(jobsFile, jobs.map((j) => JSON.stringify({ id: j.id, image: j.image, prompt: j.prompt, options: j.options })).join('\n'));

// 1. One process, one pipeline.
const pipe = await createPipeline({ model });
for (const img of images.slice(0, 2)) await pipe.generate(img, 'caption en', { maxNewTokens: NEW_TOKENS });   // warm-up
// The runs take turns, in a rotated order each round, best of REPEATS each, so JIT warm-up,
// garbage collection and a busy neighbour hit them alike.
const REPEATS = 5;
const CONCURRENCY = [1, 4, 16];
const best = [Infinity, ...CONCURRENCY.map(() => Infinity)];
const bestCpu = [Infinity, ...CONCURRENCY.map(() => Infinity)];
const cpuNow = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };
const meanBatch = CONCURRENCY.map(() => 0);
let tokens = 0;
async function timeSequential(): Promise<void> {
  const t0 = performance.now();
  const c0 = cpuNow();
  tokens = 0;
  for (const j of jobs) tokens += (await pipe.generate(j.image, j.prompt, { maxNewTokens: NEW_TOKENS })).tokens.length;
  best[0] = Math.min(best[0], (performance.now() - t0) / 1000);
  bestCpu[0] = Math.min(bestCpu[0], cpuNow() - c0);
}
async function timeQueue(c: number): Promise<void> {
  const concurrency = CONCURRENCY[c];
  const q = new InProcessJobQueue();
  await q.submit(jobs);
  const executor = jobExecutorFor(pipe, concurrency);
  const t0 = performance.now();
  const c0 = cpuNow();
  await q.work(executorHandler(executor), { concurrency });
  best[c + 1] = Math.min(best[c + 1], (performance.now() - t0) / 1000);
  bestCpu[c + 1] = Math.min(bestCpu[c + 1], cpuNow() - c0);
  if (executor instanceof BatchedJobExecutor) meanBatch[c] = executor.stats.stepRows / executor.stats.steps;
  await executor.close?.();
  const failed = (await q.counts()).failed;
  if (failed > 0) throw new Error(`${failed} jobs failed in the in-process queue`);
}
const runs = [timeSequential, ...CONCURRENCY.map((_, c) => () => timeQueue(c))];
for (let rep = 0; rep < REPEATS; rep++) {
  for (let k = 0; k < runs.length; k++) await runs[(k + rep) % runs.length]();
}
record(`${N} sequential generate calls (best of ${REPEATS})`, best[0], bestCpu[0]);
for (const [c, concurrency] of CONCURRENCY.entries()) {
  const batch = concurrency > 1 ? `, batched decode, mean ${meanBatch[c].toFixed(1)} jobs per step` : ', one generate at a time';
  record(`in-process queue (batch run), concurrency ${concurrency}${batch} (best of ${REPEATS})`, best[c + 1], bestCpu[c + 1]);
}
let t = 0;
await pipe.close();

// 2. The command as a user runs it.
for (const concurrency of [1, 4]) {
  t = performance.now();
  const run = spawnSync(process.execPath, [BIN, 'batch', 'run', '--model', model, '--input', jobsFile, '--out', join(dir, `results-${concurrency}.jsonl`), '--concurrency', String(concurrency)], { encoding: 'utf8', timeout: 600_000 });
  if (run.status !== 0) throw new Error(`batch run failed: ${run.stderr}`);
  record(`paligemma batch run --concurrency ${concurrency} (process start + model load included)`, (performance.now() - t) / 1000);
}

// 3. BullMQ workers.
if (!hasRedisServer()) {
  process.stderr.write('  skipped the BullMQ rows: redis-server is not on PATH\n');
} else {
  const redis = await startRedis();
  const { BullmqJobQueue } = await import('../src/batch/bullmq-queue.js');
  try {
    // Each setting twice, in turn, best of the two: one run of fresh processes is at the mercy of a busy neighbour.
    const settings = [[1, 1], [WORKERS, 1], [1, 4], [WORKERS, 4]];
    const bestBull = settings.map(() => Infinity);
    for (let round = 0; round < 2 * settings.length; round++) {
      const k = round % settings.length;
      const [count, concurrency] = settings[round < settings.length ? k : settings.length - 1 - k];
      const name = `bench-${count}-${concurrency}-${round}`;
      const queue = await BullmqJobQueue.open({ name, redisUrl: redis.url });
      const { Queue } = await import('bullmq');
      const { Redis } = await import('ioredis');
      const conn = new Redis(redis.url, { maxRetriesPerRequest: null });
      const raw = new Queue(name, { connection: conn });
      await raw.pause();                 // nobody starts before every worker has its model loaded
      await queue.submit(jobs);
      const ready: Array<Promise<void>> = [];
      const exits: Array<Promise<void>> = [];
      for (let w = 0; w < count; w++) {
        const child = spawn(process.execPath, [BIN, 'batch', 'worker', '--queue', name, '--redis', redis.url, '--model', model, '--until-idle', '--concurrency', String(concurrency)], { stdio: ['ignore', 'ignore', 'pipe'] });
        let log = '';
        ready.push(new Promise((resolve, reject) => {
          child.stderr!.on('data', (b: Buffer) => { log += b.toString(); if (log.includes(' ready on queue ')) resolve(); });
          child.once('exit', (code) => reject(new Error(`worker exited with ${code} before it was ready: ${log}`)));
        }));
        exits.push(new Promise((resolve) => child.once('exit', () => resolve())));
        setTimeout(() => child.kill('SIGKILL'), 600_000).unref();
      }
      await Promise.all(ready);
      t = performance.now();
      await raw.resume();
      const deadline = Date.now() + 600_000;
      for (;;) {
        const c = await queue.counts();
        if (c.waiting === 0 && c.active === 0) {
          if (c.failed > 0) throw new Error(`${c.failed} jobs failed on BullMQ`);
          break;
        }
        if (Date.now() > deadline) throw new Error('BullMQ run did not finish in 10 minutes');
        await new Promise((r) => setTimeout(r, 20));
      }
      const s = settings.findIndex(([a, b]) => a === count && b === concurrency);
      bestBull[s] = Math.min(bestBull[s], (performance.now() - t) / 1000);
      await Promise.all(exits);
      await raw.close();
      conn.disconnect();
      await queue.close();
    }
    for (const [s, [count, concurrency]] of settings.entries()) {
      record(`BullMQ, ${count} worker process${count > 1 ? 'es' : ''}, concurrency ${concurrency} each (after model load, best of 2)`, bestBull[s]);
    }
  } finally {
    await redis.stop();
  }
}

const meta = { jobs: N, hidden: HIDDEN, maxNewTokens: NEW_TOKENS, meanTokens: tokens / N, cores: availableParallelism(), workers: WORKERS };
if (args.json) {
  process.stdout.write(`${JSON.stringify({ ...meta, rows })}\n`);
} else {
  process.stdout.write(`\n${N} jobs, hidden ${HIDDEN}, up to ${NEW_TOKENS} new tokens (mean ${meta.meanTokens.toFixed(1)}), ${meta.cores} cores\n\n`);
  process.stdout.write('| run | seconds | images/s | vs sequential generate | CPU s | images per CPU s vs sequential |\n|---|---:|---:|---:|---:|---:|\n');
  for (const r of rows) {
    const cpu = r.cpuSeconds === undefined ? '| – | – ' : `| ${r.cpuSeconds.toFixed(2)} | ${r.cpuVsSequential!.toFixed(2)}× `;
    process.stdout.write(`| ${r.what} | ${r.seconds.toFixed(2)} | ${r.imagesPerSecond.toFixed(1)} | ${r.vsSequential.toFixed(2)}× ${cpu}|\n`);
  }
}
process.exit(0);
