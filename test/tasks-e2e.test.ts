/** detect / segment / caption through the real pipeline on a tiny checkpoint, with forced answers. */
import { expect } from 'chai';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { createPipeline } from '../src/create-pipeline.js';
import { PaliGemmaError } from '../src/interfaces/errors.js';
import type { PaliGemmaPipeline } from '../src/paligemma-pipeline.js';
import { forcedSequence } from '../src/tasks/forced-sampler.js';
import { PaliGemmaTasks } from '../src/tasks/paligemma-tasks.js';
import { encodeTaskText, requireTaskTokens, taskText } from '../src/tasks/task-tokens.js';
import { drawObjects, PALETTE } from '../src/tasks/draw-overlay.js';
import { encodeNpz } from '../src/testing/npz-writer.js';
import { smoothVaeTensors } from '../src/testing/tiny-vae.js';
import { TINY_TOKENIZER } from '../src/tiny-models/tiny-tokenizer.js';
import type { Tokenizer } from '../src/interfaces/tokenizer.js';
import { expectUserError, runCli } from './support/run-cli.js';
import { buildTinyCheckpoint, makeTempDir, makeTestImage, mqaSpec } from './support/tiny-checkpoint.js';

const W = 48, H = 30;   // non-square: x scales by 48, y by 30
const CENTRE_HIGH = [0, 0, 0, 0, 0, 127, 127, 0, 0, 127, 127, 0, 0, 0, 0, 0];
const loc = (...v: number[]) => v.map((n) => `<loc${String(n).padStart(4, '0')}>`).join('');
const seg = (...v: number[]) => v.map((n) => `<seg${String(n).padStart(3, '0')}>`).join('');

describe('tasks: end to end on a tiny checkpoint', function () {
  let dir: string, model: string, imagePath: string, vaePath: string, pluginPath: string;
  let pipe: PaliGemmaPipeline;

  before(async function () {
    dir = await makeTempDir('pg-tasks-');
    model = join(dir, 'model');
    await mkdir(model);
    await buildTinyCheckpoint(model, mqaSpec());
    const img = makeTestImage(W, H, 3);
    imagePath = join(dir, 'in.png');
    await sharp(Buffer.from(img.data), { raw: { width: W, height: H, channels: 3 } }).png().toFile(imagePath);
    vaePath = join(dir, 'vae.npz');
    await writeFile(vaePath, encodeNpz(smoothVaeTensors({ dim: 4, channels: 16 })));
    pluginPath = join(process.cwd(), 'src', 'testing', 'forced-sampler-plugin.ts');
    pipe = await createPipeline({ model });
  });
  after(async () => { await pipe?.close(); });

  const force = (text: string) => forcedSequence([...encodeTaskText(pipe.tokenizer, text), pipe.tokenizer.special.eos]);

  it('looks task tokens up by string: the tiny tokenizer has loc i at 660 + i, seg i at 1684 + i', () => {
    const ids = encodeTaskText(pipe.tokenizer, `${loc(0, 1023)}${seg(5)}`);
    expect(ids).to.deep.equal([TINY_TOKENIZER.locBase, TINY_TOKENIZER.locBase + 1023, TINY_TOKENIZER.segBase + 5]);
    expect(taskText(pipe.tokenizer, [...ids, ...pipe.tokenizer.encode(' cat'), pipe.tokenizer.special.eos])).to.equal(`${loc(0, 1023)}${seg(5)} cat`);
  });

  it('detect: forced answer → boxes in original pixels, the malformed entry skipped with its reason', async () => {
    const answer = `${loc(100, 200, 500, 800)} cat ; ${loc(0, 0, 1023, 1023)} dog ; ${loc(600, 10, 300, 20)} cat`;
    const r = await pipe.detect(imagePath, ['cat', 'dog'], { sampler: force(answer) });
    expect(r.prompt).to.equal('detect cat ; dog');
    expect(r.image).to.deep.equal({ width: W, height: H });
    expect(r.generation.finishReason).to.equal('eos');
    expect(r.text).to.equal(answer);
    expect(r.objects.map((o) => o.label)).to.deep.equal(['cat', 'dog']);
    const b = r.objects[0].box;
    expect(b.x0).to.be.closeTo(200 / 1023 * W, 1e-9);
    expect(b.y0).to.be.closeTo(100 / 1023 * H, 1e-9);
    expect(b.x1).to.be.closeTo(800 / 1023 * W, 1e-9);
    expect(b.y1).to.be.closeTo(500 / 1023 * H, 1e-9);
    expect(r.objects[1].box).to.deep.equal({ x0: 0, y0: 0, x1: W, y1: H });
    expect(r.skipped).to.have.length(1);
    expect(r.skipped[0].reason).to.match(/y_max < y_min/);
  });

  it('detect cut short by maxNewTokens keeps the whole objects and reports the cut one', async () => {
    const answer = `${loc(100, 200, 500, 800)} cat ; ${loc(1, 2, 3, 4)} dog`;
    const ids = encodeTaskText(pipe.tokenizer, answer);
    const cut = ids.indexOf(TINY_TOKENIZER.locBase + 3) + 1;   // stops after <loc0003>
    const r = await pipe.detect(imagePath, 'cat', { sampler: forcedSequence(ids), maxNewTokens: cut });
    expect(r.generation.finishReason).to.equal('length');
    expect(r.objects).to.have.length(1);
    expect(r.skipped[0].reason).to.match(/cut short: 3 of 4/);
  });

  it('segment: forced answer → box and a binary mask at the original size, inside the box', async () => {
    const answer = `${loc(102, 170, 920, 853)}${seg(...CENTRE_HIGH)} cat ; ${loc(1, 2, 3, 4)}${seg(1, 2)} cat`;
    const r = await pipe.segment(imagePath, 'cat', { sampler: force(answer), vae: vaePath });
    expect(r.objects).to.have.length(1);
    expect(r.skipped[0].reason).to.match(/cut short: 2 of 16 <seg>/);
    const o = r.objects[0];
    expect(o.seg).to.deep.equal(CENTRE_HIGH);
    expect(o.mask.width).to.equal(W);
    expect(o.mask.height).to.equal(H);
    // The rect big_vision pastes into: int(b / 1023 · size).
    const x0 = Math.trunc(170 / 1023 * W), x1 = Math.trunc(853 / 1023 * W), y0 = Math.trunc(102 / 1023 * H), y1 = Math.trunc(920 / 1023 * H);
    let inside = 0;
    for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
      const v = o.mask.binary[y * W + x];
      if (x < x0 || x >= x1 || y < y0 || y >= y1) expect(v, `(${x}, ${y}) outside the box`).to.equal(0);
      inside += v;
    }
    expect(o.mask.binary[Math.trunc((y0 + y1) / 2) * W + Math.trunc((x0 + x1) / 2)]).to.equal(1);
    expect(o.mask.binary[y0 * W + x0]).to.equal(0);
    // The code grid's positive middle quarter: about a quarter of the box.
    const area = (x1 - x0) * (y1 - y0);
    expect(inside / area).to.be.within(0.15, 0.45);
  });

  it('segment without VQ-VAE weights fails before generating, naming the file and --vae', async () => {
    const saved = process.env.PALIGEMMA_VAE;
    delete process.env.PALIGEMMA_VAE;
    try {
      await pipe.segment(imagePath, 'cat').then(() => expect.fail('segmented'), (e) => {
        expect(e).to.be.instanceOf(PaliGemmaError);
        expect(e.message).to.match(/vae-oid\.npz/);
        expect(e.message).to.match(/--vae PATH/);
        expect(e.message).to.include(join(model, 'vae-oid.npz'));
      });
    } finally {
      if (saved !== undefined) process.env.PALIGEMMA_VAE = saved;
    }
  });

  it('caption / ocr / answer build the task prompts and return the decoded text', async () => {
    const text = (s: string) => forcedSequence([...pipe.tokenizer.encode(s), pipe.tokenizer.special.eos]);
    const c = await pipe.caption(imagePath, { sampler: text('a cat'), lang: 'es' });
    expect(c.prompt).to.equal('caption es');
    expect(c.text).to.equal('a cat');
    expect((await pipe.ocr(imagePath, { sampler: text('stop') })).prompt).to.equal('ocr');
    const a = await pipe.answer(imagePath, 'what is this?', { sampler: text('a dog') });
    expect(a.prompt).to.equal('answer en what is this?');
    expect(a.text).to.equal('a dog');
  });

  it('a tokenizer without loc tokens gets a clear error naming what is missing', async () => {
    const noLoc: Tokenizer = {
      ...pipe.tokenizer,
      vocabSize: pipe.tokenizer.vocabSize,
      special: pipe.tokenizer.special,
      encode: (t) => pipe.tokenizer.encode(t),
      decode: (ids, o) => pipe.tokenizer.decode(ids, o),
      idToToken: (id) => (id >= TINY_TOKENIZER.locBase + 512 && id < TINY_TOKENIZER.segBase ? `▁x${id}` : pipe.tokenizer.idToToken(id)),
    };
    expect(() => requireTaskTokens(noLoc, 'detect')).to.throw(PaliGemmaError, /lacks 512 of 1024: <loc0512>, <loc0513>, <loc0514>/);
    const tasks = new PaliGemmaTasks({ tokenizer: noLoc, backend: pipe.backend, generate: () => expect.fail('generated') });
    await tasks.detect(imagePath, 'cat').then(() => expect.fail('detected'), (e) => expect(e.message).to.match(/detect needs the tokenizer's <loc0000>..<loc1023> tokens/));
  });

  describe('CLI', function () {
    const forced = (text: string) => ['--plugin', pluginPath, '--sampler', 'forced', '--sampler-option',
      `ids=${JSON.stringify([...encodeTaskText(pipe.tokenizer, text), TINY_TOKENIZER.eos])}`];

    it('detect --json --draw prints the objects and writes the picture', async () => {
      const out = join(dir, 'detect.png');
      const r = runCli(['detect', '--model', model, '--image', imagePath, 'cat', 'dog', '--json', '--draw', out,
        ...forced(`${loc(100, 200, 500, 800)} cat ; ${loc(5, 5)} dog`)]);
      expect(r.code, r.stderr).to.equal(0);
      const j = JSON.parse(r.stdout);
      expect(j.prompt).to.equal('detect cat ; dog');
      expect(j.objects).to.have.length(1);
      expect(j.objects[0].label).to.equal('cat');
      expect(j.objects[0].box.x0).to.be.closeTo(200 / 1023 * W, 1e-9);
      expect(j.objects[0].box.y1).to.be.closeTo(500 / 1023 * H, 1e-9);
      expect(j.skipped[0].reason).to.match(/cut short/);
      const meta = await sharp(await readFile(out)).metadata();
      expect([meta.width, meta.height, meta.format]).to.deep.equal([W, H, 'png']);
    });

    it('segment --json gives the mask as run-length counts at the image size', () => {
      const r = runCli(['segment', '--model', model, '--image', imagePath, 'cat', '--vae', vaePath, '--json',
        ...forced(`${loc(102, 170, 920, 853)}${seg(...CENTRE_HIGH)} cat`)]);
      expect(r.code, r.stderr).to.equal(0);
      const j = JSON.parse(r.stdout);
      const m = j.objects[0].mask;
      expect([m.width, m.height]).to.deep.equal([W, H]);
      expect(m.rle.reduce((a: number, b: number) => a + b, 0)).to.equal(W * H);
      const ones = m.rle.filter((_: number, i: number) => i % 2 === 1).reduce((a: number, b: number) => a + b, 0);
      expect(ones).to.be.greaterThan(20);
    });

    it('segment without --vae exits 2 naming vae-oid.npz', () => {
      expectUserError(runCli(['segment', '--model', model, '--image', imagePath, 'cat', ...forced('x')], { env: { PALIGEMMA_VAE: '' } }),
        /vae-oid\.npz.*--vae PATH/, { allowNotes: true });
    });

    it('caption prints the text; answer takes the question', () => {
      const r = runCli(['caption', '--model', model, '--image', imagePath, ...forced('a cat')]);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout.trim()).to.equal('a cat');
      const a = runCli(['answer', '--model', model, '--image', imagePath, 'what is it?', '--json', ...forced('a dog')]);
      expect(a.code, a.stderr).to.equal(0);
      expect(JSON.parse(a.stdout)).to.include({ prompt: 'answer en what is it?', text: 'a dog' });
    });
  });
});

describe('tasks: drawing', () => {
  it('draws box outlines and translucent masks in the object colour, leaving the rest alone', async () => {
    const w = 120, h = 80, grey = 128;
    const data = new Uint8Array(w * h * 3).fill(grey);
    const binary = new Uint8Array(w * h);
    for (let y = 30; y < 50; y++) for (let x = 40; x < 70; x++) binary[y * w + x] = 1;
    const png = await drawObjects({ data, width: w, height: h }, [
      { label: 'cat', box: { x0: 20, y0: 20, x1: 90, y1: 70 }, mask: { binary } },
      { label: 'dog', box: { x0: 95, y0: 5, x1: 115, y1: 30 } },
    ], { lineWidth: 4, maskOpacity: 0.5 });
    const { data: out, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
    expect([info.width, info.height]).to.deep.equal([w, h]);
    const px = (x: number, y: number) => Array.from(out.subarray((y * w + x) * info.channels, (y * w + x) * info.channels + 3));
    const near = (a: number[], b: readonly number[], tol: number) => a.every((v, i) => Math.abs(v - b[i]) <= tol);
    // On the outlines: the palette colours.
    expect(near(px(20, 45), PALETTE[0], 10), `left edge ${px(20, 45)}`).to.equal(true);
    expect(near(px(55, 70), PALETTE[0], 10), `bottom edge ${px(55, 70)}`).to.equal(true);
    expect(near(px(115, 20), PALETTE[1], 10), `second box ${px(115, 20)}`).to.equal(true);
    // Inside the mask: half object colour, half grey.
    const mix = PALETTE[0].map((c) => (c + grey) / 2);
    expect(near(px(55, 40), mix, 6), `mask ${px(55, 40)}`).to.equal(true);
    // Inside the box but off the mask, and far from everything: untouched.
    expect(px(30, 60)).to.deep.equal([grey, grey, grey]);
    expect(px(5, 75)).to.deep.equal([grey, grey, grey]);
  });
});
