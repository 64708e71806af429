/**
 * End-to-end checks of the reference pipeline against the independent float64 forward pass in
 * test/support/reference-forward.ts (which shares no code with src/).
 */
import { expect } from 'chai';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import {
  BackendContribution, PaliGemmaError, ReferenceBackend, Sampler, createPipeline, definePlugin, promptIds,
  suffixIds, type PaliGemmaPipeline, type Tensor,
} from '../src/index.js';
import { referenceForward, referenceLogSoftmax } from './support/reference-forward.js';
import {
  buildTinyCheckpoint, gqaSpec, makeTempDir, makeTestImage, mhaSpec, mqaSpec, type TinyCheckpoint,
} from './support/tiny-checkpoint.js';
import { argmax, relMaxDiff } from './support/model-compare.js';

async function writeImage(dir: string, size: number, seed: number): Promise<string> {
  const file = join(dir, `image-${size}-${seed}.png`);
  const { data, width, height } = makeTestImage(size, size, seed);
  await sharp(Buffer.from(data), { raw: { width, height, channels: 3 } }).png().toFile(file);
  return file;
}

const PROMPT = 'caption en';

const cases = [
  { label: 'MQA (1 kv head, like PaliGemma-3B)', spec: mqaSpec(), dtype: 'F32' as const },
  { label: 'MHA', spec: mhaSpec(), dtype: 'F32' as const },
  { label: 'GQA (2 kv groups, heads·headDim ≠ hidden, √hidden inexact)', spec: gqaSpec(), dtype: 'F32' as const },
  { label: 'MQA stored as BF16', spec: mqaSpec(), dtype: 'BF16' as const },
  { label: 'GQA stored as F16', spec: gqaSpec(), dtype: 'F16' as const },
];

for (const c of cases) {
  describe(`pipeline vs float64 oracle: ${c.label}`, function () {
    let ckpt: TinyCheckpoint;
    let pipe: PaliGemmaPipeline;
    let image: string;
    const embedScaleDtype = ({ F32: 'f32', BF16: 'bf16', F16: 'f16' } as const)[c.dtype];

    before(async function () {
      const dir = await makeTempDir('pg-pipe-');
      ckpt = await buildTinyCheckpoint(dir, { ...c.spec, dtype: c.dtype });
      image = await writeImage(dir, 40, 3);
      pipe = await createPipeline({ model: dir });
    });
    after(async () => pipe?.close());

    async function prefillAll(ids: number[], prefixLength: number) {
      const pixels = await pipe.imageProcessor.process(image);
      const m = pipe.model;
      const rows = m.imageRows(pixels);
      const embeds = m.embedPrompt(Int32Array.from(ids), rows);
      const s = m.session(ids.length);
      const logits = await s.prefill(embeds, prefixLength, 0);
      s.dispose();
      return { pixels, logits };
    }

    it('vision tower and prefill logits match to 1e-4 (all rows)', async function () {
      const ids = promptIds(pipe.tokenizer, PROMPT, pipe.model.config.numImageTokens);
      const { pixels, logits } = await prefillAll(ids, ids.length);
      const ref = referenceForward(ckpt.weights, ckpt.configJson, pixels.data, ids, ids.length, { embedScaleDtype });
      const vision = await pipe.backend.read(pipe.model.visionFeatures(pixels));
      expect(relMaxDiff(vision, ref.visionOut)).to.be.below(1e-4);
      expect(logits.length).to.equal(ref.logits.length);
      expect(relMaxDiff(logits, ref.logits)).to.be.below(1e-4);
    });

    it('KV-cache decoding equals a no-cache forward over prompt + generated tokens', async function () {
      const r = await pipe.generate(image, PROMPT, { maxNewTokens: 8, logprobs: 1 });
      expect(r.tokens.length).to.be.greaterThan(0);
      const prompt = promptIds(pipe.tokenizer, PROMPT, pipe.model.config.numImageTokens);
      const seq = [...prompt, ...r.tokens.slice(0, -1)];
      const { pixels, logits } = await prefillAll(seq, prompt.length);
      const v = logits.length / seq.length;
      const ref = referenceForward(ckpt.weights, ckpt.configJson, pixels.data, seq, prompt.length, { embedScaleDtype });
      r.tokens.forEach((tok, i) => {
        const row = prompt.length - 1 + i;
        const mine = logits.subarray(row * v, (row + 1) * v);
        const oracle = ref.logits.subarray(row * v, (row + 1) * v);
        expect(relMaxDiff(mine, oracle), `step ${i}`).to.be.below(1e-4);
        expect(argmax(oracle), `greedy token ${i}`).to.equal(tok);
        // The streamed log-probability is the log-softmax of the cached step's logits.
        expect(r.logprobs![i].logprob).to.be.closeTo(referenceLogSoftmax(oracle)[tok], 1e-4);
      });
    });

    it('score gives teacher-forced suffix log-probabilities with <eos> appended', async function () {
      const suffix = 'a cat on a mat';
      const s = await pipe.score(image, PROMPT, suffix);
      const prompt = promptIds(pipe.tokenizer, PROMPT, pipe.model.config.numImageTokens);
      const target = suffixIds(pipe.tokenizer, suffix);
      expect(s.tokens).to.deep.equal(target);
      expect(s.tokens[s.tokens.length - 1]).to.equal(pipe.tokenizer.special.eos);
      const pixels = await pipe.imageProcessor.process(image);
      const seq = [...prompt, ...target];
      const ref = referenceForward(ckpt.weights, ckpt.configJson, pixels.data, seq, prompt.length, { embedScaleDtype });
      const v = ref.logits.length / seq.length;
      target.forEach((tok, i) => {
        const row = prompt.length - 1 + i;
        const lp = referenceLogSoftmax(ref.logits.subarray(row * v, (row + 1) * v));
        expect(s.logprobs[i], `suffix token ${i}`).to.be.closeTo(lp[tok], 2e-4);
      });
      expect(s.total).to.be.closeTo(s.logprobs.reduce((a, b) => a + b, 0), 1e-9);
    });
  });
}

describe('pipeline behaviour', function () {
  let dir: string;
  let image: string;
  let pipe: PaliGemmaPipeline;

  before(async function () {
    dir = await makeTempDir('pg-behaviour-');
    await buildTinyCheckpoint(dir, mqaSpec());
    image = await writeImage(dir, 24, 9);
    pipe = await createPipeline({ model: dir });
  });
  after(async () => pipe?.close());

  it('streams the same tokens and text that generate returns', async function () {
    const full = await pipe.generate(image, PROMPT, { maxNewTokens: 6 });
    const streamed: number[] = [];
    let text = '';
    for await (const piece of pipe.stream(image, PROMPT, { maxNewTokens: 6 })) {
      streamed.push(piece.token);
      text += piece.text;
    }
    expect(streamed).to.deep.equal(full.tokens);
    expect(text).to.equal(full.text);
    expect(full.finishReason).to.be.oneOf(['eos', 'length']);
    if (full.finishReason === 'length') expect(full.tokens.length).to.equal(6);
    expect(full.timings.promptTokens).to.equal(pipe.model.config.numImageTokens + 1 + pipe.tokenizer.encode(`${PROMPT}\n`).length);
  });

  it('stops when the AbortSignal fires', async function () {
    const controller = new AbortController();
    const tokens: number[] = [];
    const it = pipe.stream(image, PROMPT, { maxNewTokens: 20, signal: controller.signal });
    let r = await it.next();
    while (!r.done) {
      tokens.push(r.value.token);
      controller.abort();
      r = await it.next();
    }
    expect(r.value.finishReason).to.equal('aborted');
    expect(r.value.tokens).to.deep.equal(tokens);
    expect(tokens.length).to.equal(1);
  });

  it('reports top-N log-probabilities, best first, chosen token first under greedy', async function () {
    const r = await pipe.generate(image, PROMPT, { maxNewTokens: 3, logprobs: 4 });
    for (const [i, step] of r.logprobs!.entries()) {
      expect(step.token).to.equal(r.tokens[i]);
      expect(step.top).to.have.length(4);
      expect(step.top[0].token).to.equal(step.token);
      expect(step.top[0].logprob).to.equal(step.logprob);
      for (let j = 1; j < 4; j++) expect(step.top[j].logprob).to.be.at.most(step.top[j - 1].logprob);
      const mass = step.top.reduce((a, t) => a + Math.exp(t.logprob), 0);
      expect(mass).to.be.at.most(1 + 1e-9);
    }
  });

  it('same seed gives the same sampled tokens; another seed differs somewhere', async function () {
    const sampling = await createPipeline({ model: dir, sampler: 'temperature', samplerOptions: { temperature: 5 } });
    const a = await sampling.generate(image, PROMPT, { maxNewTokens: 8, seed: 11 });
    const b = await sampling.generate(image, PROMPT, { maxNewTokens: 8, seed: 11 });
    expect(a.tokens).to.deep.equal(b.tokens);
    const others = await Promise.all([12, 13, 14].map((seed) => sampling.generate(image, PROMPT, { maxNewTokens: 8, seed })));
    expect(others.some((o) => JSON.stringify(o.tokens) !== JSON.stringify(a.tokens))).to.equal(true);
  });

  it('a user can swap any part by rebinding it in the container', async function () {
    const eosOnly: Sampler = { name: 'eos-only', sample: () => pipe.tokenizer.special.eos };
    const custom = await createPipeline({
      model: dir,
      configure: (c) => { c.rebind(Sampler).toConstantValue(eosOnly); },
    });
    const r = await custom.generate(image, PROMPT, { maxNewTokens: 5 });
    expect(r.tokens).to.deep.equal([pipe.tokenizer.special.eos]);
    expect(r.finishReason).to.equal('eos');
    expect(r.text).to.equal('');
  });

  it('both weight-name schemes give identical logits', async function () {
    const newer = await makeTempDir('pg-newer-');
    await buildTinyCheckpoint(newer, { ...mqaSpec(), nameScheme: 'newer', shards: 2 });
    const p2 = await createPipeline({ model: newer });
    const [x, y] = await Promise.all([
      pipe.generate(image, PROMPT, { maxNewTokens: 4, logprobs: 2 }),
      p2.generate(image, PROMPT, { maxNewTokens: 4, logprobs: 2 }),
    ]);
    expect(y.tokens).to.deep.equal(x.tokens);
    expect(y.logprobs).to.deep.equal(x.logprobs);
  });

  it('feeds RoPE 1-based positions: 1..T in prefill, T+1.. in decode', async function () {
    // RoPE is relative, so logits alone cannot tell 0-based from 1-based positions.
    const seen: number[][] = [];
    class PositionSpy extends ReferenceBackend {
      override rope(x: Tensor, positions: Int32Array, theta: number): Tensor {
        seen.push([...positions]);
        return super.rope(x, positions, theta);
      }
    }
    const spied = await createPipeline({ model: dir, backend: new PositionSpy() });
    const r = await spied.generate(image, PROMPT, { maxNewTokens: 3 });
    const t = r.timings.promptTokens;
    const layers = spied.model.config.text.numLayers;
    const prefill = Array.from({ length: t }, (_, i) => i + 1);
    expect(seen[0]).to.deep.equal(prefill);
    expect(seen.slice(0, 2 * layers).every((p) => JSON.stringify(p) === JSON.stringify(prefill))).to.equal(true);
    const steps = seen.slice(2 * layers);
    expect(steps.length).to.equal(2 * layers * (r.tokens.length - 1));
    steps.forEach((p, i) => expect(p).to.deep.equal([t + 1 + Math.floor(i / (2 * layers))]));
  });

  it('closes a backend it started when the checkpoint fails to load', async function () {
    let closed = 0;
    const plugin = definePlugin('closing-spy', ({ bind }) => {
      bind(BackendContribution).toConstantValue({
        name: 'closing-spy', description: 'reference that counts close()',
        create: () => Object.assign(new ReferenceBackend(), { close: async () => { closed++; } }),
      });
    });
    const broken = await makeTempDir('pg-broken-');
    await buildTinyCheckpoint(broken, mqaSpec());
    await writeFile(join(broken, 'config.json'), '{ not json');
    let error: unknown;
    try {
      await createPipeline({ model: broken, backend: 'closing-spy', plugins: [plugin] });
    } catch (e) {
      error = e;
    }
    expect(error).to.be.instanceOf(PaliGemmaError);
    expect(closed).to.equal(1);
  });

  it('runs on the built-in demo checkpoint when no model is given', async function () {
    const demo = await createPipeline();
    const r = await demo.generate(image, PROMPT, { maxNewTokens: 3 });
    expect(r.tokens.length).to.be.within(1, 3);
    expect(r.backend).to.contain('reference');
  });
});
