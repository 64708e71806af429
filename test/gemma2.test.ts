/**
 * PaliGemma 2 (Gemma 2 decoder) on every backend, against the float64 implementation in
 * test/support/reference-gemma2.ts: all prefill rows, KV-cache decode steps, the two
 * explicit options (final logit soft-cap, sliding window), bug sensitivity of each convention,
 * and refusals.
 */
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createPipeline, type CreatePipelineOptions } from '../src/create-pipeline.js';
import { PaliGemmaError } from '../src/interfaces/errors.js';
import type { PixelValues } from '../src/interfaces/image-processor.js';
import type { PaliGemmaPipeline } from '../src/paligemma-pipeline.js';
import { promptIds } from '../src/generation/prompt-format.js';
import { relMaxDiff } from './support/model-compare.js';
import { referenceGemma2Forward, type Gemma2Break, type Gemma2ReferenceOptions } from './support/reference-gemma2.js';
import { referenceLogSoftmax } from './support/reference-forward.js';
import {
  buildTinyCheckpoint, gemma2Spec, makeTempDir, makeTestImage, mqaSpec, type TinyCheckpoint,
} from './support/tiny-checkpoint.js';

const PROMPT = 'caption en';
/** Teacher-forced suffix: longer than the tiny window (5), so decode rows lose prefix keys. */
const SUFFIX = [5, 9, 14, 3, 27, 8, 11, 40];

function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < b.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

interface Run {
  /** logits [T, V] of prefill over prompt + suffix (score path), every row. */
  all: Float32Array;
  /** logits [S + 1, V]: prefill of the prompt, then one decode step per suffix token. */
  decoded: Float32Array;
  pixels: PixelValues;
  promptLength: number;
  seq: number[];
}

async function runModel(pipe: PaliGemmaPipeline): Promise<Run> {
  const { data, width, height } = makeTestImage(20, 20, 7);
  const pixels = await pipe.imageProcessor.process({ data, width, height, channels: 3 });
  const m = pipe.model, b = pipe.backend;
  const prompt = promptIds(pipe.tokenizer, PROMPT, m.config.numImageTokens);
  const seq = [...prompt, ...SUFFIX];

  const rows = m.imageRows(pixels);
  const embeds = m.embedPrompt(Int32Array.from(seq), rows);
  const s1 = m.session(seq.length);
  const all = await s1.prefill(embeds, prompt.length, 0);
  s1.dispose();
  b.dispose(embeds);

  const promptEmbeds = m.embedPrompt(Int32Array.from(prompt), rows);
  b.dispose(rows);
  const s2 = m.session(seq.length);
  const steps = [await s2.prefill(promptEmbeds, prompt.length)];
  b.dispose(promptEmbeds);
  for (const tok of SUFFIX) steps.push(await s2.step(tok));
  s2.dispose();
  const v = steps[0].length;
  const decoded = new Float32Array(steps.length * v);
  steps.forEach((l, i) => decoded.set(l, i * v));
  return { all, decoded, pixels, promptLength: prompt.length, seq };
}

/** The float64 oracle's rows [P−1, T) (the rows `decoded` holds). */
function decodeRows(ref: Float64Array, run: Run): Float64Array {
  const v = ref.length / run.seq.length;
  return ref.subarray((run.promptLength - 1) * v);
}

function oracle(ckpt: TinyCheckpoint, run: Run, opts: Gemma2ReferenceOptions = {}): Float64Array {
  return referenceGemma2Forward(ckpt.weights, ckpt.configJson, run.pixels.data, run.seq, run.promptLength, opts);
}

const BACKENDS: Array<{ label: string; options: CreatePipelineOptions; tol: number }> = [
  { label: 'reference', options: { backend: 'reference' }, tol: 1e-5 },
  { label: 'reference + plain kernel', options: { backend: 'reference', attention: 'plain' }, tol: 1e-5 },
  { label: 'onnx', options: { backend: 'onnx' }, tol: 1e-5 },
  { label: 'onnx + plain kernel', options: { backend: 'onnx', attention: 'plain' }, tol: 1e-5 },
  { label: 'tfjs', options: { backend: 'tfjs' }, tol: 1e-4 },
  { label: 'tfjs + plain kernel', options: { backend: 'tfjs', attention: 'plain' }, tol: 1e-4 },
  { label: 'webgpu', options: { backend: 'webgpu', backendOptions: { weights: 'f32' } }, tol: 1e-4 },
  { label: 'webgpu + plain kernel', options: { backend: 'webgpu', backendOptions: { weights: 'f32' }, attention: 'plain' }, tol: 1e-4 },
];

/** Worst errors per backend, printed at the end (the numbers the report quotes). */
const worst: Record<string, { rel: number; abs: number }> = {};
after(() => {
  const lines = Object.entries(worst).map(([k, w]) => `      ${k.padEnd(34)} max|Δlogit| ${w.abs.toExponential(2)}${Number.isNaN(w.rel) ? '' : `  rel ${w.rel.toExponential(2)}`}`);
  if (lines.length) console.log(`    worst logit error, tiny PaliGemma 2 (all rows + decode; vs float64 unless named):\n${lines.join('\n')}`);
});

describe('PaliGemma 2 (Gemma 2 decoder) vs float64 oracle', function () {
  this.timeout(120_000);
  let dir: string;
  let ckpt: TinyCheckpoint;

  before(async function () {
    dir = await makeTempDir('pg-gemma2-');
    ckpt = await buildTinyCheckpoint(dir, gemma2Spec());
  });

  for (const be of BACKENDS) {
    it(`${be.label}: every prefill row and every decode step match (rel < ${be.tol})`, async function () {
      let pipe: PaliGemmaPipeline;
      try {
        pipe = await createPipeline({ model: dir, ...be.options });
      } catch (e) {
        if (be.label.startsWith('webgpu') && e instanceof PaliGemmaError) {
          console.log(`    skipping: ${e.message}`);
          this.skip();
        }
        throw e;
      }
      try {
        const run = await runModel(pipe);
        const ref = oracle(ckpt, run);
        const refDecode = decodeRows(ref, run);
        const rel = Math.max(relMaxDiff(run.all, ref), relMaxDiff(run.decoded, refDecode));
        const abs = Math.max(maxAbs(run.all, ref), maxAbs(run.decoded, refDecode));
        worst[be.label] = { rel, abs };
        expect(run.all.length).to.equal(ref.length);
        expect(rel, 'max |Δlogit| / max |logit|').to.be.below(be.tol);
      } finally {
        await pipe.close();
      }
    });
  }

  describe('explicit options (reference and onnx)', function () {
    const cases: Array<{ label: string; gemma2: CreatePipelineOptions['gemma2']; ref: Gemma2ReferenceOptions }> = [
      { label: "default = finalLogitSoftcap 'off', slidingWindow 'auto' (transformers 5)", gemma2: undefined, ref: {} },
      { label: "finalLogitSoftcap 'auto' = config's 3.5", gemma2: { finalLogitSoftcap: 'auto' }, ref: { finalSoftcap: 3.5 } },
      { label: 'finalLogitSoftcap 2.5', gemma2: { finalLogitSoftcap: 2.5 }, ref: { finalSoftcap: 2.5 } },
      { label: "slidingWindow 'off' (big_vision)", gemma2: { slidingWindow: 'off' }, ref: { window: false } },
    ];
    for (const backend of ['reference', 'onnx']) {
      for (const c of cases) {
        it(`${backend}: ${c.label}`, async function () {
          const pipe = await createPipeline({ model: dir, backend, gemma2: c.gemma2 });
          try {
            const run = await runModel(pipe);
            const want = oracle(ckpt, run, c.ref);
            expect(relMaxDiff(run.all, want)).to.be.below(1e-5);
            expect(relMaxDiff(run.decoded, decodeRows(want, run))).to.be.below(1e-5);
            // And each option is observable: the default differs from it.
            if (c.gemma2) expect(relMaxDiff(oracle(ckpt, run), want)).to.be.above(1e-2);
          } finally {
            await pipe.close();
          }
        });
      }
    }

    it('score uses the final soft-cap option; greedy tokens agree, log-probabilities differ', async function () {
      const { data, width, height } = makeTestImage(20, 20, 7);
      const image = { data, width, height, channels: 3 as const };
      const off = await createPipeline({ model: dir });
      const on = await createPipeline({ model: dir, gemma2: { finalLogitSoftcap: 'auto' } });
      try {
        const a = await off.score(image, PROMPT, 'a cat');
        const b = await on.score(image, PROMPT, 'a cat');
        expect(a.tokens).to.deep.equal(b.tokens);
        expect(Math.abs(a.total - b.total)).to.be.above(1e-2);
        // Against the oracle with the cap: the logprobs are log-softmax of capped logits.
        const prompt = promptIds(on.tokenizer, PROMPT, on.model.config.numImageTokens);
        const seq = [...prompt, ...b.tokens];
        const pixels = await on.imageProcessor.process(image);
        const ref = referenceGemma2Forward(ckpt.weights, ckpt.configJson, pixels.data, seq, prompt.length, { finalSoftcap: 3.5 });
        const v = ref.length / seq.length;
        b.tokens.forEach((tok, i) => {
          const row = prompt.length - 1 + i;
          expect(b.logprobs[i]).to.be.closeTo(referenceLogSoftmax(ref.subarray(row * v, (row + 1) * v))[tok], 1e-4);
        });
        const ga = await off.generate(image, PROMPT, { maxNewTokens: 4 });
        const gb = await on.generate(image, PROMPT, { maxNewTokens: 4 });
        expect(ga.tokens).to.deep.equal(gb.tokens);
      } finally {
        await off.close();
        await on.close();
      }
    });
  });

  describe('bug sensitivity: breaking one convention moves the logits far past the tolerance', function () {
    let run: Run;
    let good: Float64Array;
    before(async function () {
      const pipe = await createPipeline({ model: dir });
      try { run = await runModel(pipe); } finally { await pipe.close(); }
      good = oracle(ckpt, run);
      expect(relMaxDiff(run.all, good)).to.be.below(1e-5);
    });
    const breaks: Gemma2Break[] = [
      'no-attn-softcap', 'softcap-after-mask', 'head-dim-scale', 'no-window', 'window-before-prefix',
      'window-on-odd-layers', 'no-post-attn-norm', 'no-pre-ffn-norm', 'no-post-ffn-norm', 'norm-weight-not-plus-one',
    ];
    for (const br of breaks) {
      it(br, function () {
        const bad = oracle(ckpt, run, { broken: br });
        // 1e-3 relative is 100× the reference backend's tolerance above.
        expect(relMaxDiff(run.all, bad), 'ours vs the broken oracle').to.be.above(1e-3);
      });
    }
    it('unrounded-normalizer (bf16 checkpoint: √48 rounded to bf16)', async function () {
      const d = await makeTempDir('pg-gemma2-bf16-');
      const bf = await buildTinyCheckpoint(d, { ...gemma2Spec(), dtype: 'BF16' });
      const pipe = await createPipeline({ model: d });
      try {
        const r = await runModel(pipe);
        const want = referenceGemma2Forward(bf.weights, bf.configJson, r.pixels.data, r.seq, r.promptLength, { embedScaleDtype: 'bf16' });
        const bad = referenceGemma2Forward(bf.weights, bf.configJson, r.pixels.data, r.seq, r.promptLength, { embedScaleDtype: 'bf16', broken: 'unrounded-normalizer' });
        expect(relMaxDiff(r.all, want)).to.be.below(1e-5);
        // A smaller effect than the others (√48 moves by 0.3 % in bf16), still 10× the tolerance.
        expect(relMaxDiff(r.all, bad)).to.be.above(1e-4);
      } finally {
        await pipe.close();
      }
    });
  });

  describe('refusals', function () {
    it('rejects gemma2 options on a PaliGemma 1 model and invalid option values, by name', async function () {
      const d1 = await makeTempDir('pg-gemma1-');
      await buildTinyCheckpoint(d1, mqaSpec());
      for (const [model, gemma2, pattern] of [
        [d1, { finalLogitSoftcap: 'auto' }, /apply to PaliGemma 2 only/],
        [dir, { finalLogitSoftcap: -1 }, /invalid gemma2\.finalLogitSoftcap -1/],
        [dir, { slidingWindow: 'on' }, /invalid gemma2\.slidingWindow "on"/],
      ] as const) {
        let caught: unknown;
        try { await (await createPipeline({ model, gemma2: gemma2 as never })).close(); } catch (e) { caught = e; }
        expect(caught).to.be.instanceOf(PaliGemmaError);
        expect((caught as Error).message).to.match(pattern);
      }
    });

    it('a PaliGemma 2 folder without the feed-forward norms, or with bad layer_types, is refused', async function () {
      const d = await makeTempDir('pg-gemma2-bad-');
      await buildTinyCheckpoint(d, mqaSpec());
      const config = JSON.parse(await readFile(join(d, 'config.json'), 'utf8'));
      config.text_config.model_type = 'gemma2';
      await writeFile(join(d, 'config.json'), JSON.stringify(config));
      let caught: unknown;
      try { await (await createPipeline({ model: d })).close(); } catch (e) { caught = e; }
      expect(caught).to.be.instanceOf(PaliGemmaError);
      expect((caught as Error).message).to.match(/pre_feedforward_layernorm/);

      const d2 = await makeTempDir('pg-gemma2-lt-');
      await buildTinyCheckpoint(d2, { ...gemma2Spec(), gemma2: { ...gemma2Spec().gemma2!, layerTypes: ['sliding_attention'] } });
      caught = undefined;
      try { await (await createPipeline({ model: d2 })).close(); } catch (e) { caught = e; }
      expect(caught).to.be.instanceOf(PaliGemmaError);
      expect((caught as Error).message).to.match(/layer_types must list/);
    });

    it('honours explicit layer_types (full, sliding, full)', async function () {
      const d = await makeTempDir('pg-gemma2-lt2-');
      const types: Array<'sliding_attention' | 'full_attention'> = ['full_attention', 'sliding_attention', 'full_attention'];
      const c = await buildTinyCheckpoint(d, { ...gemma2Spec(), gemma2: { ...gemma2Spec().gemma2!, layerTypes: types } });
      const pipe = await createPipeline({ model: d });
      try {
        const r = await runModel(pipe);
        expect(relMaxDiff(r.all, referenceGemma2Forward(c.weights, c.configJson, r.pixels.data, r.seq, r.promptLength))).to.be.below(1e-5);
        expect(relMaxDiff(r.decoded, decodeRows(referenceGemma2Forward(c.weights, c.configJson, r.pixels.data, r.seq, r.promptLength), r))).to.be.below(1e-5);
      } finally {
        await pipe.close();
      }
    });
  });
});

/** test/fixtures/gemma2-reference.json, written by make-gemma2-reference.py with transformers. */
interface HfRows { slice: string; logsumexp: number[]; argmax: number[] }
interface HfFixture {
  versions: Record<string, string>;
  safetensorsSha256: string;
  pixelValues: number[];
  prompt: number[];
  suffix: number[];
  vocabSlice: number;
  full: HfRows;
  decode: HfRows;
}

describe('PaliGemma 2 vs transformers (committed fixture)', function () {
  this.timeout(120_000);
  const fx = JSON.parse(readFileSync(new URL('./fixtures/gemma2-reference.json', import.meta.url), 'utf8')) as HfFixture;
  const slice = (r: HfRows) => {
    const b = Buffer.from(r.slice, 'base64');
    return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
  };
  let dir: string;
  let ckpt: TinyCheckpoint;
  const seq = [...fx.prompt, ...fx.suffix];
  const pixels = (): PixelValues => {
    const size = Math.round(Math.sqrt(fx.pixelValues.length / 3));
    return { data: Float32Array.from(fx.pixelValues), shape: [3, size, size] };
  };

  /** Compares [R, V] logits with the fixture rows: the stored vocabulary slice, log-sum-exp, argmax. */
  function check(logits: ArrayLike<number>, rows: HfRows, what: string): number {
    const want = slice(rows), vs = fx.vocabSlice, r = rows.argmax.length, v = logits.length / r;
    expect(Number.isInteger(v), `${what}: row count`).to.equal(true);
    let worstAbs = 0;
    for (let i = 0; i < r; i++) {
      const row = Array.from({ length: v }, (_, j) => logits[i * v + j]);
      for (let j = 0; j < vs; j++) worstAbs = Math.max(worstAbs, Math.abs(row[j] - want[i * vs + j]));
      const max = Math.max(...row);
      const lse = max + Math.log(row.reduce((a, x) => a + Math.exp(x - max), 0));
      worstAbs = Math.max(worstAbs, Math.abs(lse - rows.logsumexp[i]));
      expect(row.indexOf(max), `${what}: argmax of row ${i}`).to.equal(rows.argmax[i]);
    }
    return worstAbs;
  }

  before(async function () {
    dir = await makeTempDir('pg-gemma2-hf-');
    ckpt = await buildTinyCheckpoint(dir, { ...gemma2Spec(), nameScheme: 'newer' });
    const sha = createHash('sha256').update(readFileSync(join(dir, 'model.safetensors'))).digest('hex');
    expect(sha, 'the tiny checkpoint builder still writes the bytes the fixture was made from').to.equal(fx.safetensorsSha256);
  });

  it(`the float64 oracle agrees with transformers ${fx.versions.transformers} (full and decode rows)`, function () {
    const px = pixels();
    const ref = referenceGemma2Forward(ckpt.weights, ckpt.configJson, px.data, seq, fx.prompt.length);
    const v = ref.length / seq.length;
    expect(check(ref, fx.full, 'full')).to.be.below(1e-4);
    expect(check(ref.subarray((fx.prompt.length - 1) * v), fx.decode, 'decode')).to.be.below(1e-4);
    worst['oracle vs transformers'] = { abs: check(ref, fx.full, 'full'), rel: NaN };
  });

  it('transformers runs the window with the prefix rule and no final soft-cap (the other readings disagree)', function () {
    const px = pixels();
    const far = (opts: Gemma2ReferenceOptions) => {
      const ref = referenceGemma2Forward(ckpt.weights, ckpt.configJson, px.data, seq, fx.prompt.length, opts);
      const want = slice(fx.full), vs = fx.vocabSlice, v = ref.length / seq.length;
      let m = 0;
      for (let i = 0; i < seq.length; i++) for (let j = 0; j < vs; j++) m = Math.max(m, Math.abs(ref[i * v + j] - want[i * vs + j]));
      return m;
    };
    for (const opts of [{ window: false }, { finalSoftcap: 3.5 }, { broken: 'window-before-prefix' as const }, { broken: 'softcap-after-mask' as const }]) {
      expect(far(opts), JSON.stringify(opts)).to.be.above(1e-2);
    }
  });

  for (const be of BACKENDS.filter((b) => !b.label.includes('plain'))) {
    it(`${be.label} agrees with transformers (full and decode rows)`, async function () {
      let pipe: PaliGemmaPipeline;
      try {
        pipe = await createPipeline({ model: dir, ...be.options });
      } catch (e) {
        if (be.label.startsWith('webgpu') && e instanceof PaliGemmaError) this.skip();
        throw e;
      }
      try {
        const m = pipe.model, b = pipe.backend;
        const rows = m.imageRows(pixels());
        const embeds = m.embedPrompt(Int32Array.from(seq), rows);
        const s1 = m.session(seq.length);
        const all = await s1.prefill(embeds, fx.prompt.length, 0);
        s1.dispose();
        const pe = m.embedPrompt(Int32Array.from(fx.prompt), rows);
        b.dispose([embeds, rows]);
        const s2 = m.session(seq.length);
        const steps = [await s2.prefill(pe, fx.prompt.length)];
        b.dispose(pe);
        for (const tok of fx.suffix) steps.push(await s2.step(tok));
        s2.dispose();
        const decoded = new Float32Array(steps.length * steps[0].length);
        steps.forEach((l, i) => decoded.set(l, i * l.length));
        const abs = Math.max(check(all, fx.full, 'full'), check(decoded, fx.decode, 'decode'));
        worst[`${be.label} vs transformers`] = { abs, rel: NaN };
        expect(abs, 'max |Δlogit| vs transformers').to.be.below(1e-4);
      } finally {
        await pipe.close();
      }
    });
  }
});
