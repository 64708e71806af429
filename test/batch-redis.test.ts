/**
 * `paligemma batch` on a real Redis: the one PALIGEMMA_TEST_REDIS_URL names (CI starts it on a
 * loopback port), else a throwaway redis-server of its own; two worker processes on one queue,
 * one killed with SIGKILL in the middle of a job. Queue names are this run's own and are
 * removed at the end, so a shared Redis keeps nothing of the tests.
 */
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import sharp from 'sharp';
import { BullmqJobQueue, bullmqJobId } from '../src/batch/bullmq-queue.js';
import { createPipeline } from '../src/create-pipeline.js';
import { PaliGemmaError } from '../src/interfaces/errors.js';
import type { GenerationResult } from '../src/generation/generation-types.js';
import { expectUserError, runCli } from './support/run-cli.js';
import { TEST_REDIS_ENV, removeQueues, testRedis, uniqueQueueName, type TestRedis } from './support/redis-server.js';
import { buildTinyCheckpoint, makeTempDir, makeTestImage, mqaSpec } from './support/tiny-checkpoint.js';

const BIN = fileURLToPath(new URL('../bin/paligemma.js', import.meta.url));
const SLOW_PLUGIN = fileURLToPath(new URL('./support/slow-image-plugin.ts', import.meta.url));

interface WorkerProcess { child: ChildProcess; log: () => string; exited: Promise<number | null> }

function startWorker(args: string[]): WorkerProcess {
  const child = spawn(process.execPath, [BIN, 'batch', 'worker', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.on('data', (b: Buffer) => { log += b.toString(); });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return { child, log: () => log, exited };
}

/** Polls `ready` every 100 ms; fails after `ms`. */
async function waitFor(what: string, ms: number, ready: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await ready())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const completedIds = (log: string) => [...log.matchAll(/^job (\S+) completed$/gm)].map((m) => m[1]);

describe('paligemma batch on Redis', function () {
  let redis: TestRedis | undefined;
  const Q1 = uniqueQueueName('q1');
  let dir: string;
  let model: string;
  let jobsFile: string;
  const workers: WorkerProcess[] = [];
  const jobs: Array<{ id: string; image: string; prompt: string; maxNewTokens: number }> = [];

  before(async function () {
    redis = await testRedis();
    if (!redis) {
      console.log(`    skipped: no ${TEST_REDIS_ENV} and no redis-server on PATH (Debian: apt-get install redis-server)`);
      this.skip();
    }
    dir = await makeTempDir('pg-batch-redis-');
    model = join(dir, 'model');
    await mkdir(model);
    await buildTinyCheckpoint(model, { ...mqaSpec(), includeLmHead: true });
    for (let i = 0; i < 4; i++) {
      const { data, width, height } = makeTestImage(16 + 3 * i, 20, 10 + i);
      await sharp(Buffer.from(data), { raw: { width, height, channels: 3 } }).png().toFile(join(dir, `img${i}.png`));
    }
    await writeFile(join(dir, 'corrupt.png'), Buffer.from('definitely not a PNG'));
    const prompts = ['caption en', 'detect cat', 'ocr', 'answer en what is it?'];
    for (let i = 0; i < 12; i++) {
      // Integer-looking and ':'-holding ids: BullMQ refuses both as raw job ids.
      jobs.push({ id: i % 3 === 0 ? String(i) : `img:${i}`, image: join(dir, `img${i % 4}.png`), prompt: prompts[(i * 3) % 4], maxNewTokens: 3 + (i % 5) });
    }
    jobsFile = join(dir, 'jobs.jsonl');
    await writeFile(jobsFile, [
      ...jobs.map((j) => JSON.stringify({ id: j.id, image: j.image, prompt: j.prompt, options: { maxNewTokens: j.maxNewTokens } })),
      JSON.stringify({ id: 'bad', image: 'corrupt.png', task: 'caption' }),
    ].join('\n'));
  });

  after(async function () {
    for (const w of workers) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGKILL');
    await Promise.all(workers.map((w) => w.exited));
    try {
      if (redis) await removeQueues(redis.url, [Q1]);
    } finally {
      await redis?.stop();
    }
  });

  it('submitting the same file twice queues each id once', function () {
    const q = ['--queue', Q1, '--redis', redis!.url];
    const first = runCli(['batch', 'submit', ...q, '--input', jobsFile, '--json', '--attempts', '2', '--backoff-ms', '200']);
    expect(first.code, first.stderr).to.equal(0);
    expect(JSON.parse(first.stdout)).to.deep.equal({ added: 13, duplicates: 0 });
    const second = runCli(['batch', 'submit', ...q, '--input', jobsFile, '--json']);
    expect(JSON.parse(second.stdout)).to.deep.equal({ added: 0, duplicates: 13 });
    const status = runCli(['batch', 'status', ...q, '--json']);
    expect(status.code, status.stderr).to.equal(0);
    expect(JSON.parse(status.stdout)).to.deep.equal({ waiting: 13, active: 0, completed: 0, failed: 0 });
    expect(runCli(['batch', 'status', ...q]).stdout.trim()).to.equal('waiting 13, active 0, completed 0, failed 0 (13 jobs)');
  });

  it('two workers, one SIGKILLed mid-job: every job has exactly one result with the tokens of a direct generate', async function () {
    // Bounded: each wait below has its own limit, and together they stay under this one.
    this.timeout(240_000);
    const args = ['--queue', Q1, '--redis', redis!.url, '--model', model, '--plugin', SLOW_PLUGIN, '--image-processor', 'slow-siglip',
      '--lock-ms', '1500', '--stalled-interval-ms', '300'];
    // a runs one job at a time (so it is killed inside exactly one); b batches three. b starts
    // once a has its model: b's own start then leaves a the time to finish a first job while
    // jobs still wait, so a surely holds one when it is killed.
    const a = startWorker(args);
    workers.push(a);
    await waitFor('worker a to be ready', 60_000, () => a.log().includes(' ready on queue ') || a.child.exitCode !== null);
    const b = startWorker([...args, '--concurrency', '3']);
    workers.push(b);
    // Kill a once it has finished one job: it took the next one as it finished (BullMQ fetches
    // it in the same call) and is inside that one's image pause.
    await waitFor('worker a to complete a job', 60_000, () => completedIds(a.log()).length >= 1 || a.child.exitCode !== null);
    expect(a.child.exitCode, a.log()).to.equal(null);
    a.child.kill('SIGKILL');
    await a.exited;

    const queue = await BullmqJobQueue.open({ name: Q1, redisUrl: redis!.url });
    try {
      await waitFor('the queue to drain', 60_000, async () => {
        const c = await queue.counts();
        return c.waiting === 0 && c.active === 0;
      });
      expect(await queue.counts()).to.deep.equal({ waiting: 0, active: 0, completed: 12, failed: 1 });
    } finally {
      await queue.close();
    }
    b.child.kill('SIGTERM');
    const code = await Promise.race([b.exited, new Promise((r) => setTimeout(() => r('timeout'), 30_000))]);
    expect(code, b.log()).to.equal(0);
    expect(b.log()).to.match(/stopping: running jobs finish first/);

    // No job ran to completion on both workers.
    const ranA = completedIds(a.log());
    const ranB = completedIds(b.log());
    expect(ranA.filter((id) => ranB.includes(id))).to.deep.equal([]);
    expect(ranB).to.have.length.above(0);

    // The job a was killed in was recovered from the stall, by b.
    const connection = new Redis(redis!.url, { maxRetriesPerRequest: null });
    const raw = new Queue(Q1, { connection });
    try {
      const stalled = [];
      for (const j of [...jobs, { id: 'bad' }]) {
        const job = await raw.getJob(bullmqJobId(j.id));
        if (job && job.stalledCounter > 0) stalled.push(j.id);
      }
      expect(stalled, 'a job recovered after its worker was killed').to.have.length(1);
      expect(ranB).to.include(stalled[0]);
      const bad = await raw.getJob(bullmqJobId('bad'));
      expect(bad!.attemptsMade, 'a user error is not retried').to.equal(1);
    } finally {
      await raw.close();
      connection.disconnect();
    }

    // `batch results` twice: one line per id, each completed one equal to a direct generate.
    const out = join(dir, 'results.jsonl');
    for (let i = 0; i < 2; i++) {
      const r = runCli(['batch', 'results', '--queue', Q1, '--redis', redis!.url, '--out', out]);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stderr).to.match(/12 completed, 1 failed; 13 results/);
    }
    const results = (await readFile(out, 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    expect(results.map((x) => x.id)).to.deep.equal([...jobs.map((j) => j.id), 'bad']);
    const pipe = await createPipeline({ model });
    try {
      for (const [i, j] of jobs.entries()) {
        const direct: GenerationResult = await pipe.generate(j.image, j.prompt, { maxNewTokens: j.maxNewTokens });
        expect(results[i].status, j.id).to.equal('completed');
        expect(results[i].tokens, j.id).to.deep.equal(direct.tokens);
        expect(results[i].text, j.id).to.equal(direct.text);
      }
    } finally {
      await pipe.close();
    }
    expect(results[12].status).to.equal('failed');
    expect(results[12].error).to.match(/corrupt\.png/);
  });

  it('an unreachable Redis is one error line naming the URL', function () {
    const r = runCli(['batch', 'status', '--queue', 'q1', '--redis', 'redis://127.0.0.1:1']);
    expectUserError(r, /cannot reach Redis at redis:\/\/127\.0\.0\.1:1/);
  });

  it('refuses a queue name BullMQ cannot hold and a URL that is not Redis', async function () {
    const refused = async (o: { name: string; redisUrl: string }) => {
      try { await BullmqJobQueue.open({ ...o, connectTimeoutMs: 1000 }); } catch (e) { return e; }
      return undefined;
    };
    expect(await refused({ name: 'a:b', redisUrl: redis!.url })).to.be.instanceOf(PaliGemmaError).with.property('message').that.match(/invalid --queue "a:b"/);
    expect(await refused({ name: 'q', redisUrl: 'http://127.0.0.1:6379' })).to.be.instanceOf(PaliGemmaError).with.property('message').that.match(/invalid --redis/);
  });
});
