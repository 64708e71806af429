/**
 * The ONNX Runtime backend against the reference backend: every op on seeded random inputs,
 * the attention kernel (masks, GQA, cache offsets), the lazy machinery (one run per read,
 * session reuse across decode-shaped steps, in-place cache writes, disposal), and a whole
 * in-memory PaliGemma (vision, prefill, greedy decode) against the reference pipeline.
 */
import { checkCoreOps } from './support/core-op-checks.js';
import { AttendKernel } from '../src/attention/plain-attention-kernel.js';
import { expect } from 'chai';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ReferenceAttentionKernel } from '../src/backends/reference/reference-attention-kernel.js';
import { ReferenceBackend } from '../src/backends/reference/reference-backend.js';
import { OnnxBackend } from '../src/backends/onnx/onnx-backend.js';
import { onnxBackendPlugin } from '../src/backends/onnx/onnx-backend-module.js';
import { BUILTIN_PLUGINS } from '../src/builtin-plugins.js';
import { compare } from '../src/conformance/compare.js';
import { createPipeline } from '../src/create-pipeline.js';
import type { AttentionMask } from '../src/interfaces/attention-kernel.js';
import { PaliGemmaError } from '../src/interfaces/errors.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../src/tensor/dtype.js';
import type { PixelValues } from '../src/interfaces/image-processor.js';
import type { Tensor, TensorOps } from '../src/interfaces/tensor-backend.js';
import { ContiguousKvCacheStore } from '../src/kv-cache/contiguous-kv-cache.js';
import type { PaliGemmaConfig } from '../src/model/config-types.js';
import { PaliGemmaModel } from '../src/model/paligemma-model.js';
import { promptIds } from '../src/generation/prompt-format.js';
import { PartRegistry } from '../src/plugin/part-registry.js';
import { buildTinyCheckpoint, gqaSpec, makeTempDir, makeTestImage, mhaSpec, mqaSpec } from './support/tiny-checkpoint.js';
import { modelConfig, randomWeightEntries, type ModelShape } from '../src/tiny-models/random-weights.js';
import { itAttentionGrid, itFallsBackOnAnotherBackend } from './support/attention-grid.js';
import { BackendPair, expectOwnershipChecks, WorstErrors } from './support/backend-pair.js';
import { argmax, greedyRun, relMaxDiff } from './support/model-compare.js';
import { rand, sizeOf } from './support/seeded-values.js';

// ── helpers ─────────────────────────────────────────────────────────────────

/** Worst normalized MSE seen per op, printed at the end. */
const worst = new WorstErrors();
const note = (op: string, e: number) => worst.note(op, e);

describe('onnx backend', function () {
  let onnx: OnnxBackend;
  let pair: BackendPair<OnnxBackend>;

  before(async function () {
    onnx = new OnnxBackend({ device: 'cpu' });
    await onnx.init();
    pair = new BackendPair(onnx, new ReferenceBackend());
  });
  after(async function () {
    worst.print('      onnx vs reference, worst normalized MSE per op:', 12);
    await onnx?.close();
  });

  // ── ops ─────────────────────────────────────────────────────────────────────
  describe('ops vs reference', function () {
    const TIGHT = 1e-10;

    it('matmul (plain, transposeB, bias; odd and length-1 shapes)', async function () {
      const cases: Array<[number, number, number]> = [[1, 1, 1], [1, 7, 5], [3, 17, 1], [13, 31, 29], [64, 65, 33], [2, 256, 300]];
      let seed = 1;
      for (const [m, k, n] of cases) {
        for (const transposeB of [false, true]) {
          for (const withBias of [false, true]) {
            const a = pair.rand([m, k], seed++);
            const b = pair.rand(transposeB ? [n, k] : [k, n], seed++);
            const bias = pair.rand([n], seed++);
            const e = await pair.check((be, [x, y, z]) => be.matmul(x, y, { transposeB, bias: withBias ? z : undefined }), [a, b, bias], TIGHT);
            note('matmul', e);
          }
        }
      }
    });

    it('add and mul, same shape and broadcast over leading dims', async function () {
      const cases: Array<[number[], number[]]> = [[[1], [1]], [[5, 3], [5, 3]], [[7, 3], [3]], [[2, 3, 5], [3, 5]], [[4, 1, 9], [9]], [[3, 2, 4], [3, 2, 4]]];
      let seed = 100;
      for (const [sa, sb] of cases) {
        for (const op of ['add', 'mul'] as const) {
          const e = await pair.check((be, [x, y]) => be[op](x, y), [pair.rand(sa, seed++), pair.rand(sb, seed++)], TIGHT);
          note(op, e);
        }
      }
    });

    it('unary, reduce, row broadcast, and the defaults (src/ops, attendFromCore) on its core ops', async function () {
      for (const [op, e] of Object.entries(await checkCoreOps(pair.subject, 1e-9))) note(op, e);
    });

    it('scale and gelu', async function () {
      let seed = 200;
      for (const shape of [[1], [3, 5], [2, 3, 129]]) {
        note('scale', await pair.check((be, [x]) => be.scale(x, 0.37), [pair.rand(shape, seed++, 4)], TIGHT));
        note('scale', await pair.check((be, [x]) => be.scale(x, Math.sqrt(2048)), [pair.rand(shape, seed++, 4)], TIGHT));
        // A single element deep in GELU's negative tail (|y| ~ 1e-5) would make the normalized
        // error a relative error of a float32 cancellation, so length-1 uses a milder range.
        note('gelu', await pair.check((be, [x]) => be.gelu(x), [pair.rand(shape, seed++, sizeOf(shape) === 1 ? 1 : 6)], TIGHT));
      }
    });

    it('layerNorm and rmsNorm over the last axis', async function () {
      let seed = 300;
      for (const shape of [[1, 1], [1, 8], [5, 33], [2, 3, 64], [7, 1152]]) {
        const d = shape[shape.length - 1];
        const x = pair.rand(shape, seed++, 3), w = pair.rand([d], seed++), b = pair.rand([d], seed++);
        note('layerNorm', await pair.check((be, [a, c, e]) => be.layerNorm(a, c, e, 1e-6), [x, w, b], 1e-9));
        note('rmsNorm', await pair.check((be, [a, c]) => be.rmsNorm(a, c, 1e-6), [pair.rand(shape, seed++, 3), pair.rand([d], seed++)], 1e-9));
      }
    });

    it('softmax, including large-magnitude logits and -Infinity', async function () {
      let seed = 400;
      for (const [shape, scale] of [[[1, 1], 1], [[3, 7], 1], [[2, 5, 257], 10], [[4, 300], 1e4], [[1, 1000], 80]] as Array<[number[], number]>) {
        note('softmax', await pair.check((be, [x]) => be.softmax(x), [pair.rand(shape, seed++, scale)], TIGHT));
      }
      const masked = rand(12, 9);
      masked[1] = -Infinity; masked[7] = -Infinity;
      note('softmax', await pair.check((be, [x]) => be.softmax(x), [pair.up(masked, [2, 6])], TIGHT));
    });

    it('rope (rotate-half) at 1-based and large positions', async function () {
      let seed = 500;
      for (const [t, h, d, theta] of [[1, 1, 2, 10000], [3, 2, 8, 10000], [5, 8, 64, 10000], [4, 1, 256, 10000], [2, 3, 16, 500]]) {
        const positions = Int32Array.from({ length: t }, (_, i) => (seed % 2 ? 1 + i : 1000 + 7 * i));
        note('rope', await pair.check((be, [x]) => be.rope(x, positions, theta), [pair.rand([t, h, d], seed++)], 1e-9));
      }
    });

    it('embedding, concat, slice, reshape, transpose', async function () {
      let seed = 600;
      const table = pair.rand([11, 6], seed++);
      for (const ids of [Int32Array.of(0), Int32Array.of(10, 3, 3, 0, 7)]) {
        note('embedding', await pair.check((be, [tb]) => be.embedding(tb, ids), [table], 0));
      }
      for (const axis of [0, 1, 2]) {
        const shapes = [[2, 3, 4], [2, 3, 4], [2, 3, 4]].map((s) => { const c = [...s]; c[axis] = 1 + axis + (seed % 3); return c; });
        note('concat', await pair.check((be, ts) => be.concat(ts, axis), shapes.map((s) => pair.rand(s, seed++)), 0));
      }
      note('concat', await pair.check((be, ts) => be.concat(ts, 0), [pair.rand([3, 5], seed++)], 0));
      const x = pair.rand([5, 4, 3], seed++);
      for (const [axis, s, e] of [[0, 0, 5], [0, 2, 3], [1, 1, 4], [2, 2, 3], [0, 4, 5]]) {
        note('slice', await pair.check((be, [a]) => be.slice(a, axis, s, e), [x], 0));
      }
      note('reshape', await pair.check((be, [a]) => be.reshape(a, [20, 3]), [x], 0));
      note('reshape', await pair.check((be, [a]) => be.reshape(be.transpose(a, [2, 0, 1]), [3, 20]), [x], 0));
      for (const perm of [[0, 1, 2], [1, 0, 2], [2, 1, 0], [1, 2, 0]]) {
        note('transpose', await pair.check((be, [a]) => be.transpose(a, perm), [x], 0));
      }
      pair.subject.dispose([table[0], x[0]]);
    });

    it('patchEmbed (conv with kernel = stride = patch) → [N, O]', async function () {
      let seed = 700;
      for (const [c, s, p, o] of [[3, 4, 2, 5], [3, 28, 14, 8], [1, 9, 3, 1], [3, 40, 8, 16]]) {
        const e = await pair.check((be, [px, w, b]) => be.patchEmbed(px, w, b, p),
          [pair.rand([c, s, s], seed++), pair.rand([o, c, p, p], seed++), pair.rand([o], seed++)], TIGHT);
        note('patchEmbed', e);
      }
    });

    it('writeRows writes in place, is seen by later ops and by reshape views', async function () {
      const [dst] = pair.up(new Float32Array(6 * 2 * 3), [6, 2, 3]);
      const view = onnx.reshape(dst, [6, 6]);
      const rows = onnx.scale(onnx.upload(rand(12, 1), [2, 2, 3]), 2);           // pending source
      const before = onnx.scale(dst, 1);                                            // reads the old value
      onnx.writeRows(dst, rows, 3);
      const after = onnx.scale(dst, 1);
      onnx.writeRows(dst, onnx.upload(Float32Array.from({ length: 6 }, (_, i) => i + 1), [1, 2, 3]), 0);  // concrete source
      const expected = new Float32Array(36);
      expected.set(Float32Array.from(rand(12, 1), (v) => v * 2), 18);
      expect([...await onnx.read(before)]).to.deep.equal(new Array(36).fill(0));
      const afterData = await onnx.read(after);
      expect([...afterData]).to.deep.equal([...expected]);
      expected.set([1, 2, 3, 4, 5, 6], 0);
      expect([...await onnx.read(dst)]).to.deep.equal([...expected]);
      expect([...await onnx.read(view)]).to.deep.equal([...expected]);
      expect(() => onnx.writeRows(dst, onnx.zeros([4, 2, 3]), 3)).to.throw(/does not fit/);
    });

    it('records lazily: many ops, one run per read', async function () {
      const runs = onnx.stats.runs;
      let [x] = pair.rand([4, 8], 800);
      const w = onnx.upload(rand(8, 801), [8]);
      for (let i = 0; i < 20; i++) x = onnx.add(onnx.rmsNorm(x, w, 1e-6), x);
      expect(onnx.stats.runs).to.equal(runs);
      await onnx.read(x);
      expect(onnx.stats.runs).to.equal(runs + 1);
    });

    it('reports what it supports, rejects foreign tensors and use after dispose', function () {
      expect(onnx.supports('matmul')).to.equal(true);
      expect(onnx.supports('upload', 'bf16')).to.equal(true);
      expect(onnx.supports('matmul', 'f16')).to.equal(true);
      expectOwnershipChecks(onnx);
    });
  });

  // ── attention ───────────────────────────────────────────────────────────────
  describe('attention kernel vs reference', function () {
    const kernel = new AttendKernel('onnx');
    const refKernel = new ReferenceAttentionKernel();

    itAttentionGrid(async (tq, hq, hkv, d, cap, opts, seed) => {
      const q = pair.rand([tq, hq, d], seed), k = pair.rand([cap, hkv, d], seed + 1), v = pair.rand([cap, hkv, d], seed + 2);
      note('attention', await pair.check(
        (be, [a, b, c]) => (be === onnx ? kernel : refKernel).attend(be, a, b, c, opts),
        [q, k, v], 1e-10));
    });

    itFallsBackOnAnotherBackend(kernel);
  });

  // ── sessions, cache and disposal ────────────────────────────────────────────
  describe('session reuse and memory', function () {
    /** One decoder-like layer over a contiguous cache: the shape of Gemma's per-step graph. */
    function step(b: OnnxBackend, cache: ReturnType<ContiguousKvCacheStore['create']>, w: Tensor, x: Tensor, mask: AttentionMask): Tensor {
      const t = x.shape[0], live: Tensor[] = [];
      const keep = <T extends Tensor>(v: T) => { live.push(v); return v; };
      const positions = Int32Array.from({ length: t }, (_, i) => cache.length + i + 1);
      const h = keep(b.rmsNorm(x, keep(b.zeros([16])), 1e-6));
      const q = keep(b.rope(keep(b.reshape(keep(b.matmul(h, w, { transposeB: true })), [t, 4, 4])), positions, 10000));
      const k = keep(b.rope(keep(b.reshape(keep(b.slice(h, 1, 0, 8)), [t, 2, 4])), positions, 10000));
      const v = keep(b.reshape(keep(b.slice(h, 1, 8, 16)), [t, 2, 4]));
      cache.write(0, k, v);
      const a = keep(new AttendKernel('onnx').attend(b, q, cache.keys(0), cache.values(0), {
        scale: 0.5, mask, queryOffset: cache.length, kvLength: cache.length + t,
      }));
      cache.advance(t);
      const out = b.add(x, keep(b.reshape(a, [t, 16])));
      b.dispose(live);
      return out;
    }

    it('N identical decode steps build one session; handles do not grow', async function () {
      const b = new OnnxBackend();
      await b.init();
      const w = b.upload(rand(16 * 16, 5), [16, 16]);
      const store = new ContiguousKvCacheStore();
      const baseline = b.stats.liveTensors;
      for (let request = 0; request < 3; request++) {
        const cache = store.create(b, { layers: 1, kvHeads: 2, headDim: 4, capacity: 24 });
        const prompt = b.upload(rand(5 * 16, 10 + request), [5, 16]);
        const p = step(b, cache, w, prompt, { kind: 'prefixLm', prefixLength: 5 });
        await b.read(p);
        b.dispose([p, prompt]);
        const afterPrefill = b.stats.sessionsCreated;
        for (let i = 0; i < 12; i++) {
          const x = b.upload(rand(16, 100 + i), [1, 16]);
          const y = step(b, cache, w, x, { kind: 'prefixLm', prefixLength: 5 });
          await b.read(y);
          b.dispose([x, y]);
        }
        // Request 0 builds the prefill and the decode session; later requests build none.
        expect(b.stats.sessionsCreated - afterPrefill).to.equal(request === 0 ? 1 : 0);
        cache.dispose();
        expect(b.stats.liveTensors).to.equal(baseline);
        expect(b.pendingTensors).to.equal(0);
      }
      expect(b.stats.sessionsCreated).to.equal(2);
      await b.close();
    });

    it('the decode steps compute what the reference does', async function () {
      const ref = new ReferenceBackend();
      const store = new ContiguousKvCacheStore();
      const results: Float32Array[][] = [];
      for (const b of [onnx, ref] as TensorOps[]) {
        const out: Float32Array[] = [];
        const w = b.upload(rand(16 * 16, 5), [16, 16]);
        const cache = store.create(b, { layers: 1, kvHeads: 2, headDim: 4, capacity: 12 });
        const kernel = b === onnx ? new AttendKernel('onnx') : new ReferenceAttentionKernel();
        for (let i = 0; i < 8; i++) {
          const t = i === 0 ? 4 : 1;
          const x = b.upload(rand(t * 16, 40 + i), [t, 16]);
          const positions = Int32Array.from({ length: t }, (_, j) => cache.length + j + 1);
          const q = b.rope(b.reshape(b.matmul(x, w, { transposeB: true }), [t, 4, 4]), positions, 10000);
          cache.write(0, b.reshape(b.slice(x, 1, 0, 8), [t, 2, 4]), b.reshape(b.slice(x, 1, 8, 16), [t, 2, 4]));
          const a = kernel.attend(b, q, cache.keys(0), cache.values(0), {
            scale: 0.5, mask: { kind: 'prefixLm', prefixLength: 4 }, queryOffset: cache.length, kvLength: cache.length + t,
          });
          cache.advance(t);
          out.push(await b.read(a));
        }
        results.push(out);
        cache.dispose();
      }
      results[0].forEach((o, i) => {
        const c = compare(o, results[1][i]);
        expect(c.error, `step ${i}`).to.be.below(1e-10);
      });
    });

    it('device cuda without the CUDA provider fails with a one-line PaliGemmaError', async function () {
      const b = new OnnxBackend({ device: 'cuda' });
      try {
        await b.init();
        this.skip();                                   // the provider is installed here
      } catch (e) {
        expect(e).to.be.instanceOf(PaliGemmaError);
        expect((e as Error).message).to.match(/CUDA execution provider is not installed/).and.match(/ONNXRUNTIME_NODE_INSTALL=cuda12/);
        expect((e as Error).message).to.not.include('\n');
      }
      expect(() => new OnnxBackend({ device: 'tpu' })).to.throw(PaliGemmaError, /unknown device/);
    });

    it('registers as a plugin: backend onnx with attention kernel onnx', async function () {
      const registry = new PartRegistry();
      registry.load(onnxBackendPlugin);
      const backend = registry.get('backend', 'onnx');
      expect(backend.defaultAttention).to.equal('onnx');
      expect(registry.get('attention', 'onnx').create().name).to.equal('onnx');
      const b = await backend.create({ device: 'cpu' });
      expect(b.engine).to.equal('onnx (cpu)');
    });
  });

  // ── whole model, in memory ──────────────────────────────────────────────────
  type ModelSpec = ModelShape;

  function makeModel(b: TensorOps, spec: ModelSpec, seed: number): PaliGemmaModel {
    const weights = new Map<string, Tensor>();
    for (const [name, w] of randomWeightEntries(modelConfig(spec), seed)) weights.set(name, b.upload(w.data, w.shape));
    const attention = b instanceof OnnxBackend ? new AttendKernel('onnx') : new ReferenceAttentionKernel();
    return new PaliGemmaModel({ backend: b, attention, kvCacheStore: new ContiguousKvCacheStore() },
      { config: modelConfig(spec), weights, weightDtype: 'f32' });
  }

  function randomInputs(m: PaliGemmaModel): { pixels: PixelValues; ids: Int32Array } {
    const cfg = m.config, size = cfg.vision.imageSize;
    return {
      pixels: { data: rand(3 * size * size, 77), shape: [3, size, size] },
      ids: Int32Array.from([...new Array(cfg.numImageTokens).fill(cfg.imageTokenIndex), 2, 5, 9, 13, 4]),
    };
  }

  /** Compares an onnx run with a reference run; returns the worst relative logit difference. */
  function expectSameRun(got: Awaited<ReturnType<typeof greedyRun>>, ref: Awaited<ReturnType<typeof greedyRun>>): number {
    expect(relMaxDiff(got.vision, ref.vision)).to.be.below(1e-4);
    let worstRel = 0;
    got.logits.forEach((l, i) => { worstRel = Math.max(worstRel, relMaxDiff(l, ref.logits[i])); });
    note('model (rel max)', worstRel);
    expect(worstRel).to.be.below(1e-4);
    expect(got.tokens).to.deep.equal(ref.tokens);
    return worstRel;
  }

  describe('whole in-memory PaliGemma vs reference', function () {
    const specs: Array<[string, ModelSpec]> = [
      ['MQA (1 kv head)', { vision: { hidden: 32, inter: 64, layers: 2, heads: 4, patch: 4, image: 16 }, text: { hidden: 48, inter: 96, layers: 3, heads: 4, kvHeads: 1, headDim: 16, vocab: 300 } }],
      ['MHA', { vision: { hidden: 24, inter: 40, layers: 1, heads: 2, patch: 8, image: 24 }, text: { hidden: 32, inter: 64, layers: 2, heads: 4, kvHeads: 4, headDim: 8, vocab: 200 } }],
      ['GQA (2 groups, heads·headDim ≠ hidden)', { vision: { hidden: 16, inter: 32, layers: 2, heads: 2, patch: 4, image: 12 }, text: { hidden: 40, inter: 72, layers: 2, heads: 4, kvHeads: 2, headDim: 12, vocab: 250 } }],
    ];
    for (const [label, spec] of specs) {
      it(`${label}: same greedy tokens, logits within 1e-4 relative, one decode session`, async function () {
        const steps = 8;
        const b = new OnnxBackend();
        await b.init();
        const refModel = makeModel(new ReferenceBackend(), spec, 3);
        const { pixels, ids } = randomInputs(refModel);
        const ref = await greedyRun(refModel, pixels, ids, steps);
        const baseline = b.stats.liveTensors;
        const m = makeModel(b, spec, 3);
        const weightsLive = b.stats.liveTensors - baseline;
        expectSameRun(await greedyRun(m, pixels, ids, steps), ref);
        // vision-only graph, prefill graph, and one decode graph for every step after the first.
        expect(b.stats.sessionsCreated).to.equal(3);
        // A second request with the same prompt shape builds nothing new.
        await greedyRun(m, pixels, ids, steps);
        expect(b.stats.sessionsCreated).to.equal(3);
        expect(b.stats.liveTensors - baseline).to.equal(weightsLive);
        expect(b.pendingTensors).to.equal(0);
        await b.close();
      });
    }
  });

  // ── whole pipeline through createPipeline, on the tiny test checkpoints ─────
  describe('createPipeline on tiny checkpoints vs reference', function () {
    const specs = { mqaSpec, mhaSpec, gqaSpec };
    for (const [specName, spec] of Object.entries(specs)) {
      it(`${specName}: same greedy tokens and logits within 1e-4 relative as reference`, async function () {
        const dir = await makeTempDir('pg-onnx-');
        await buildTinyCheckpoint(dir, { ...spec(), dtype: 'F32' });
        const { data, width, height } = makeTestImage(40, 40, 3);
        const image = { data, width, height, channels: 3 as const };
        // Once the plugin is among the built-ins, registering it again would collide.
        const plugins = BUILTIN_PLUGINS.some((p) => p.name === onnxBackendPlugin.name) ? [] : [onnxBackendPlugin];
        const ref = await createPipeline({ model: dir });
        const mine = await createPipeline({ model: dir, backend: 'onnx', plugins });
        try {
          expect(mine.backendName).to.equal('onnx (cpu)');
          const a = await ref.generate(image, 'caption en', { maxNewTokens: 8 });
          const b = await mine.generate(image, 'caption en', { maxNewTokens: 8 });
          expect(b.tokens).to.deep.equal(a.tokens);
          // A second request of the same shape builds no session and leaves no handle behind.
          const backend = mine.backend as OnnxBackend;
          const built = backend.stats.sessionsCreated, live = backend.stats.liveTensors;
          expect(built).to.be.at.most(2);                     // prefill (with vision) + one decode graph
          expect((await mine.generate(image, 'caption en', { maxNewTokens: 8 })).tokens).to.deep.equal(a.tokens);
          expect(backend.stats.sessionsCreated).to.equal(built);
          expect(backend.stats.liveTensors).to.equal(live);
          expect(backend.pendingTensors).to.equal(0);
          const pixels = await mine.imageProcessor.process(image);
          const ids = Int32Array.from(promptIds(mine.tokenizer, 'caption en', mine.model.config.numImageTokens));
          expectSameRun(await greedyRun(mine.model, pixels, ids, 8), await greedyRun(ref.model, pixels, ids, 8));
        } finally {
          await ref.close();
          await mine.close();
        }
      });
    }
  });

  // ── 16-bit weights kept narrow, int8 weight-only quantization ───────────────
  describe('narrow weights (f16, bf16, int8)', function () {
    const plugins = () => (BUILTIN_PLUGINS.some((p) => p.name === onnxBackendPlugin.name) ? [] : [onnxBackendPlugin]);

    it('f16 is stored as 2 bytes per element and every op sees its exact values', async function () {
      const b = new OnnxBackend();
      await b.init();
      const vals = rand(65 * 33, 501, 2);
      const bits = f32ToF16(vals);
      const exact = f16ToF32(bits);
      const before = b.storedBytes;
      const w = b.upload(bits, [65, 33], 'f16');
      expect(w.dtype).to.equal('f16');
      expect(b.storedBytes - before).to.equal(65 * 33 * 2);
      expect([...await b.read(w)]).to.deep.equal([...exact]);
      const ref = new ReferenceBackend();
      const x = rand(5 * 33, 502);
      const got = await b.read(b.matmul(b.upload(x, [5, 33]), w, { transposeB: true }));
      const want = await ref.read(ref.matmul(ref.upload(x, [5, 33]), ref.upload(exact, [65, 33]), { transposeB: true }));
      expect(compare(got, want).error).to.be.below(1e-12);
      const ids = Int32Array.from([64, 0, 7, 7]);
      expect([...await b.read(b.embedding(w, ids))]).to.deep.equal([...await ref.read(ref.embedding(ref.upload(exact, [65, 33]), ids))]);
      expect([...await b.read(b.reshape(w, [33, 65]))]).to.deep.equal([...exact]);
      expect(() => b.writeRows(w, b.zeros([1, 33]), 0)).to.throw(/only f32/);
      await b.close();
    });

    // With halfGemvRows 0 no 2-D weight goes to the half memory (test/onnx-half-weights.test.ts
    // covers that path): these pin the plain f16 storage that 1-D 16-bit tensors still use.
    it('bf16 is kept as f16 where exact, with out-of-range elements patched exactly (embedding too)', async function () {
      const b = new OnnxBackend({ halfGemvRows: 0 });
      await b.init();
      const v = 40, h = 24;
      const vals = rand(v * h, 503, 0.1);
      // Values f16 cannot hold: tiny (below its subnormal precision), huge, and NaN-free extremes.
      vals[5] = 3e-7; vals[h + 1] = -1e-20; vals[3 * h + 7] = 1e30; vals[3 * h + 8] = -7e4; vals[v * h - 1] = 1.5e-9;
      const bits = f32ToBf16(vals);
      const exact = bf16ToF32(bits);
      const before = b.storedBytes;
      const t = b.upload(bits, [v, h], 'bf16');
      expect(t.dtype).to.equal('bf16');
      expect(b.storedBytes - before).to.equal(v * h * 2 + 5 * 12);           // f16 bits + 5 patches
      expect([...await b.read(t)]).to.deep.equal([...exact]);
      for (const ids of [[0, 1, 3, 39, 2], [3], [2], [39, 39]]) {
        const rows = await b.read(b.embedding(t, Int32Array.from(ids)));
        const want = new Float32Array(ids.length * h);
        ids.forEach((id, i) => want.set(exact.subarray(id * h, (id + 1) * h), i * h));
        expect([...rows]).to.deep.equal([...want]);
      }
      const x = rand(3 * h, 504);
      const ref = new ReferenceBackend();
      const got = await b.read(b.matmul(b.upload(x, [3, h]), t, { transposeB: true }));
      const want = await ref.read(ref.matmul(ref.upload(x, [3, h]), ref.upload(exact, [v, h]), { transposeB: true }));
      expect(compare(got, want).error).to.be.below(1e-12);
      // Mostly out-of-range values: widened to f32 instead.
      const tiny = new Float32Array(64).fill(1e-9);
      const before2 = b.storedBytes;
      const u = b.upload(f32ToBf16(tiny), [64], 'bf16');
      expect(b.storedBytes - before2).to.equal(64 * 4);
      expect([...await b.read(u)]).to.deep.equal([...bf16ToF32(f32ToBf16(tiny))]);
      await b.close();
    });

    it('a 16-bit weight over widenChunkBytes is multiplied in row chunks, bf16 patches added per chunk and per layout, same result', async function () {
      const v = 103, h = 40;
      const vals = rand(v * h, 505, 0.1);
      // Patches (values f16 cannot hold) on both sides of the chunk borders (rows of 8).
      // Some tiny (below f16's subnormals), some huge (above its 65504), so that a lost patch shows.
      [0, 7 * h + h - 1, 8 * h, 8 * h + 3, 50 * h + 9, v * h - 1].forEach((i, j) => { vals[i] = j % 2 ? 2e-7 : -7e4 * (j + 1); });
      const bits = f32ToBf16(vals);
      const exact = bf16ToF32(bits);
      const x = rand(3 * h, 506);
      const bias = rand(v, 507);
      const ref = new ReferenceBackend();
      const want = await ref.read(ref.matmul(ref.upload(x, [3, h]), ref.upload(exact, [v, h]), { transposeB: true, bias: ref.upload(bias, [v]) }));
      const nodes: number[] = [];
      for (const widenChunkBytes of [8 * h * 4, 1 << 30]) {
        const b = new OnnxBackend({ widenChunkBytes, halfGemvRows: 0 });
        await b.init();
        const w = b.upload(bits, [v, h], 'bf16');
        const got = await b.read(b.matmul(b.upload(x, [3, h]), w, { transposeB: true, bias: b.upload(bias, [v]) }));
        expect(compare(got, want).error, `chunk ${widenChunkBytes}`).to.be.below(1e-12);
        nodes.push(b.stats.lastGraph.nodes);
        // The same bits as a [K, N] weight, not transposed: patches land at (k, n) = (i / N, i % N).
        const plain = await b.read(b.matmul(b.upload(x, [3, h]), b.upload(bits, [h, v], 'bf16')));
        const plainWant = await ref.read(ref.matmul(ref.upload(x, [3, h]), ref.upload(exact, [h, v])));
        expect(compare(plain, plainWant).error, 'not transposed').to.be.below(1e-12);
        // Tied use: the same table gathered, then multiplied again in a later graph.
        const rows = await b.read(b.embedding(w, Int32Array.from([102, 8])));
        expect([...rows]).to.deep.equal([...exact.subarray(102 * h, 103 * h), ...exact.subarray(8 * h, 9 * h)]);
        await b.close();
      }
      expect(nodes[0], 'the chunked graph has a Slice/Cast/Gemm per chunk').to.be.above(nodes[1] + 2 * Math.floor(v / 8));
      expect(() => new OnnxBackend({ widenChunkBytes: 0 })).to.throw(PaliGemmaError, /widenChunkBytes/);
    });

    for (const dtype of ['F16', 'BF16'] as const) {
      it(`${dtype} tiny checkpoints: weights stay 16-bit, same greedy tokens and logits within 1e-5 relative as reference`, async function () {
        for (const spec of [mqaSpec, gqaSpec]) {
          const dir = await makeTempDir('pg-onnx-16-');
          await buildTinyCheckpoint(dir, { ...spec(), dtype });
          const ref = await createPipeline({ model: dir });
          const mine = await createPipeline({ model: dir, backend: 'onnx', plugins: plugins() });
          try {
            const backend = mine.backend as OnnxBackend;
            // Every weight at 2 bytes, as in the file (plus a few bf16 patches at 12 bytes each).
            const fileBytes = (await stat(join(dir, 'model.safetensors'))).size;
            expect(backend.storedBytes).to.be.below(fileBytes * 1.05);
            const { data, width, height } = makeTestImage(40, 40, 3);
            const pixels = await mine.imageProcessor.process({ data, width, height, channels: 3 });
            const ids = Int32Array.from(promptIds(mine.tokenizer, 'caption en', mine.model.config.numImageTokens));
            const worstRel = expectSameRun(await greedyRun(mine.model, pixels, ids, 8), await greedyRun(ref.model, pixels, ids, 8));
            expect(worstRel).to.be.below(1e-5);
            // The decode steps' products ran in gemv16, straight from the 16-bit bits.
            expect(backend.stats.halfGemvCalls).to.be.above(0);
          } finally {
            await ref.close();
            await mine.close();
          }
        }
      });
    }

    for (const [mode, worst] of [['int8', 5e-2], ['int4', 0.3]] as const) it(`${mode}: quantizes transposed matmul weights only, keeps embeddings float, logits close to reference`, async function () {
      const report: string[] = [];
      for (const [name, spec] of Object.entries({ mqaSpec, mhaSpec, gqaSpec })) {
        const dir = await makeTempDir('pg-onnx-int8-');
        await buildTinyCheckpoint(dir, { ...spec(), dtype: 'F32' });
        const ref = await createPipeline({ model: dir });
        const mine = await createPipeline({ model: dir, backend: 'onnx', plugins: plugins(), backendOptions: { quantize: mode } });
        try {
          const backend = mine.backend as OnnxBackend;
          expect(backend.engine).to.equal(`onnx (cpu, ${mode} weights)`);
          const { data, width, height } = makeTestImage(40, 40, 3);
          const pixels = await mine.imageProcessor.process({ data, width, height, channels: 3 });
          const ids = Int32Array.from(promptIds(mine.tokenizer, 'caption en', mine.model.config.numImageTokens));
          const a = await greedyRun(ref.model, pixels, ids, 8);
          const before = backend.storedBytes;
          const b = await greedyRun(mine.model, pixels, ids, 8);
          expect(backend.storedBytes).to.be.below(before);                 // f32 weights replaced by codes
          const agree = b.tokens.findIndex((t, i) => t !== a.tokens[i]);
          const same = agree < 0 ? 8 : agree;
          let maxAbs = 0, worstRel = 0;
          for (let i = 0; i < Math.max(1, same); i++) {
            worstRel = Math.max(worstRel, relMaxDiff(b.logits[i], a.logits[i]));
            for (let j = 0; j < a.logits[i].length; j++) maxAbs = Math.max(maxAbs, Math.abs(b.logits[i][j] - a.logits[i][j]));
          }
          report.push(`${name}: max |Δlogit| ${maxAbs.toExponential(2)} (rel ${worstRel.toExponential(2)}), greedy agree ${same}/8`);
          expect(worstRel).to.be.below(worst);
          // int8's rounding must not change the tiny checkpoints' greedy tokens.
          if (mode === 'int8') expect(same).to.equal(8);
          // The tied embedding was read by the embedding op first: it stays float.
          const table = (p: unknown) => [...(p as { checkpoint: { weights: Map<string, Tensor> } }).checkpoint.weights]
            .find(([k]) => k.endsWith('embed_tokens.weight'))![1];
          const emb = await backend.read(backend.embedding(table(mine), Int32Array.from([3])));
          const refEmb = await ref.backend.read(ref.backend.embedding(table(ref), Int32Array.from([3])));
          expect([...emb]).to.deep.equal([...refEmb]);
        } finally {
          await ref.close();
          await mine.close();
        }
      }
      console.log(`      ${mode} vs reference over 8 greedy steps:\n${report.map((r) => `        ${r}`).join('\n')}`);
    });
  });
});
