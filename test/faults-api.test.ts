/**
 * Fault suite, API side (issue 20): limits checked before compute, cancellation that lands,
 * and every public entry point refusing bad arguments with a coded PaliGemmaError. Built at
 * test time from the tiny checkpoint; nothing binary is committed.
 */
import { expect } from 'chai';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  AttentionKernelContribution, BackendContribution, ImageProcessorContribution, KVCacheStoreContribution, SamplerContribution,
  TokenizerContribution,
  ContiguousKvCacheStore, PaliGemmaError, SiglipImageProcessor, createPipeline, definePlugin, promptIds, suffixIds,
  type CreatePipelineOptions, type GenerateOptions, type KVCacheStore, type PaliGemmaPipeline, type Sampler,
} from '../src/index.js';
import { buildTinyCheckpoint, makeTempDir, makeTestImage, mqaSpec } from './support/tiny-checkpoint.js';

const CONTEXT = 128;
const PROMPT = 'caption en';

/** Greedy over every token but <eos>, so that generation runs until a limit or an abort. */
const neverEos = (eos: number): Sampler => ({
  name: 'never-eos',
  sample(logits) {
    let best = eos === 0 ? 1 : 0;
    for (let i = 0; i < logits.length; i++) if (i !== eos && logits[i] > logits[best]) best = i;
    return best;
  },
});

/** A KV cache store that records the capacity of every cache it makes. */
function recordingStore(): KVCacheStore & { capacities: number[] } {
  const inner = new ContiguousKvCacheStore();
  const capacities: number[] = [];
  return { name: 'recording', capacities, create: (backend, spec) => { capacities.push(spec.capacity); return inner.create(backend, spec); } };
}

/** Expects `run` to throw or reject with a PaliGemmaError of `code` whose message matches `pattern`. */
/**
 * A pipeline on `options.backend`, or the test is skipped when that backend cannot start here:
 * its package is not installed, or (webgpu) there is no adapter, neither a GPU nor SwiftShader.
 */
async function pipelineOrSkip(ctx: Mocha.Context, options: CreatePipelineOptions): Promise<PaliGemmaPipeline> {
  try {
    return await createPipeline(options);
  } catch (e) {
    if (e instanceof PaliGemmaError && e.code === 'missing_dependency') ctx.skip();
    if (options.backend === 'webgpu' && e instanceof PaliGemmaError && /adapter/i.test(e.message)) ctx.skip();
    throw e;
  }
}

async function expectCode(run: () => unknown, code: string, pattern?: RegExp): Promise<PaliGemmaError> {
  let error: unknown;
  try { await run(); } catch (e) { error = e; }
  expect(error, 'expected a PaliGemmaError').to.be.instanceOf(PaliGemmaError);
  const e = error as PaliGemmaError;
  expect(e.code, e.message).to.equal(code);
  expect(e.message).to.not.contain('\n');
  if (pattern) expect(e.message).to.match(pattern);
  return e;
}

describe('faults: API', function () {
  this.timeout(120_000);
  let dir: string;
  let pipe: PaliGemmaPipeline;
  const image = makeTestImage(20, 20, 4);
  let eos: number;
  let promptTokens: number;

  before(async function () {
    dir = await makeTempDir('pg-faults-api-');
    await buildTinyCheckpoint(dir, mqaSpec());
    const configFile = join(dir, 'config.json');
    const config = JSON.parse(await readFile(configFile, 'utf8'));
    config.text_config.max_position_embeddings = CONTEXT;
    await writeFile(configFile, JSON.stringify(config));
    pipe = await createPipeline({ model: dir });
    eos = pipe.tokenizer.special.eos;
    promptTokens = promptIds(pipe.tokenizer, PROMPT, pipe.model.config.numImageTokens).length;
  });
  after(async () => pipe?.close());

  describe('rule 4: limits before compute', function () {
    it('refuses a prompt past max_position_embeddings at the call, before any model work', async function () {
      let processed = 0;
      const counting = await createPipeline({
        model: dir, imageProcessor: { process: async (img) => { processed++; return pipe.imageProcessor.process(img); } },
      });
      try {
        for (const prompt of ['word '.repeat(200), 'x'.repeat(10_000), 'a cat '.repeat(20_000)]) {
          // stream() throws synchronously: no generator, so no image decode and no forward pass.
          await expectCode(() => counting.stream(image, prompt), 'context_exceeded', /prompt is \d+ tokens .*max_position_embeddings 128/);
          await expectCode(() => counting.generate(image, prompt), 'context_exceeded');
          await expectCode(() => counting.score(image, prompt, 'x'), 'context_exceeded', /prompt \+ suffix/);
        }
        await expectCode(() => counting.score(image, PROMPT, 'word '.repeat(200)), 'context_exceeded');
        expect(processed).to.equal(0);
      } finally {
        await counting.close();
      }
    });

    it('clamps maxNewTokens to the context left (finish reason length); the KV cache never outgrows the context', async function () {
      const store = recordingStore();
      const p = await createPipeline({ model: dir, kvCache: store, sampler: neverEos(eos) });
      try {
        const budget = CONTEXT - promptTokens + 1;
        const exact = await p.generate(image, PROMPT, { maxNewTokens: budget });
        for (const requested of [budget + 1, 1e6, 1e9, Number.MAX_SAFE_INTEGER]) {
          const r = await p.generate(image, PROMPT, { maxNewTokens: requested });
          expect(r.finishReason).to.equal('length');
          expect(r.tokens).to.deep.equal(exact.tokens);
        }
        expect(exact.tokens).to.have.length(budget);
        // The prefill fills promptTokens positions and each fed token one more: at most CONTEXT.
        expect(store.capacities).to.deep.equal(Array(5).fill(CONTEXT));
        const small = await p.generate(image, PROMPT, { maxNewTokens: 3 });
        expect(small.tokens).to.deep.equal(exact.tokens.slice(0, 3));
        expect(store.capacities.at(-1)).to.equal(promptTokens + 2);
      } finally {
        await p.close();
      }
    });

    for (const backend of ['onnx', 'tfjs', 'webgpu']) {
      it(`${backend}: maxNewTokens 1e9 runs to the context and stops (finish reason length), as on reference`, async function () {
        const p = await pipelineOrSkip(this, { model: dir, backend, sampler: neverEos(eos) });
        try {
          const r = await p.generate(image, PROMPT, { maxNewTokens: 1e9 });
          expect(r.finishReason).to.equal('length');
          expect(r.tokens).to.have.length(CONTEXT - promptTokens + 1);
        } finally {
          await p.close();
        }
      });
    }

    it('a prompt that fills the context exactly still gets its one token', async function () {
      const p = await createPipeline({ model: dir, sampler: neverEos(eos) });
      try {
        // Grow the prompt until it has CONTEXT tokens (image tokens included).
        let prompt = PROMPT;
        while (promptIds(p.tokenizer, `${prompt} x`, p.model.config.numImageTokens).length <= CONTEXT) prompt += ' x';
        const n = promptIds(p.tokenizer, prompt, p.model.config.numImageTokens).length;
        expect(n).to.be.at.most(CONTEXT);
        const r = await p.generate(image, prompt, { maxNewTokens: 50 });
        expect(r.tokens).to.have.length(CONTEXT - n + 1);
        expect(r.finishReason).to.equal('length');
      } finally {
        await p.close();
      }
    });
  });

  describe('rule 5: cancellation lands', function () {
    for (const backend of ['reference', 'onnx', 'tfjs', 'webgpu']) {
      it(`${backend}: a timer-fired abort during decoding stops within one step`, async function () {
        const p = await pipelineOrSkip(this, { model: dir, backend, sampler: neverEos(eos) });
        try {
          const controller = new AbortController();
          const it = p.stream(image, PROMPT, { maxNewTokens: 1e9, signal: controller.signal });
          let r = await it.next();
          // The timer can only fire if the generator gives the event loop a turn: awaiting
          // next() alone runs microtasks only.
          setTimeout(() => controller.abort(), 0);
          let n = 0;
          let atAbort = -1;
          controller.signal.addEventListener('abort', () => { atAbort = n; });
          while (!r.done) { n++; r = await it.next(); }
          expect(r.value.finishReason).to.equal('aborted');
          expect(n).to.be.below(CONTEXT - promptTokens);
          // Within one step: at most the token whose step was under way when the timer fired.
          expect(atAbort).to.be.at.least(0);
          expect(n - atAbort, `tokens after the abort fired (at ${atAbort})`).to.be.at.most(1);
        } finally {
          await p.close();
        }
      });
    }

    it('AbortSignal.timeout fires during a long generation and stops it', async function () {
      const p = await createPipeline({ model: dir, sampler: neverEos(eos) });
      try {
        const first = await p.generate(image, PROMPT, { maxNewTokens: 1e9, signal: AbortSignal.timeout(1) });
        expect(first.finishReason).to.equal('aborted');
        expect(first.tokens.length).to.be.below(CONTEXT - promptTokens);
      } finally {
        await p.close();
      }
    });

    it('an aborted signal stops the prefill at the first layer boundary', async function () {
      const r = await pipe.generate(image, PROMPT, { signal: AbortSignal.abort() });
      expect(r.finishReason).to.equal('aborted');
      expect(r.tokens).to.deep.equal([]);
      expect(r.text).to.equal('');
    });

    it('the prefill yields between layers (numLayers - 1 pauses)', async function () {
      const m = pipe.model;
      const ids = Int32Array.from(promptIds(pipe.tokenizer, PROMPT, m.config.numImageTokens));
      const rows = m.imageRows(await pipe.imageProcessor.process(image));
      const embeds = m.embedPrompt(ids, rows);
      pipe.backend.dispose(rows);
      const s = m.session(ids.length);
      let pauses = 0;
      const paused = await s.prefill(embeds, ids.length, undefined, async () => { pauses++; });
      s.dispose();
      const s2 = m.session(ids.length);
      const plain = await s2.prefill(embeds, ids.length);
      s2.dispose();
      pipe.backend.dispose(embeds);
      expect(pauses).to.equal(m.config.text.numLayers - 1);
      expect(Array.from(paused)).to.deep.equal(Array.from(plain));
    });
  });

  describe('rule 6: arguments of the public entry points', function () {
    const gen = (opts: unknown) => () => pipe.generate(image, PROMPT, opts as GenerateOptions);
    const generateCases: Array<[string, () => unknown, string, RegExp]> = [
      ['prompt null', () => pipe.generate(image, null as never), 'invalid_argument', /invalid prompt: expected a string, got null/],
      ['prompt undefined', () => pipe.generate(image, undefined as never), 'invalid_argument', /prompt.*undefined/],
      ['prompt a number', () => pipe.generate(image, 42 as never), 'invalid_argument', /prompt.*number 42/],
      ['image null', () => pipe.generate(null as never, PROMPT), 'invalid_argument', /invalid image: .*got null/],
      ['image undefined', () => pipe.generate(undefined as never, PROMPT), 'invalid_argument', /invalid image/],
      ['image a number', () => pipe.generate(7 as never, PROMPT), 'invalid_argument', /invalid image/],
      ['image an empty path', () => pipe.generate('', PROMPT), 'invalid_argument', /invalid image/],
      ['seed NaN', gen({ seed: NaN }), 'invalid_argument', /invalid seed: expected an integer, got number NaN/],
      ['seed "x"', gen({ seed: 'x' }), 'invalid_argument', /invalid seed: .*"x"/],
      ['seed 1.5', gen({ seed: 1.5 }), 'invalid_argument', /invalid seed/],
      ['maxNewTokens 0', gen({ maxNewTokens: 0 }), 'invalid_argument', /invalid maxNewTokens/],
      ['maxNewTokens 1.5', gen({ maxNewTokens: 1.5 }), 'invalid_argument', /invalid maxNewTokens/],
      ['maxNewTokens "3"', gen({ maxNewTokens: '3' }), 'invalid_argument', /invalid maxNewTokens/],
      ['maxNewTokens Infinity', gen({ maxNewTokens: Infinity }), 'invalid_argument', /invalid maxNewTokens/],
      ['logprobs -1', gen({ logprobs: -1 }), 'invalid_argument', /invalid logprobs: expected an integer from 0/],
      ['logprobs 1.5', gen({ logprobs: 1.5 }), 'invalid_argument', /invalid logprobs/],
      ['logprobs "3"', gen({ logprobs: '3' }), 'invalid_argument', /invalid logprobs/],
      ['logprobs past the vocabulary', gen({ logprobs: 1e9 }), 'invalid_argument', /invalid logprobs/],
      ['signal not an AbortSignal', gen({ signal: { aborted: false } }), 'invalid_argument', /invalid signal: expected an AbortSignal/],
      ['signal a string', gen({ signal: 'stop' }), 'invalid_argument', /invalid signal/],
      ['sampler without sample()', gen({ sampler: {} }), 'invalid_argument', /invalid sampler/],
      ['options not an object', gen(5), 'invalid_argument', /invalid generate options/],
      ['unknown option key', gen({ maxNewToken: 3 }), 'unknown_option', /unknown generate option "maxNewToken" \(known: maxNewTokens/],
      ['stream: prompt null, thrown at the call', () => pipe.stream(image, null as never), 'invalid_argument', /invalid prompt/],
      ['score: suffix null', () => pipe.score(image, PROMPT, null as never), 'invalid_argument', /invalid suffix/],
      ['score: prompt a number', () => pipe.score(image, 3 as never, 'x'), 'invalid_argument', /invalid prompt/],
      ['score: image null', () => pipe.score(null as never, PROMPT, 'x'), 'invalid_argument', /invalid image/],
      ['promptIds: prompt a number', () => promptIds(pipe.tokenizer, 1 as never, 4), 'invalid_argument', /invalid prompt/],
      ['suffixIds: suffix undefined', () => suffixIds(pipe.tokenizer, undefined as never), 'invalid_argument', /invalid suffix/],
      ['image processor: image null', () => (pipe.imageProcessor as SiglipImageProcessor).process(null as never), 'invalid_argument', /invalid image/],
    ];
    for (const [label, run, code, pattern] of generateCases) {
      it(label, async function () { await expectCode(run, code, pattern); });
    }

    it('maxNewTokens 1e9 is accepted and clamped, not refused', async function () {
      const r = await pipe.generate(image, PROMPT, { maxNewTokens: 1e9 });
      expect(r.tokens.length).to.be.at.most(CONTEXT - promptTokens + 1);
    });

    const create = (options: unknown) => () => createPipeline(options as CreatePipelineOptions);
    const throwingPlugin = definePlugin('throws-on-load', () => { throw new Error('boom in register'); });
    const createCases: Array<[string, () => unknown, string, RegExp]> = [
      ['model a number', create({ model: 42 }), 'invalid_argument', /invalid model: .*got number 42/],
      ['model an empty string', create({ model: '' }), 'invalid_argument', /invalid model/],
      ['options not an object', create('model-dir'), 'invalid_argument', /invalid createPipeline options/],
      ['unknown option key', create({ modle: 'x' }), 'unknown_option', /unknown createPipeline option "modle"/],
      ['backend an object that is not one', create({ backend: {} }), 'invalid_argument', /invalid backend: .*upload\(\)/],
      ['backend a number', create({ backend: 3 }), 'invalid_argument', /invalid backend/],
      ['backend without a name', create({ backend: { upload() {}, read() {}, dispose() {}, matmul() {} } }), 'invalid_argument', /backend with a name/],
      ['kvCache an object that is not one', create({ kvCache: {} }), 'invalid_argument', /invalid kvCache: .*create\(\)/],
      ['kvCache with a non-function create', create({ kvCache: { create: 1 } }), 'invalid_argument', /invalid kvCache/],
      ['attention an object that is not one', create({ attention: { name: 'x' } }), 'invalid_argument', /invalid attention/],
      ['sampler an object that is not one', create({ sampler: { name: 'x' } }), 'invalid_argument', /invalid sampler/],
      ['tokenizer an object that is not one', create({ tokenizer: { encode() {} } }), 'invalid_argument', /invalid tokenizer/],
      ['imageProcessor an object that is not one', create({ imageProcessor: [] }), 'invalid_argument', /invalid imageProcessor/],
      ['onProgress not a function', create({ onProgress: 'log' }), 'invalid_argument', /invalid onProgress: expected a function/],
      ['configure not a function', create({ configure: {} }), 'invalid_argument', /invalid configure/],
      ['plugins not an array', create({ plugins: 'x' }), 'invalid_argument', /invalid plugins/],
      ['a plugin that is not one', create({ plugins: [42] }), 'invalid_argument', /invalid plugins\[0\]/],
      ['backendOptions not an object', create({ backendOptions: 'int8' }), 'invalid_argument', /invalid backendOptions/],
      ['revision a number', create({ revision: 3 }), 'invalid_argument', /invalid revision: .*got number 3/],
      ['revision an empty string', create({ revision: '' }), 'invalid_argument', /invalid revision/],
      ['onDownloadProgress not a function', create({ onDownloadProgress: true }), 'invalid_argument', /invalid onDownloadProgress: expected a function/],
      ['onDownloadPlan not a function', create({ onDownloadPlan: {} }), 'invalid_argument', /invalid onDownloadPlan: expected a function/],
      ['gemma2 not an object', create({ gemma2: 'auto' }), 'invalid_argument', /invalid gemma2: expected an object/],
      ['dtype unknown', create({ dtype: 'int3' }), 'invalid_option', /dtype: unknown dtype "int3"/],
      ['samplerOptions not an object', create({ samplerOptions: 3 }), 'invalid_argument', /invalid samplerOptions/],
      ['unknown backend option key', create({ backendOptions: { quantise: 'int8' } }), 'unknown_option', /unknown option of backend reference: "quantise"/],
      ['a plugin whose module throws', create({ plugins: [throwingPlugin] }), 'invalid_input', /plugin throws-on-load .*boom in register/],
    ];
    for (const [label, run, code, pattern] of createCases) {
      it(`createPipeline: ${label}`, async function () { await expectCode(run, code, pattern); });
    }

    it('createPipeline: every documented option is accepted (none is refused as unknown)', async function () {
      // Every key of the type must be present here (a revision applies to hub ids only: undefined).
      const all: { [K in keyof Required<CreatePipelineOptions>]: CreatePipelineOptions[K] } = {
        model: dir, revision: undefined, onDownloadProgress: () => {}, onDownloadPlan: () => {}, backend: 'reference',
        backendOptions: {}, dtype: 'auto', attention: 'plain', kvCache: 'contiguous', sampler: 'greedy', samplerOptions: {},
        tokenizer: 'hf', imageProcessor: 'siglip', plugins: [], gemma2: {}, onProgress: () => {}, configure: () => {},
      };
      const p = await createPipeline(all);
      await p.close();
    });

    it('createPipeline: a configure option that throws', async function () {
      await expectCode(() => createPipeline({ model: dir, configure: () => { throw new TypeError('bad rebind'); } }),
        'plugin_failed', /configure\(container\) option failed: bad rebind/);
    });

    it('generate, stream and score after close() fail with code closed; close() twice is harmless', async function () {
      const p = await createPipeline({ model: dir });
      await p.close();
      await p.close();
      await expectCode(() => p.generate(image, PROMPT), 'closed', /generate|stream/);
      await expectCode(() => p.stream(image, PROMPT), 'closed', /stream\(\) was called after close\(\)/);
      await expectCode(() => p.score(image, PROMPT, 'x'), 'closed', /score\(\) was called after close\(\)/);
    });
  });

  describe('rule 6: plugin parts that throw', function () {
    const boom = (what: string) => () => { throw new TypeError(`${what} exploded`); };
    const parts = definePlugin('throwing-parts', ({ bind }) => {
      bind(BackendContribution).toConstantValue({ name: 'boom-backend', description: 'throws', create: boom('backend') });
      bind(SamplerContribution).toConstantValue({ name: 'boom-sampler', description: 'throws', create: boom('sampler') });
      bind(KVCacheStoreContribution).toConstantValue({ name: 'boom-kv', description: 'throws', create: boom('kv') });
      bind(AttentionKernelContribution).toConstantValue({ name: 'boom-attention', description: 'throws', create: boom('attention') });
      bind(TokenizerContribution).toConstantValue({ name: 'boom-tokenizer', description: 'throws', load: async () => boom('tokenizer')() });
      bind(ImageProcessorContribution).toConstantValue({ name: 'boom-images', description: 'throws', load: async () => boom('images')() });
    });
    const cases: Array<[string, Partial<CreatePipelineOptions>, string, RegExp]> = [
      ['backend create()', { backend: 'boom-backend' }, 'invalid_input', /backend boom-backend \(plugin throwing-parts\) failed to start: backend exploded/],
      ['sampler create()', { sampler: 'boom-sampler' }, 'plugin_failed', /sampler create\(\) failed: sampler exploded/],
      ['KV cache create()', { kvCache: 'boom-kv' }, 'plugin_failed', /KV cache store create\(\) failed: kv exploded/],
      ['attention create()', { attention: 'boom-attention' }, 'plugin_failed', /attention kernel create\(\) failed: attention exploded/],
      ['tokenizer load()', { tokenizer: 'boom-tokenizer' }, 'plugin_failed', /tokenizer boom-tokenizer load\(\) failed: tokenizer exploded/],
      ['image processor load()', { imageProcessor: 'boom-images' }, 'plugin_failed', /image processor boom-images load\(\) failed: images exploded/],
    ];
    for (const [label, options, code, pattern] of cases) {
      it(`a plugin whose ${label} throws a TypeError`, async function () {
        await expectCode(() => createPipeline({ model: dir, plugins: [parts], ...options }), code, pattern);
      });
    }
  });

  describe('rule 6: arguments of the task helpers (pipe.detect/segment/caption/ocr/answer)', function () {
    const taskCases: Array<[string, () => unknown, string, RegExp]> = [
      ['detect: labels a number', () => pipe.detect(image, 5 as never), 'invalid_argument', /invalid detect labels: expected a string or an array of strings, got number 5/],
      ['detect: labels null', () => pipe.detect(image, null as never), 'invalid_argument', /invalid detect labels/],
      ['detect: a label that is a number', () => pipe.detect(image, ['cat', 1] as never), 'invalid_argument', /invalid detect labels/],
      ['detect: no labels', () => pipe.detect(image, []), 'invalid_argument', /at least one label/],
      ['detect: a label with ";"', () => pipe.detect(image, 'cat ; dog'), 'invalid_argument', /must not contain ';'/],
      ['detect: image null', () => pipe.detect(null as never, 'cat'), 'invalid_argument', /invalid image/],
      ['detect: options null', () => pipe.detect(image, 'cat', null as never), 'invalid_argument', /invalid detect options: expected an object, got null/],
      ['detect: unknown option key', () => pipe.detect(image, 'cat', { maxNewToken: 3 } as never), 'unknown_option', /unknown detect option "maxNewToken"/],
      ['detect: lang is not a detect option', () => pipe.detect(image, 'cat', { lang: 'en' } as never), 'unknown_option', /unknown detect option "lang"/],
      ['detect: seed NaN', () => pipe.detect(image, 'cat', { seed: NaN }), 'invalid_argument', /invalid seed/],
      ['segment: label null', () => pipe.segment(image, null as never), 'invalid_argument', /invalid segment label: expected a string, got null/],
      ['segment: label a number', () => pipe.segment(image, 3 as never), 'invalid_argument', /invalid segment label/],
      ['segment: vae a number', () => pipe.segment(image, 'cat', { vae: 3 } as never), 'invalid_argument', /invalid vae/],
      ['segment: unknown option key', () => pipe.segment(image, 'cat', { vea: 'x.npz' } as never), 'unknown_option', /unknown segment option "vea"/],
      ['caption: lang a number', () => pipe.caption(image, { lang: 5 } as never), 'invalid_argument', /invalid lang/],
      ['caption: lang not a code', () => pipe.caption(image, { lang: 'en; ocr' }), 'invalid_argument', /invalid lang "en; ocr"/],
      ['caption: options a string', () => pipe.caption(image, 'en' as never), 'invalid_argument', /invalid caption options/],
      ['caption: image a number', () => pipe.caption(4 as never), 'invalid_argument', /invalid image/],
      ['ocr: signal not an AbortSignal', () => pipe.ocr(image, { signal: {} as never }), 'invalid_argument', /invalid signal/],
      ['ocr: maxNewTokens "3"', () => pipe.ocr(image, { maxNewTokens: '3' as never }), 'invalid_argument', /invalid maxNewTokens/],
      ['answer: question null', () => pipe.answer(image, null as never), 'invalid_argument', /invalid question: expected a string, got null/],
      ['answer: question a number', () => pipe.answer(image, 42 as never), 'invalid_argument', /invalid question/],
      ['answer: question empty', () => pipe.answer(image, '  '), 'invalid_argument', /invalid question: empty/],
      ['answer: logprobs -1', () => pipe.answer(image, 'what?', { logprobs: -1 }), 'invalid_argument', /invalid logprobs/],
      ['answer: unknown option key', () => pipe.answer(image, 'what?', { language: 'en' } as never), 'unknown_option', /unknown answer option "language"/],
    ];
    for (const [label, run, code, pattern] of taskCases) {
      it(label, async function () { await expectCode(run, code, pattern); });
    }

    it('the task helpers still run with good arguments', async function () {
      const r = await pipe.caption(image, { lang: 'en', maxNewTokens: 2 });
      expect(r.prompt).to.equal('caption en');
      expect(r.generation.tokens.length).to.be.within(1, 2);
      const d = await pipe.detect(image, ['cat', 'dog'], { maxNewTokens: 2 });
      expect(d.prompt).to.equal('detect cat ; dog');
    });

    it('detect, segment, caption, ocr and answer after close() fail with code closed', async function () {
      const p = await createPipeline({ model: dir });
      await p.close();
      await expectCode(() => p.detect(image, 'cat'), 'closed', /detect\(\) was called after close\(\)/);
      await expectCode(() => p.segment(image, 'cat'), 'closed', /segment\(\) was called after close\(\)/);
      await expectCode(() => p.caption(image), 'closed', /caption\(\)/);
      await expectCode(() => p.ocr(image), 'closed', /ocr\(\)/);
      await expectCode(() => p.answer(image, 'what?'), 'closed', /answer\(\)/);
    });
  });
});
