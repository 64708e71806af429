/**
 * A worker batches the jobs it holds: with concurrency N the in-process queue hands up to N jobs
 * to the batched executor, whose scheduler decodes them together. Each job must still get what
 * a direct `generate` gives it (tokens, text, finish reason, log-probabilities, seeded sampling),
 * a corrupt image must fail alone, and the decode steps must really have held several jobs.
 */
import { expect } from 'chai';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import type { BatchJob, JobOutcome } from '../src/batch/batch-job.js';
import { BatchedJobExecutor, jobExecutorFor } from '../src/batch/batched-executor.js';
import { InProcessJobQueue } from '../src/batch/in-process-queue.js';
import { PipelineJobExecutor, executorHandler } from '../src/batch/job-executor.js';
import { createPipeline, createRegistry } from '../src/create-pipeline.js';
import type { PaliGemmaPipeline } from '../src/paligemma-pipeline.js';
import type { PartRegistry } from '../src/plugin/part-registry.js';
import { buildTinyCheckpoint, gemma2Spec, makeTempDir, makeTestImage, mqaSpec } from './support/tiny-checkpoint.js';

describe('batch worker: the jobs it holds decode as one batch', function () {
  this.timeout(120_000);
  let dir: string;
  let model: string;
  let pipe: PaliGemmaPipeline;
  let registry: PartRegistry;
  const images: string[] = [];

  before(async function () {
    dir = await makeTempDir('pg-batch-batched-');
    model = join(dir, 'model');
    await mkdir(model);
    await buildTinyCheckpoint(model, { ...mqaSpec(), includeLmHead: true });
    for (let i = 0; i < 4; i++) {
      const { data, width, height } = makeTestImage(18 + 5 * i, 22, 30 + i);
      const p = join(dir, `img${i}.png`);
      await sharp(Buffer.from(data), { raw: { width, height, channels: 3 } }).png().toFile(p);
      images.push(p);
    }
    await writeFile(join(dir, 'corrupt.png'), Buffer.from('not an image at all'));
    pipe = await createPipeline({ model });
    registry = await createRegistry();
  });
  after(async () => pipe?.close());

  const PROMPTS = ['caption en', 'detect cat ; dog', 'ocr', 'answer en what is shown here?', 'a', 'segment cat'];
  const jobs: BatchJob[] = Array.from({ length: 10 }, (_, i) => ({
    id: `j${i}`,
    image: '',                                  // set in the test, once the images exist
    prompt: PROMPTS[i % PROMPTS.length],
    // Different lengths: jobs leave the batch at different steps and new ones join mid-way.
    options: { maxNewTokens: 4 + ((i * 5) % 9), ...(i === 3 ? { logprobs: 3 } : {}), ...(i === 7 ? { sampler: 'top-k', topK: 20, temperature: 2, seed: 11 } : {}) },
    line: i + 1,
  }));

  async function runAll(executor: { run: BatchedJobExecutor['run'] }, concurrency: number, list: BatchJob[]): Promise<JobOutcome[]> {
    const q = new InProcessJobQueue({ attempts: 1, backoffMs: 0 });
    await q.submit(list);
    await q.work(executorHandler(executor), { concurrency });
    return q.outcomes();
  }

  it('concurrency 4 gives every job the result of a direct generate, with steps holding several jobs', async function () {
    const list = jobs.map((j, i) => ({ ...j, image: images[i % images.length] }));
    const batched = new BatchedJobExecutor(pipe, { maxBatch: 4 }, registry);
    const got = await runAll(batched, 4, list);
    await batched.close();

    // The direct calls, one at a time: the definition of a job's result.
    const topK = await createPipeline({ model, sampler: 'top-k', samplerOptions: { topK: 20, temperature: 2 } });
    try {
      for (const [i, j] of list.entries()) {
        const p = i === 7 ? topK : pipe;
        const direct = await p.generate(j.image, j.prompt, { maxNewTokens: j.options.maxNewTokens, seed: j.options.seed ?? 0, logprobs: j.options.logprobs ?? 0 });
        const o = got[i];
        expect(o.id).to.equal(j.id);
        expect(o.status, j.id).to.equal('completed');
        if (o.status !== 'completed') continue;
        expect(o.tokens, j.id).to.deep.equal(direct.tokens);
        expect(o.text, j.id).to.equal(direct.text);
        expect(o.finishReason, j.id).to.equal(direct.finishReason);
        if (i === 3) {
          // On the reference backend a row's batched logits are bit for bit its alone ones.
          expect(o.logprobs, 'logprobs').to.have.length(direct.tokens.length);
          expect(o.logprobs, 'logprobs').to.deep.equal(direct.logprobs);
        } else {
          expect(o).to.not.have.property('logprobs');
        }
      }
      // The seeded top-k job really sampled: greedy would have given other tokens.
      const greedy = await pipe.generate(list[7].image, list[7].prompt, { maxNewTokens: list[7].options.maxNewTokens });
      expect(got[7].status === 'completed' && got[7].tokens).to.not.deep.equal(greedy.tokens);
    } finally {
      await topK.close();
    }

    // Batched for real: more rows than steps, and never more rows in a step than the concurrency.
    const { steps, stepRows } = batched.stats;
    expect(steps).to.be.above(0);
    // How many jobs overlap depends on when their images finish decoding (the thread pool), so
    // only "some steps held several jobs" is asserted, not a mean.
    expect(stepRows, 'rows over all decode steps').to.be.above(steps);
    expect(stepRows).to.be.at.most(4 * steps);
  });

  it('greedy tokens at concurrency 4 equal those of the same jobs run one at a time', async function () {
    const list = jobs.filter((_, i) => i !== 7).map((j, i) => ({ ...j, image: images[(i + 1) % images.length], options: { maxNewTokens: j.options.maxNewTokens } }));
    const sequential = await runAll(new PipelineJobExecutor(pipe, registry), 1, list);
    const executor = jobExecutorFor(pipe, 4, registry);
    expect(executor).to.be.instanceOf(BatchedJobExecutor);
    const together = await runAll(executor, 4, list);
    await executor.close?.();
    expect(together.map((o) => o.status)).to.deep.equal(list.map(() => 'completed'));
    expect(together).to.deep.equal(sequential);
  });

  it('a corrupt image fails its job alone, with its one-line reason, while the others complete', async function () {
    const list = jobs.slice(0, 5).map((j, i) => ({ ...j, image: i === 2 ? join(dir, 'corrupt.png') : images[i % images.length], options: { maxNewTokens: 5 } }));
    const executor = new BatchedJobExecutor(pipe, { maxBatch: 3 }, registry);
    const got = await runAll(executor, 3, list);
    await executor.close();
    expect(got.map((o) => o.status)).to.deep.equal(['completed', 'completed', 'failed', 'completed', 'completed']);
    const failed = got[2];
    expect(failed.status === 'failed' && failed.error).to.be.a('string').and.match(/corrupt\.png/).and.not.contain('\n');
    for (const i of [0, 1, 3, 4]) {
      const direct = await pipe.generate(list[i].image, list[i].prompt, { maxNewTokens: 5 });
      expect(got[i].status === 'completed' && got[i].tokens, list[i].id).to.deep.equal(direct.tokens);
    }
  });

  it('clamps a job asking for more tokens than the context holds, as generate does', async function () {
    // The same weights with a context of 32 positions: the 16 image tokens and the prompt leave
    // only a few new tokens.
    const short = join(dir, 'short');
    await mkdir(short);
    await buildTinyCheckpoint(short, { ...mqaSpec(), includeLmHead: true });
    const config = JSON.parse(await readFile(join(short, 'config.json'), 'utf8'));
    config.text_config.max_position_embeddings = 32;
    await writeFile(join(short, 'config.json'), JSON.stringify(config));
    const shortPipe = await createPipeline({ model: short });
    try {
      const huge = { ...jobs[0], image: images[0], options: { maxNewTokens: 1_000_000 } };
      const executor = new BatchedJobExecutor(shortPipe, { maxBatch: 2 }, registry);
      const [o] = await runAll(executor, 2, [huge]);
      await executor.close();
      const direct = await shortPipe.generate(huge.image, huge.prompt, { maxNewTokens: 1_000_000 });
      expect(direct.tokens.length, 'the clamp bites').to.be.below(32);
      expect(o.status).to.equal('completed');
      expect(o.status === 'completed' && o.tokens).to.deep.equal(direct.tokens);
      expect(o.status === 'completed' && o.finishReason).to.equal(direct.finishReason);
    } finally {
      await shortPipe.close();
    }
  });

  it('a PaliGemma 2 (Gemma 2) checkpoint: concurrency 3 gives the greedy tokens of direct generate calls', async function () {
    const g2 = join(dir, 'gemma2');
    await mkdir(g2);
    await buildTinyCheckpoint(g2, { ...gemma2Spec(), includeLmHead: true });
    const g2Pipe = await createPipeline({ model: g2 });
    try {
      const list = jobs.slice(0, 6).map((j, i) => ({ ...j, image: images[i % images.length], options: { maxNewTokens: j.options.maxNewTokens } }));
      const executor = new BatchedJobExecutor(g2Pipe, { maxBatch: 3 }, registry);
      const got = await runAll(executor, 3, list);
      await executor.close();
      expect(executor.stats.stepRows, 'rows over all decode steps').to.be.above(executor.stats.steps);
      for (const [i, j] of list.entries()) {
        const direct = await g2Pipe.generate(j.image, j.prompt, { maxNewTokens: j.options.maxNewTokens });
        expect(got[i].status === 'completed' && got[i].tokens, j.id).to.deep.equal(direct.tokens);
        expect(got[i].status === 'completed' && got[i].finishReason, j.id).to.equal(direct.finishReason);
      }
    } finally {
      await g2Pipe.close();
    }
  });
});
