/** `paligemma batch`: the job format, the in-process queue's rules, the results file, and `batch run`. */
import { expect } from 'chai';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { parseJobLine, readJobFile, type BatchJob } from '../src/batch/batch-job.js';
import { InProcessJobQueue } from '../src/batch/in-process-queue.js';
import { writeResultsFile } from '../src/batch/results-file.js';
import { createPipeline } from '../src/create-pipeline.js';
import { PaliGemmaError } from '../src/interfaces/errors.js';
import { expectUserError, runCli } from './support/run-cli.js';
import { buildTinyCheckpoint, makeTempDir, makeTestImage, mqaSpec } from './support/tiny-checkpoint.js';

const job = (id: string, line = 1): BatchJob => ({ id, image: '/x.png', prompt: 'caption en', options: {}, line });

describe('batch job lines', function () {
  it('reads a prompt or a task, resolves relative images against the job file, keeps the options', function () {
    const a = parseJobLine('{"id": 7, "image": "img/a.png", "task": {"type": "detect", "labels": ["cat", " dog"]}, "options": {"maxNewTokens": 4, "seed": 3}}', 2, '/data/jobs', 'f line 2');
    expect(a).to.deep.equal({ id: '7', image: '/data/jobs/img/a.png', prompt: 'detect cat ; dog', options: { maxNewTokens: 4, seed: 3 }, line: 2 });
    expect(parseJobLine('{"id":"u","image":"https://h.test/a.png","task":"caption"}', 1, '/d', 'w').image).to.equal('https://h.test/a.png');
    expect(parseJobLine('{"id":"u","image":"a.png","task":"ocr"}', 1, '/d', 'w').prompt).to.equal('ocr');
    expect(parseJobLine('{"id":"u","image":"a.png","task":{"type":"answer","question":"what?"}}', 1, '/d', 'w').prompt).to.equal('answer en what?');
    expect(parseJobLine('{"id":"u","image":"a.png","task":{"type":"caption","lang":"de"}}', 1, '/d', 'w').prompt).to.equal('caption de');
    expect(parseJobLine('{"id":"u","image":"a.png","prompt":"segment cat"}', 1, '/d', 'w').prompt).to.equal('segment cat');
  });

  it('refuses malformed lines with a message naming the line and the field', function () {
    const bad: Array<[string, RegExp]> = [
      ['{"id": "a", "image": "x.png"', /f line 3: not valid JSON/],
      ['{"image": "x.png", "prompt": "p"}', /f line 3: id must be/],
      ['{"id": "a", "prompt": "p"}', /image must be/],
      ['{"id": "a", "image": "ftp://h/x.png", "prompt": "p"}', /http or https/],
      ['{"id": "a", "image": "x.png"}', /exactly one of prompt or task/],
      ['{"id": "a", "image": "x.png", "prompt": "p", "task": "ocr"}', /exactly one of prompt or task/],
      ['{"id": "a", "image": "x.png", "task": "poem"}', /unknown type "poem"/],
      ['{"id": "a", "image": "x.png", "task": {"type": "detect", "labels": []}}', /detect needs labels/],
      ['{"id": "a", "image": "x.png", "prompt": "p", "options": {"maxNewTokens": 0}}', /options.maxNewTokens must be an integer ≥ 1/],
      ['{"id": "a", "image": "x.png", "prompt": "p", "options": {"beams": 2}}', /unknown option "beams"/],
      ['{"id": "a", "image": "x.png", "prompt": "p", "extra": 1}', /unknown field "extra"/],
    ];
    for (const [text, pattern] of bad) {
      expect(() => parseJobLine(text, 3, '/d', 'f line 3'), text).to.throw(PaliGemmaError, pattern);
    }
  });

  it('refuses a job file that uses an id twice, naming both lines', async function () {
    const dir = await makeTempDir('pg-batch-');
    const f = join(dir, 'jobs.jsonl');
    await writeFile(f, '{"id":"a","image":"x.png","prompt":"p"}\n\n{"id":"a","image":"y.png","prompt":"p"}\n');
    let err: unknown;
    try { await readJobFile(f); } catch (e) { err = e; }
    expect(err).to.be.instanceOf(PaliGemmaError);
    expect((err as Error).message).to.match(/line 3: id "a" is already used on line 1/);
  });
});

describe('results file', function () {
  it('holds one line per id however often the same outcomes are written, and leaves no temp file', async function () {
    const dir = await makeTempDir('pg-batch-');
    const out = join(dir, 'results.jsonl');
    const a = { id: 'a', status: 'completed' as const, text: 'x', tokens: [5, 1], finishReason: 'eos' as const };
    const b = { id: 'b', status: 'failed' as const, error: 'corrupt image' };
    expect(await writeResultsFile(out, [a, b])).to.equal(2);
    expect(await writeResultsFile(out, [a, b, a])).to.equal(2);
    const lines = (await readFile(out, 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).to.deep.equal([a, b]);
    expect(await readdir(dir)).to.deep.equal(['results.jsonl']);
  });

  it('never replaces a completed result with a later failure, and refuses a file that is not a results file', async function () {
    const dir = await makeTempDir('pg-batch-');
    const out = join(dir, 'results.jsonl');
    const a = { id: 'a', status: 'completed' as const, text: 'x', tokens: [5], finishReason: 'length' as const };
    await writeResultsFile(out, [a]);
    await writeResultsFile(out, [{ id: 'a', status: 'failed', error: 'lost' }]);
    expect(JSON.parse((await readFile(out, 'utf8')).trim())).to.deep.equal(a);
    const other = join(dir, 'notes.txt');
    await writeFile(other, 'my notes\n');
    let err: unknown;
    try { await writeResultsFile(other, [a]); } catch (e) { err = e; }
    expect((err as Error).message).to.match(/notes.txt line 1 is not JSON/);
    expect(await readFile(other, 'utf8')).to.equal('my notes\n');
  });
});

describe('in-process job queue', function () {
  it('does not queue an id twice', async function () {
    const q = new InProcessJobQueue();
    expect(await q.submit([job('a'), job('b')])).to.deep.equal({ added: 2, duplicates: 0 });
    expect(await q.submit([job('b'), job('c')])).to.deep.equal({ added: 1, duplicates: 1 });
    expect(await q.counts()).to.deep.equal({ waiting: 3, active: 0, completed: 0, failed: 0 });
  });

  it('retries a transient failure with backoff, fails a user error once, and bounds the tries', async function () {
    const q = new InProcessJobQueue({ attempts: 3, backoffMs: 5 });
    await q.submit([job('flaky', 1), job('corrupt', 2), job('broken', 3)]);
    const calls: Record<string, number> = { flaky: 0, corrupt: 0, broken: 0 };
    await q.work(async (j) => {
      calls[j.id]++;
      if (j.id === 'corrupt') throw new PaliGemmaError('image /x.png: not a PNG, JPEG or WebP file\nmore detail');
      if (j.id === 'broken' || calls[j.id] < 2) throw new Error('connection reset');
      return { text: 'ok', tokens: [9], finishReason: 'length' };
    }, { concurrency: 2 });
    expect(calls).to.deep.equal({ flaky: 2, corrupt: 1, broken: 3 });
    expect(await q.outcomes()).to.deep.equal([
      { id: 'flaky', status: 'completed', text: 'ok', tokens: [9], finishReason: 'length' },
      { id: 'corrupt', status: 'failed', error: 'image /x.png: not a PNG, JPEG or WebP file' },
      { id: 'broken', status: 'failed', error: 'connection reset' },
    ]);
    expect(await q.counts()).to.deep.equal({ waiting: 0, active: 0, completed: 1, failed: 2 });
  });

  it('runs up to `concurrency` jobs at once', async function () {
    const q = new InProcessJobQueue();
    await q.submit(Array.from({ length: 6 }, (_, i) => job(`j${i}`, i + 1)));
    let running = 0;
    let most = 0;
    await q.work(async () => {
      running++; most = Math.max(most, running);
      await new Promise((r) => setTimeout(r, 5));
      running--;
      return { text: '', tokens: [], finishReason: 'length' };
    }, { concurrency: 3 });
    expect(most).to.equal(3);
    expect((await q.outcomes()).map((o) => o.id)).to.deep.equal(['j0', 'j1', 'j2', 'j3', 'j4', 'j5']);
  });
});

describe('paligemma batch run', function () {
  let dir: string;
  let model: string;
  const images: string[] = [];

  before(async function () {
    dir = await makeTempDir('pg-batch-run-');
    model = join(dir, 'model');
    await mkdir(model);
    await buildTinyCheckpoint(model, { ...mqaSpec(), includeLmHead: true });
    for (let i = 0; i < 3; i++) {
      const { data, width, height } = makeTestImage(20 + i, 18, i + 1);
      const p = join(dir, `img${i}.png`);
      await sharp(Buffer.from(data), { raw: { width, height, channels: 3 } }).png().toFile(p);
      images.push(p);
    }
    await writeFile(join(dir, 'corrupt.png'), Buffer.from('this is not an image'));
  });

  it('gives each job the tokens of a direct generate, and a corrupt image one failed line with its reason', async function () {
    const jobsFile = join(dir, 'jobs.jsonl');
    const lines = [
      { id: 'a', image: 'img0.png', task: 'caption' },
      { id: 'b', image: images[1], prompt: 'detect cat', options: { maxNewTokens: 5 } },
      { id: 'bad', image: 'corrupt.png', task: 'ocr' },
      { id: 'c', image: 'img2.png', prompt: 'x', options: { sampler: 'top-k', topK: 20, temperature: 2, seed: 4, maxNewTokens: 6 } },
    ];
    await writeFile(jobsFile, lines.map((l) => JSON.stringify(l)).join('\n'));
    const out = join(dir, 'results.jsonl');
    const r = runCli(['batch', 'run', '--model', model, '--input', jobsFile, '--out', out, '--concurrency', '2']);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stderr).to.match(/3 completed, 1 failed; 4 results/);
    const results = (await readFile(out, 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    expect(results.map((x) => x.id)).to.deep.equal(['a', 'b', 'bad', 'c']);

    const pipe = await createPipeline({ model });
    const topK = await createPipeline({ model, sampler: 'top-k', samplerOptions: { topK: 20, temperature: 2 } });
    try {
      const direct = [
        await pipe.generate(images[0], 'caption en'),
        await pipe.generate(images[1], 'detect cat', { maxNewTokens: 5 }),
        undefined,
        await topK.generate(images[2], 'x', { seed: 4, maxNewTokens: 6 }),
      ];
      for (const i of [0, 1, 3]) {
        expect(results[i].status).to.equal('completed');
        expect(results[i].tokens).to.deep.equal(direct[i]!.tokens);
        expect(results[i].text).to.equal(direct[i]!.text);
        expect(results[i].finishReason).to.equal(direct[i]!.finishReason);
      }
      expect(direct[3]!.tokens).to.not.deep.equal((await pipe.generate(images[2], 'x', { seed: 4, maxNewTokens: 6 })).tokens);
    } finally {
      await pipe.close();
      await topK.close();
    }
    expect(results[2].status).to.equal('failed');
    expect(results[2].error).to.be.a('string').and.match(/corrupt\.png/);
    expect(results[2].error).to.not.contain('\n');

    // A rerun skips what is done, and the file still holds one line per id.
    const again = runCli(['batch', 'run', '--model', model, '--input', jobsFile, '--out', out]);
    expect(again.code, again.stderr).to.equal(0);
    expect(again.stderr).to.match(/3 jobs already completed/);
    const after = (await readFile(out, 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    expect(after.map((x) => x.id)).to.deep.equal(['a', 'b', 'bad', 'c']);
  });

  it('refuses a bad job file before loading anything, naming the line', async function () {
    const jobsFile = join(dir, 'bad-jobs.jsonl');
    await writeFile(jobsFile, '{"id":"a","image":"img0.png","task":"caption"}\n{"id":"b","image":"img0.png"}\n');
    const r = runCli(['batch', 'run', '--model', model, '--input', jobsFile, '--out', join(dir, 'never.jsonl')]);
    expectUserError(r, /bad-jobs\.jsonl line 2: give exactly one of prompt or task/);
  });
});
