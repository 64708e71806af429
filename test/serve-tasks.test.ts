/**
 * POST /v1/generate with a task (detect / segment / caption / ocr / answer) on a tiny checkpoint:
 * a forced-answer sampler (as in tasks-e2e.test.ts) fixes the model's answer, and the server's
 * boxes are checked against arithmetic written here and against the pipeline's own task helper;
 * with the model's own (greedy) answer, the server equals pipe.detect run alone. Loopback only.
 */
/* eslint-disable @typescript-eslint/no-explicit-any */
import { expect } from 'chai';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import sharp from 'sharp';
import { createPipeline } from '../src/create-pipeline.js';
import type { PaliGemmaPipeline } from '../src/paligemma-pipeline.js';
import { buildServer } from '../src/serving/server.js';
import { ServingEngine } from '../src/serving/serving-engine.js';
import { forcedSequence } from '../src/tasks/forced-sampler.js';
import { encodeTaskText } from '../src/tasks/task-tokens.js';
import { encodeNpz } from '../src/testing/npz-writer.js';
import { smoothVaeTensors } from '../src/testing/tiny-vae.js';
import { buildTinyCheckpoint, makeTempDir, makeTestImage, mqaSpec } from './support/tiny-checkpoint.js';

const W = 48, H = 30;
const CENTRE_HIGH = [0, 0, 0, 0, 0, 127, 127, 0, 0, 127, 127, 0, 0, 0, 0, 0];
const loc = (...v: number[]) => v.map((n) => `<loc${String(n).padStart(4, '0')}>`).join('');
const seg = (...v: number[]) => v.map((n) => `<seg${String(n).padStart(3, '0')}>`).join('');

describe('paligemma serve: task helpers on /v1/generate', function () {
  this.timeout(60_000);
  let pipe: PaliGemmaPipeline;
  let png: Buffer;
  let forcedIds: number[] = [];
  const servers: FastifyInstance[] = [];
  let forcedUrl: string, greedyUrl: string;
  const savedVae = process.env.PALIGEMMA_VAE;

  before(async function () {
    delete process.env.PALIGEMMA_VAE;          // the VAE is found in the model folder
    const model = join(await makeTempDir('pg-serve-tasks-'), 'model');
    await mkdir(model);
    await buildTinyCheckpoint(model, mqaSpec());
    await writeFile(join(model, 'vae-oid.npz'), encodeNpz(smoothVaeTensors({ dim: 4, channels: 16 })));
    const img = makeTestImage(W, H, 3);
    png = await sharp(Buffer.from(img.data), { raw: { width: W, height: H, channels: 3 } }).png().toBuffer();
    pipe = await createPipeline({ model });
    const start = async (engine: ServingEngine) => {
      const app = await buildServer(engine, { modelId: 'tiny' });
      servers.push(app);
      return app.listen({ port: 0, host: '127.0.0.1' });
    };
    // Every choice of this engine emits forcedIds (set by each test), whatever the logits.
    forcedUrl = await start(new ServingEngine(pipe, { maxBatch: 4, sampler: () => forcedSequence(forcedIds) }));
    greedyUrl = await start(new ServingEngine(pipe, { maxBatch: 4 }));
  });
  after(async function () {
    for (const s of servers) await s.close();
    await pipe?.close();
    if (savedVae !== undefined) process.env.PALIGEMMA_VAE = savedVae;
  });

  const forceText = (answer: string) => { forcedIds = [...encodeTaskText(pipe.tokenizer, answer), pipe.tokenizer.special.eos]; };
  const post = async (url: string, body: Record<string, unknown>) => {
    const r = await fetch(`${url}/v1/generate`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ image: `data:image/png;base64,${png.toString('base64')}`, ...body }),
    });
    return { status: r.status, body: await r.json() as any };
  };

  it('detect: boxes in original pixels, the malformed entry skipped; equals pipe.detect with the same answer', async () => {
    const answer = `${loc(100, 200, 500, 800)} cat ; ${loc(0, 0, 1023, 1023)} dog ; ${loc(600, 10, 300, 20)} cat`;
    forceText(answer);
    const r = await post(forcedUrl, { task: 'detect', labels: ['cat', 'dog'] });
    expect(r.status, JSON.stringify(r.body)).to.equal(200);
    expect(r.body.task).to.equal('detect');
    expect(r.body.prompt).to.equal('detect cat ; dog');
    expect(r.body.image).to.deep.equal({ width: W, height: H });
    expect(r.body.text).to.equal(answer);
    expect(r.body.finishReason).to.equal('stop');
    expect(r.body.tokens).to.deep.equal(forcedIds);
    expect(r.body.objects.map((o: any) => o.label)).to.deep.equal(['cat', 'dog']);
    const b = r.body.objects[0].box;
    expect(b.x0).to.be.closeTo(200 / 1023 * W, 1e-9);
    expect(b.y0).to.be.closeTo(100 / 1023 * H, 1e-9);
    expect(b.x1).to.be.closeTo(800 / 1023 * W, 1e-9);
    expect(b.y1).to.be.closeTo(500 / 1023 * H, 1e-9);
    expect(r.body.objects[0].loc).to.deep.equal([100, 200, 500, 800]);
    expect(r.body.objects[1].box).to.deep.equal({ x0: 0, y0: 0, x1: W, y1: H });
    expect(r.body.skipped).to.have.length(1);
    expect(r.body.skipped[0].reason).to.match(/y_max < y_min/);
    const alone = await pipe.detect(new Uint8Array(png), ['cat', 'dog'], { sampler: forcedSequence(forcedIds) });
    expect(r.body.objects).to.deep.equal(JSON.parse(JSON.stringify(alone.objects)));
  });

  it('segment: a binary mask at the image size inside the box, equal to pipe.segment\'s', async () => {
    const answer = `${loc(102, 170, 920, 853)}${seg(...CENTRE_HIGH)} cat`;
    forceText(answer);
    const r = await post(forcedUrl, { task: 'segment', label: 'cat' });
    expect(r.status, JSON.stringify(r.body)).to.equal(200);
    expect(r.body.prompt).to.equal('segment cat');
    expect(r.body.objects).to.have.length(1);
    const o = r.body.objects[0];
    expect(o.seg).to.deep.equal(CENTRE_HIGH);
    expect([o.mask.width, o.mask.height]).to.deep.equal([W, H]);
    // Run lengths (0s first, alternating) expanded here.
    const mask = new Uint8Array(W * H);
    let at = 0;
    (o.mask.rle as number[]).forEach((run, k) => { mask.fill(k % 2, at, at + run); at += run; });
    expect(at).to.equal(W * H);
    expect(o.mask.area).to.equal(mask.reduce((n, v) => n + v, 0));
    const x0 = Math.trunc(170 / 1023 * W), x1 = Math.trunc(853 / 1023 * W), y0 = Math.trunc(102 / 1023 * H), y1 = Math.trunc(920 / 1023 * H);
    let inside = 0;
    for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
      const v = mask[y * W + x];
      if (x < x0 || x >= x1 || y < y0 || y >= y1) expect(v, `(${x}, ${y}) outside the box`).to.equal(0);
      inside += v;
    }
    expect(inside).to.be.greaterThan(0);
    const alone = await pipe.segment(new Uint8Array(png), 'cat', { sampler: forcedSequence(forcedIds) });
    expect([...mask]).to.deep.equal([...alone.objects[0].mask.binary]);
  });

  it('caption / ocr / answer: the task prompt and the decoded text', async () => {
    forcedIds = [...pipe.tokenizer.encode('a cat'), pipe.tokenizer.special.eos];
    const c = await post(forcedUrl, { task: 'caption', lang: 'es' });
    expect([c.status, c.body.prompt, c.body.text]).to.deep.equal([200, 'caption es', 'a cat']);
    const o = await post(forcedUrl, { task: 'ocr' });
    expect([o.status, o.body.prompt, o.body.text]).to.deep.equal([200, 'ocr', 'a cat']);
    const a = await post(forcedUrl, { task: 'answer', question: 'what is this?' });
    expect([a.status, a.body.prompt, a.body.text]).to.deep.equal([200, 'answer en what is this?', 'a cat']);
  });

  it('with the model\'s own greedy answer, a served detect equals pipe.detect run alone', async () => {
    const [r, alone] = await Promise.all([
      post(greedyUrl, { task: 'detect', labels: 'cat', maxNewTokens: 12, logprobs: 2 }),
      pipe.detect(new Uint8Array(png), 'cat', { maxNewTokens: 12, logprobs: 2 }),
    ]);
    expect(r.body.logprobs).to.have.length(alone.generation.logprobs!.length);
    r.body.logprobs.forEach((e: any, i: number) => {
      const w = alone.generation.logprobs![i];
      expect(e.token).to.equal(w.token);
      expect(e.logprob).to.be.closeTo(w.logprob, 1e-6);
      expect(e.top.map((t: any) => t.token)).to.deep.equal(w.top.map((t) => t.token));
    });
    expect(r.status, JSON.stringify(r.body)).to.equal(200);
    expect(r.body.tokens).to.deep.equal(alone.generation.tokens);
    expect(r.body.text).to.equal(alone.text);
    expect(r.body.objects).to.deep.equal(JSON.parse(JSON.stringify(alone.objects)));
    expect(r.body.skipped).to.deep.equal(JSON.parse(JSON.stringify(alone.skipped)));
  });

  it('a bare base64 JPEG (which starts with "/") is an image, not a file path', async () => {
    const jpeg = await sharp(png).jpeg().toBuffer();
    const b64 = jpeg.toString('base64');
    expect(b64.startsWith('/9j/')).to.equal(true);
    const r = await fetch(`${greedyUrl}/v1/generate`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ image: b64, task: 'caption', maxNewTokens: 4 }),
    });
    const body = await r.json() as any;
    expect(r.status, JSON.stringify(body)).to.equal(200);
    const alone = await pipe.caption(new Uint8Array(jpeg), { maxNewTokens: 4 });
    expect(body.tokens).to.deep.equal(alone.generation.tokens);
  });

  it('bad task requests are 400s naming the field', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ task: 'classify' }, 'task'],
      [{ task: 'detect' }, 'labels'],
      [{ task: 'detect', labels: [1] }, 'labels'],
      [{ task: 'detect', labels: ['cat'], prompt: 'detect cat' }, 'prompt'],
      [{ task: 'ocr', question: 'why' }, 'question'],
      [{ task: 'segment', label: 'cat', stop: ['x'] }, 'stop'],
      [{ task: 'answer', question: '   ' }, ''],
    ];
    for (const [body, param] of cases) {
      const r = await post(greedyUrl, body);
      expect(r.status, JSON.stringify(body)).to.equal(400);
      expect(r.body.error.type).to.equal('invalid_request_error');
      if (param) expect(r.body.error.param, JSON.stringify(body)).to.equal(param);
    }
  });
});
