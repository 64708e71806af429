/**
 * The TensorFlow.js backend against the reference backend: every op on seeded random inputs
 * (each test also checks that TensorFlow.js holds no more tensors afterwards), the attention
 * kernel (every mask, GQA ratios 1/2/8, cache offsets, both matmul layouts), the KV cache write,
 * engine selection and the one-engine-per-process rule, whole tiny checkpoints through
 * createPipeline (greedy tokens and logits), and tensor leaks over 100 generations.
 */
import { checkCoreOps } from './support/core-op-checks.js';
import { AttendKernel } from '../src/attention/plain-attention-kernel.js';
import { expect } from 'chai';
import { createRequire } from 'node:module';
import { ReferenceAttentionKernel } from '../src/backends/reference/reference-attention-kernel.js';
import { ReferenceBackend } from '../src/backends/reference/reference-backend.js';
import { TfjsBackend } from '../src/backends/tfjs/tfjs-backend.js';
import { tfjsBackendPlugin } from '../src/backends/tfjs/tfjs-backend-module.js';
import { activeEngine, engineUsers, type TfjsEngineKind } from '../src/backends/tfjs/tfjs-engine.js';
import { BUILTIN_PLUGINS } from '../src/builtin-plugins.js';
import { compare } from '../src/conformance/compare.js';
import { THRESHOLDS } from '../src/conformance/op-case.js';
import { createPipeline } from '../src/create-pipeline.js';
import type { AttentionOptions } from '../src/interfaces/attention-kernel.js';
import { PaliGemmaError } from '../src/interfaces/errors.js';
import type { Tensor, TensorOps } from '../src/interfaces/tensor-backend.js';
import { ContiguousKvCacheStore } from '../src/kv-cache/contiguous-kv-cache.js';
import type { PaliGemmaPipeline } from '../src/paligemma-pipeline.js';
import { promptIds } from '../src/generation/prompt-format.js';
import { PartRegistry } from '../src/plugin/part-registry.js';
import {
  buildTinyCheckpoint, gqaSpec, makeTempDir, makeTestImage, mhaSpec, mqaSpec, type TinySpec,
} from './support/tiny-checkpoint.js';
import { itAttentionGrid, itFallsBackOnAnotherBackend } from './support/attention-grid.js';
import { BackendPair, expectOwnershipChecks, WorstErrors } from './support/backend-pair.js';
import { argmax, greedyRun, relMaxDiff } from './support/model-compare.js';
import { rand, sizeOf } from './support/seeded-values.js';

// ── helpers ─────────────────────────────────────────────────────────────────

/** Which engine auto-selection must pick on this machine: the best whose packages resolve. */
function expectedEngine(): TfjsEngineKind {
  const require = createRequire(import.meta.url);
  const has = (p: string) => { try { require.resolve(p); return true; } catch { return false; } };
  if (has('@tensorflow/tfjs-node-gpu')) return 'node-gpu';
  if (has('@tensorflow/tfjs-node')) return 'node';
  if (has('@tensorflow/tfjs-backend-wasm')) return 'wasm';
  return 'cpu';
}

/** The tfjs inputs are released after each test. */
type Pair = BackendPair<TfjsBackend>;

/** Worst normalized MSE seen per op, printed at the end. */
const worst = new WorstErrors();
const note = (op: string, e: number) => worst.note(op, e);

let tfjs: TfjsBackend;
let pair: Pair;
/** tf.memory().numTensors when a test starts. */
let baseline = 0;

const numTensors = () => tfjs.tf.memory().numTensors;

// Everything below shares one tfjs backend, opened and closed by this block's hooks only.
describe('TensorFlow.js backend', function () {
  before(async function () {
    tfjs = new TfjsBackend();
    await tfjs.init();
    pair = new BackendPair(tfjs, new ReferenceBackend());
  });
  after(async function () {
    worst.print(`      ${tfjs.engine} vs reference, worst normalized MSE per op:`, 16);
    await tfjs?.close();
  });

  /** Each op test must leave TensorFlow.js holding exactly what it held before. */
  function leakFree(): void {
    beforeEach(function () { baseline = numTensors(); });
    afterEach(function () {
      pair.release();
      if (this.currentTest?.state === 'passed') expect(numTensors(), 'tensors left behind').to.equal(baseline);
    });
  }

  // ── ops ─────────────────────────────────────────────────────────────────────
  describe('tfjs backend: ops vs reference', function () {
    leakFree();

    it('matmul (plain, transposeB, bias; odd and length-1 shapes)', async function () {
      const cases: Array<[number, number, number]> = [[1, 1, 1], [1, 7, 5], [3, 17, 1], [13, 31, 29], [17, 31, 29], [64, 65, 33], [2, 256, 300], [40, 300, 7]];
      let seed = 1;
      for (const [m, k, n] of cases) {
        for (const transposeB of [false, true]) {
          for (const withBias of [false, true]) {
            const a = pair.rand([m, k], seed++);
            const b = pair.rand(transposeB ? [n, k] : [k, n], seed++);
            const bias = pair.rand([n], seed++);
            note('matmul', await pair.check((be, [x, y, z]) => be.matmul(x, y, { transposeB, bias: withBias ? z : undefined }), [a, b, bias], THRESHOLDS.matmul));
            // A transposed operand that an op made (not an upload) takes the other path.
            if (transposeB) {
              note('matmul', await pair.check((be, [x, y]) => {
                const y2 = be.scale(y, 1);
                const out = be.matmul(x, y2, { transposeB });
                be.dispose(y2);
                return out;
              }, [a, b], THRESHOLDS.matmul));
            }
          }
        }
      }
    });

    it('an upload used as a transposed operand is stored transposed and still reads as itself', async function () {
      const w = pair.rand([9, 5], 50);
      const before = tfjs.stats.transposedUploads;
      note('matmul', await pair.check((be, [x, y]) => be.matmul(x, y, { transposeB: true }), [pair.rand([20, 5], 51), w], THRESHOLDS.matmul));
      if (tfjs.engineKind === 'wasm') expect(tfjs.stats.transposedUploads).to.equal(before + 1);
      // Every other use sees the original layout: read, embedding, layout ops, matmul again.
      note('matmul', await pair.check((be, [y]) => be.scale(y, 1), [w], THRESHOLDS.exact));
      note('embedding', await pair.check((be, [y]) => be.embedding(y, Int32Array.of(8, 0, 3)), [w], THRESHOLDS.exact));
      note('matmul', await pair.check((be, [x, y]) => be.matmul(x, y), [pair.rand([3, 9], 52), w], THRESHOLDS.matmul));
      note('transpose', await pair.check((be, [y]) => be.transpose(y, [1, 0]), [w], THRESHOLDS.exact));
      note('matmul', await pair.check((be, [x, y]) => be.matmul(x, y, { transposeB: true }), [pair.rand([1, 5], 53), w], THRESHOLDS.matmul));
      expect([...await tfjs.read(w[0])]).to.deep.equal([...await pair.ref.read(w[1])]);
      // The same tensor on both sides of one matmul.
      const sq = pair.rand([6, 6], 54);
      note('matmul', await pair.check((be, [x]) => be.matmul(x, x, { transposeB: true }), [sq], THRESHOLDS.matmul));
    });

    it('add and mul, same shape and broadcast over leading dims', async function () {
      const cases: Array<[number[], number[]]> = [[[1], [1]], [[5, 3], [5, 3]], [[7, 3], [3]], [[2, 3, 5], [3, 5]], [[4, 1, 9], [9]], [[3, 2, 4], [3, 2, 4]], [[2, 3, 5], [5]]];
      let seed = 100;
      for (const [sa, sb] of cases) {
        for (const op of ['add', 'mul'] as const) {
          note(op, await pair.check((be, [x, y]) => be[op](x, y), [pair.rand(sa, seed++), pair.rand(sb, seed++)], THRESHOLDS.elementwise));
        }
      }
      const [a] = pair.rand([4, 3], 1);
      const [b] = pair.rand([4], 2);
      expect(() => tfjs.add(a, b)).to.throw(/does not broadcast/);
    });

    it('unary, reduce, row broadcast, and the defaults (src/ops, attendFromCore) on its core ops', async function () {
      for (const [op, e] of Object.entries(await checkCoreOps(pair.subject, 1e-9))) note(op, e);
    });

    it('scale and tanh-GELU (not the erf form)', async function () {
      let seed = 200;
      for (const shape of [[1], [3, 5], [2, 3, 129]]) {
        note('scale', await pair.check((be, [x]) => be.scale(x, 0.37), [pair.rand(shape, seed++, 4)], THRESHOLDS.elementwise));
        note('scale', await pair.check((be, [x]) => be.scale(x, Math.sqrt(2048)), [pair.rand(shape, seed++, 4)], THRESHOLDS.elementwise));
        // Length 1 stays out of GELU's far negative tail, where one float32 cancellation dominates.
        note('gelu', await pair.check((be, [x]) => be.gelu(x), [pair.rand(shape, seed++, sizeOf(shape) === 1 ? 1 : 6)], THRESHOLDS.gelu));
      }
      // Where tanh- and erf-GELU differ most (|x| ≈ 2): pinned to the tanh form within 1e-6.
      const [x] = pair.up(Float32Array.of(-2.5, -2, -1, 0, 1, 2, 2.5), [7]);
      const y = tfjs.gelu(x);
      const got = await tfjs.read(y);
      tfjs.dispose(y);
      [-2.5, -2, -1, 0, 1, 2, 2.5].forEach((v, i) => {
        expect(got[i]).to.be.closeTo(0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3))), 1e-6);
      });
    });

    it('layerNorm and rmsNorm over the last axis', async function () {
      let seed = 300;
      for (const shape of [[1, 1], [1, 8], [5, 33], [2, 3, 64], [7, 1152]]) {
        const d = shape[shape.length - 1];
        const x = pair.rand(shape, seed++, 3), w = pair.rand([d], seed++), b = pair.rand([d], seed++);
        note('layerNorm', await pair.check((be, [a, c, e]) => be.layerNorm(a, c, e, 1e-6), [x, w, b], THRESHOLDS.reduction));
        note('rmsNorm', await pair.check((be, [a, c]) => be.rmsNorm(a, c, 1e-6), [pair.rand(shape, seed++, 3), pair.rand([d], seed++)], THRESHOLDS.reduction));
      }
      // Offsets far larger than the spread: the centred variance must not cancel badly.
      const big = Float32Array.from(rand(64, 7), (v) => 1000 + v);
      note('layerNorm', await pair.check((be, [a, c, e]) => be.layerNorm(a, c, e, 1e-5), [pair.up(big, [2, 32]), pair.rand([32], 8), pair.rand([32], 9)], THRESHOLDS.reduction));
    });

    it('softmax, including large-magnitude logits and -Infinity', async function () {
      let seed = 400;
      for (const [shape, scale] of [[[1, 1], 1], [[3, 7], 1], [[2, 5, 257], 10], [[4, 300], 1e4], [[1, 1000], 80], [[2, 9], 1e30]] as Array<[number[], number]>) {
        note('softmax', await pair.check((be, [x]) => be.softmax(x), [pair.rand(shape, seed++, scale)], THRESHOLDS.reduction));
      }
      const masked = rand(12, 9);
      masked[1] = -Infinity; masked[7] = -Infinity;
      note('softmax', await pair.check((be, [x]) => be.softmax(x), [pair.up(masked, [2, 6])], THRESHOLDS.reduction));
    });

    it('rope (rotate-half) at 1-based and large positions', async function () {
      let seed = 500;
      for (const [t, h, d, theta] of [[1, 1, 2, 10000], [3, 2, 8, 10000], [5, 8, 64, 10000], [4, 1, 256, 10000], [2, 3, 16, 500]]) {
        const positions = Int32Array.from({ length: t }, (_, i) => (seed % 2 ? 1 + i : 1000 + 7 * i));
        note('rope', await pair.check((be, [x]) => be.rope(x, positions, theta), [pair.rand([t, h, d], seed++)], THRESHOLDS.rope));
        // Same positions again (the cached tables) on other data.
        note('rope', await pair.check((be, [x]) => be.rope(x, positions, theta), [pair.rand([t, h, d], seed++)], THRESHOLDS.rope));
      }
    });

    it('embedding, concat, slice, reshape, transpose', async function () {
      let seed = 600;
      const table = pair.rand([11, 6], seed++);
      for (const ids of [Int32Array.of(0), Int32Array.of(10, 3, 3, 0, 7)]) {
        note('embedding', await pair.check((be, [tb]) => be.embedding(tb, ids), [table], THRESHOLDS.exact));
      }
      expect(() => tfjs.embedding(table[0], Int32Array.of(11))).to.throw(/outside the vocabulary/);
      for (const axis of [0, 1, 2]) {
        const shapes = [[2, 3, 4], [2, 3, 4], [2, 3, 4]].map((s, i) => { const c = [...s]; c[axis] = 1 + i; return c; });
        note('concat', await pair.check((be, ts) => be.concat(ts, axis), shapes.map((s) => pair.rand(s, seed++)), THRESHOLDS.exact));
      }
      note('concat', await pair.check((be, ts) => be.concat(ts, 0), [pair.rand([3, 5], seed++)], THRESHOLDS.exact));
      const x = pair.rand([5, 4, 3], seed++);
      for (const [axis, s, e] of [[0, 0, 5], [0, 2, 3], [1, 1, 4], [2, 2, 3], [0, 4, 5], [1, 0, 1]]) {
        note('slice', await pair.check((be, [a]) => be.slice(a, axis, s, e), [x], THRESHOLDS.exact));
      }
      note('reshape', await pair.check((be, [a]) => be.reshape(a, [20, 3]), [x], THRESHOLDS.exact));
      note('reshape', await pair.check((be, [a]) => {
        const t = be.transpose(a, [2, 0, 1]);
        const out = be.reshape(t, [3, 20]);
        be.dispose(t);
        return out;
      }, [x], THRESHOLDS.exact));
      for (const perm of [[0, 1, 2], [1, 0, 2], [2, 1, 0], [1, 2, 0]]) {
        note('transpose', await pair.check((be, [a]) => be.transpose(a, perm), [x], THRESHOLDS.exact));
      }
    });

    it('reshape views share storage: disposing either handle is safe', async function () {
      const [x] = pair.rand([4, 6], 650);
      const v = tfjs.reshape(x, [6, 4]);
      tfjs.dispose(x);
      expect((await tfjs.read(v)).length).to.equal(24);
      tfjs.dispose(v);
      tfjs.dispose(v);                                       // twice is harmless
    });

    it('patchEmbed (kernel = stride = patch) → [N, O]', async function () {
      let seed = 700;
      for (const [c, s, p, o] of [[3, 4, 2, 5], [3, 28, 14, 8], [1, 9, 3, 1], [3, 40, 8, 16], [3, 16, 4, 48]]) {
        note('patchEmbed', await pair.check((be, [px, w, b]) => be.patchEmbed(px, w, b, p),
          [pair.rand([c, s, s], seed++), pair.rand([o, c, p, p], seed++), pair.rand([o], seed++)], THRESHOLDS.matmul));
      }
    });

    it('writeRows writes in place, is seen by reshape views and not by earlier results', async function () {
      const dst = tfjs.zeros([6, 2, 3]);
      const view = tfjs.reshape(dst, [6, 6]);
      const src = tfjs.upload(rand(12, 1), [2, 2, 3]);
      const rows = tfjs.scale(src, 2);
      const before = tfjs.scale(dst, 1);
      tfjs.writeRows(dst, rows, 3);
      const after = tfjs.scale(dst, 1);
      const first = tfjs.upload(Float32Array.from({ length: 6 }, (_, i) => i + 1), [1, 6]);
      tfjs.writeRows(view, first, 0);                              // through the view, other row shape
      const last = tfjs.upload(Float32Array.from({ length: 6 }, (_, i) => -i), [1, 2, 3]);
      tfjs.writeRows(dst, last, 5);                                // the last row
      const expected = new Float32Array(36);
      expected.set(Float32Array.from(rand(12, 1), (v) => v * 2), 18);
      expect([...await tfjs.read(before)]).to.deep.equal(new Array(36).fill(0));
      expect([...await tfjs.read(after)]).to.deep.equal([...expected]);
      expected.set([1, 2, 3, 4, 5, 6], 0);
      expected.set([-0, -1, -2, -3, -4, -5], 30);
      expect([...await tfjs.read(dst)]).to.deep.equal([...expected]);
      expect([...await tfjs.read(view)]).to.deep.equal([...expected]);
      const tooMany = tfjs.zeros([4, 2, 3]);
      expect(() => tfjs.writeRows(dst, tooMany, 3)).to.throw(/does not fit/);
      // The whole buffer at once.
      const whole = tfjs.upload(rand(36, 2), [6, 2, 3]);
      tfjs.writeRows(dst, whole, 0);
      expect([...await tfjs.read(view)]).to.deep.equal([...rand(36, 2)]);
      tfjs.dispose([dst, view, src, rows, before, after, first, last, whole, tooMany]);
    });

    it('reports what it supports; rejects 16-bit uploads, foreign tensors, use after dispose', function () {
      expect(tfjs.supports('matmul')).to.equal(true);
      expect(tfjs.supports('upload', 'bf16')).to.equal(false);
      expect(tfjs.supports('upload', 'f16')).to.equal(false);
      expect(() => tfjs.upload(new Uint16Array(2), [2], 'bf16')).to.throw(/only f32/);
      expectOwnershipChecks(tfjs);
    });
  });

  // ── attention ───────────────────────────────────────────────────────────────
  describe('tfjs attention kernel vs reference', function () {
    leakFree();
    const kernel = new AttendKernel('tfjs');
    const refKernel = new ReferenceAttentionKernel();
    let other: TfjsBackend;                                 // the other matmul layout, same engine

    before(async function () {
      other = new TfjsBackend({ batchedAttention: true });
      await other.init();
    });
    after(async function () { await other?.close(); });

    itAttentionGrid(async (tq, hq, hkv, d, cap, opts, seed) => {
      const data = [rand(tq * hq * d, seed), rand(cap * hkv * d, seed + 1), rand(cap * hkv * d, seed + 2)];
      const shapes = [[tq, hq, d], [cap, hkv, d], [cap, hkv, d]];
      for (const be of [tfjs, other]) {
        const inputs = data.map((x, i) => [be.upload(x, shapes[i]), pair.ref.upload(x, shapes[i])] as [Tensor, Tensor]);
        const e = await pair.check(
          (b, [a, k, v]) => (b instanceof TfjsBackend ? kernel : refKernel).attend(b, a, k, v, opts),
          inputs, THRESHOLDS.matmul, be);
        note(be === tfjs ? 'attention' : 'attention (batched)', e);
        be.dispose(inputs.map((p) => p[0]));
      }
    });

    itFallsBackOnAnotherBackend(kernel);

    it('a decode loop over a contiguous KV cache matches the reference', async function () {
      const store = new ContiguousKvCacheStore();
      const results: Float32Array[][] = [];
      for (const b of [tfjs, pair.ref] as TensorOps[]) {
        const out: Float32Array[] = [];
        const w = b.upload(rand(16 * 16, 5), [16, 16]);
        const cache = store.create(b, { layers: 1, kvHeads: 2, headDim: 4, capacity: 12 });
        const k = b === tfjs ? kernel : refKernel;
        for (let i = 0; i < 8; i++) {
          const t = i === 0 ? 4 : 1;
          const live: Tensor[] = [];
          const keep = <T extends Tensor>(x: T) => { live.push(x); return x; };
          const x = keep(b.upload(rand(t * 16, 40 + i), [t, 16]));
          const positions = Int32Array.from({ length: t }, (_, j) => cache.length + j + 1);
          const q = keep(b.rope(keep(b.reshape(keep(b.matmul(x, w, { transposeB: true })), [t, 4, 4])), positions, 10000));
          cache.write(0, keep(b.reshape(keep(b.slice(x, 1, 0, 8)), [t, 2, 4])), keep(b.reshape(keep(b.slice(x, 1, 8, 16)), [t, 2, 4])));
          const a = keep(k.attend(b, q, cache.keys(0), cache.values(0), {
            scale: 0.5, mask: { kind: 'prefixLm', prefixLength: 4 }, queryOffset: cache.length, kvLength: cache.length + t,
          }));
          cache.advance(t);
          out.push(await b.read(a));
          b.dispose(live);
        }
        results.push(out);
        cache.dispose();
        b.dispose(w);
      }
      results[0].forEach((o, i) => {
        const c = compare(o, results[1][i]);
        note('attention', c.error);
        expect(c.error, `step ${i}`).to.be.below(THRESHOLDS.matmul);
      });
    });
  });

  // ── engine selection ────────────────────────────────────────────────────────
  describe('tfjs backend: engine selection', function () {
    it(`auto-selection picks the best installed engine (here: ${expectedEngine()}) and reports it`, async function () {
      const want = expectedEngine();
      expect(tfjs.engineKind).to.equal(want);
      expect(tfjs.engine).to.equal(`tfjs (${want})`);
      expect(tfjs.tf.getBackend()).to.equal(want === 'node' || want === 'node-gpu' ? 'tensorflow' : want);
      expect(new TfjsBackend().engine).to.equal('tfjs (not started)');
      console.log(`      engine: ${tfjs.engine}`);
    });

    it('a forced engine that is not installed fails with a one-line PaliGemmaError naming the package', async function () {
      const missing = (['node-gpu', 'node'] as const).filter((k) => {
        try { createRequire(import.meta.url).resolve(`@tensorflow/tfjs-${k}`); return false; } catch { return true; }
      });
      if (missing.length === 0) this.skip();
      // With a tfjs backend open, another engine is refused as a conflict before any import, so
      // each is asked for with no tfjs backend open.
      for (const kind of missing) {
        const err = await startAlone(new TfjsBackend({ engine: kind }));
        expect(err).to.be.instanceOf(PaliGemmaError);
        expect(err!.message).to.include(`@tensorflow/tfjs-${kind}`).and.include('npm install');
        expect(err!.message).to.not.include('\n');
      }
      const cuda = await startAlone(new TfjsBackend({ device: 'cuda' }));
      if (missing.includes('node-gpu')) expect(cuda?.message).to.include('@tensorflow/tfjs-node-gpu');
    });

    it('rejects unknown engines and devices, and engine/device contradictions', function () {
      expect(() => new TfjsBackend({ engine: 'webgl' as TfjsEngineKind })).to.throw(PaliGemmaError, /unknown engine 'webgl'/);
      expect(() => new TfjsBackend({ device: 'tpu' })).to.throw(PaliGemmaError, /unknown device/);
      expect(() => new TfjsBackend({ engine: 'wasm', device: 'cuda' })).to.throw(PaliGemmaError, /does not run on device/);
    });

    it('one engine per process: a different engine fails clearly while a tfjs backend is open', async function () {
      const other: TfjsEngineKind = tfjs.engineKind === 'cpu' ? 'wasm' : 'cpu';
      const b = new TfjsBackend({ engine: other });
      let err: unknown;
      try { await b.init(); } catch (e) { err = e; }
      expect(err).to.be.instanceOf(PaliGemmaError);
      expect((err as PaliGemmaError).code).to.equal('engine_conflict');
      expect((err as Error).message).to.include(`engine '${other}'`).and.include(`'${tfjs.engineKind}'`).and.not.include('\n');
      // The same engine, or no preference, joins the running one.
      const same = new TfjsBackend({ engine: tfjs.engineKind });
      await same.init();
      const auto = new TfjsBackend();
      await auto.init();
      expect(auto.engine).to.equal(tfjs.engine);
      expect(activeEngine()?.kind).to.equal(tfjs.engineKind);
      await same.close();
      await auto.close();
      expect(() => same.zeros([1])).to.throw(/after close/);
    });

    it('wasm: allocations past the heap limit throw instead of corrupting the heap', async function () {
      if (tfjs.engineKind !== 'wasm') this.skip();
      const start = numTensors();
      const b = new TfjsBackend({ wasmHeapLimitBytes: tfjs.tf.memory().numBytes + 4096 });
      await b.init();
      const small = b.upload(rand(256, 1), [16, 16]);                      // 1 KiB: fits
      for (const attempt of [() => b.upload(rand(1024, 2), [1024]), () => b.zeros([32, 32]),
        () => b.concat([small, small, small, small], 0)]) {
        let err: unknown;
        try { attempt(); } catch (e) { err = e; }
        expect(err).to.be.instanceOf(PaliGemmaError);
        expect((err as PaliGemmaError).code).to.equal('out_of_memory');
        expect((err as Error).message).to.include('4 GiB').and.include('tfjs-node').and.not.include('\n');
      }
      await b.close();
      expect(numTensors()).to.equal(start);
    });

    it('close() releases every tensor the backend still holds', async function () {
      const start = numTensors();
      const b = new TfjsBackend();
      await b.init();
      const x = b.upload(rand(8, 1), [2, 4]);
      b.reshape(b.gelu(x), [8]);
      expect(numTensors()).to.equal(start + 3);
      await b.close();
      expect(numTensors()).to.equal(start);
    });

    it('registers as a plugin: backend tfjs with attention kernel tfjs', async function () {
      const registry = new PartRegistry();
      registry.load(tfjsBackendPlugin);
      const backend = registry.get('backend', 'tfjs');
      expect(backend.defaultAttention).to.equal('tfjs');
      expect(registry.get('attention', 'tfjs').create().name).to.equal('tfjs');
      const b = await backend.create({});
      await b.init?.();
      expect(b.engine).to.equal(tfjs.engine);
      await b.close?.();
    });
  });

  /** Closes the shared backend (so no tfjs backend is open); resumeShared() starts a fresh one. */
  async function suspendShared(): Promise<void> {
    pair.release();
    await tfjs.close();
    expect(engineUsers()).to.equal(0);
  }

  async function resumeShared(): Promise<void> {
    tfjs = new TfjsBackend();
    await tfjs.init();
    pair = new BackendPair(tfjs, pair.ref);
  }

  /** Runs `b.init()` with no other tfjs backend open; returns the error it threw, if any. */
  async function startAlone(b: TfjsBackend): Promise<Error | undefined> {
    await suspendShared();
    let err: Error | undefined;
    try { await b.init(); } catch (e) { err = e as Error; }
    await b.close();
    await resumeShared();
    return err;
  }

  // ── whole checkpoints through createPipeline ────────────────────────────────
  /** The plugin list createPipeline needs for 'tfjs' (none once it is built in). */
  const PLUGINS = BUILTIN_PLUGINS.some((p) => p.name === tfjsBackendPlugin.name) ? [] : [tfjsBackendPlugin];
  const PROMPT = 'caption en';
  const IMAGE = makeTestImage(40, 40, 3);

  /** Vision → prompt → prefill → greedy decode at the model level, returning every step's logits. */
  async function greedyLogits(pipe: PaliGemmaPipeline, steps: number): Promise<{ tokens: number[]; logits: Float32Array[]; vision: Float32Array }> {
    const m = pipe.model;
    const pixels = await pipe.imageProcessor.process(IMAGE);
    const ids = Int32Array.from(promptIds(pipe.tokenizer, PROMPT, m.config.numImageTokens));
    return greedyRun(m, pixels, ids, steps);
  }

  describe('tfjs backend: tiny checkpoints through createPipeline vs reference', function () {
    const specs: Array<[string, TinySpec]> = [
      ['MQA (1 kv head, tied head)', mqaSpec()],
      ['MHA (tied head)', mhaSpec()],
      ['GQA (2 kv groups, heads·headDim ≠ hidden)', gqaSpec()],
      ['MQA, untied head, stored as BF16', { ...mqaSpec(), includeLmHead: true, dtype: 'BF16', seed: 7 }],
    ];
    for (const [label, spec] of specs) {
      it(`${label}: same greedy tokens and logits within 1e-4 relative`, async function () {
        const dir = await makeTempDir('pg-tfjs-');
        await buildTinyCheckpoint(dir, spec);
        const ref = await createPipeline({ model: dir });
        const mine = await createPipeline({ model: dir, backend: 'tfjs', plugins: PLUGINS });
        try {
          expect(mine.backendName).to.equal(tfjs.engine);
          const start = numTensors();
          const steps = 8;
          const want = await greedyLogits(ref, steps);
          const got = await greedyLogits(mine, steps);
          expect(relMaxDiff(got.vision, want.vision)).to.be.below(1e-4);
          let worstRel = 0;
          got.logits.forEach((l, i) => { worstRel = Math.max(worstRel, relMaxDiff(l, want.logits[i])); });
          note('model (rel max)', worstRel);
          expect(worstRel).to.be.below(1e-4);
          expect(got.tokens).to.deep.equal(want.tokens);
          // The user-facing path agrees too.
          const [a, b] = [await ref.generate(IMAGE, PROMPT, { maxNewTokens: 6 }), await mine.generate(IMAGE, PROMPT, { maxNewTokens: 6 })];
          expect(b.tokens).to.deep.equal(a.tokens);
          expect(b.text).to.equal(a.text);
          expect(numTensors()).to.equal(start);
        } finally {
          await ref.close();
          await mine.close();
        }
      });
    }
  });

  // ── the plain JavaScript engine ─────────────────────────────────────────────
  describe('tfjs backend: the cpu engine (plain JavaScript kernels), started after the first closed', function () {
    let cpu: TfjsBackend;
    let cpuPair: Pair;

    before(async function () {
      await suspendShared();
      cpu = new TfjsBackend({ engine: 'cpu' });
      await cpu.init();
      cpuPair = new BackendPair(cpu, pair.ref);
    });
    after(async function () {
      cpuPair?.release();
      await cpu?.close();
      await resumeShared();
      expect(tfjs.engineKind).to.equal(expectedEngine());
    });

    it('reports tfjs (cpu) and refuses another engine while open', async function () {
      expect(cpu.engine).to.equal('tfjs (cpu)');
      expect(cpu.tf.getBackend()).to.equal('cpu');
      if (expectedEngine() !== 'cpu') {
        let err: unknown;
        try { await new TfjsBackend({ engine: expectedEngine() }).init(); } catch (e) { err = e; }
        expect((err as PaliGemmaError)?.code).to.equal('engine_conflict');
      }
    });

    it('ops and attention match the reference; nothing is left behind', async function () {
      const start = cpu.tf.memory().numTensors;
      let seed = 3000;
      for (const [m, k, n] of [[1, 7, 5], [17, 31, 29]]) {
        for (const transposeB of [false, true]) {
          const a = cpuPair.rand([m, k], seed++), b = cpuPair.rand(transposeB ? [n, k] : [k, n], seed++), bias = cpuPair.rand([n], seed++);
          note('cpu: matmul', await cpuPair.check((be, [x, y, z]) => be.matmul(x, y, { transposeB, bias: z }), [a, b, bias], THRESHOLDS.matmul));
        }
      }
      const x = cpuPair.rand([3, 2, 16], seed++, 3), w = cpuPair.rand([16], seed++), bb = cpuPair.rand([16], seed++);
      note('cpu: gelu', await cpuPair.check((be, [t]) => be.gelu(t), [x], THRESHOLDS.gelu));
      note('cpu: layerNorm', await cpuPair.check((be, [t, u, v]) => be.layerNorm(t, u, v, 1e-6), [x, w, bb], THRESHOLDS.reduction));
      note('cpu: rmsNorm', await cpuPair.check((be, [t, u]) => be.rmsNorm(t, u, 1e-6), [x, w], THRESHOLDS.reduction));
      note('cpu: softmax', await cpuPair.check((be, [t]) => be.softmax(t), [cpuPair.rand([4, 300], seed++, 1e4)], THRESHOLDS.reduction));
      note('cpu: rope', await cpuPair.check((be, [t]) => be.rope(t, Int32Array.of(1, 2, 900), 10000), [x], THRESHOLDS.rope));
      note('cpu: patchEmbed', await cpuPair.check((be, [p, q, r]) => be.patchEmbed(p, q, r, 4),
        [cpuPair.rand([3, 8, 8], seed++), cpuPair.rand([5, 3, 4, 4], seed++), cpuPair.rand([5], seed++)], THRESHOLDS.matmul));
      const kernel = new AttendKernel('tfjs'), refKernel = new ReferenceAttentionKernel();
      for (const [hq, hkv] of [[4, 4], [4, 2], [8, 1]]) {
        const q = cpuPair.rand([3, hq, 8], seed++), k = cpuPair.rand([10, hkv, 8], seed++), v = cpuPair.rand([10, hkv, 8], seed++);
        const opts: AttentionOptions = { scale: 8 ** -0.5, mask: { kind: 'prefixLm', prefixLength: 2 }, queryOffset: 4, kvLength: 7 };
        note('cpu: attention', await cpuPair.check((be, [a, b, c]) => (be instanceof TfjsBackend ? kernel : refKernel).attend(be, a, b, c, opts), [q, k, v], THRESHOLDS.matmul));
      }
      // Host arrays stay the caller's: the cpu engine would otherwise adopt them as storage.
      const host = Float32Array.of(1, 2, 3);
      const t = cpu.upload(host, [3]);
      host[0] = 99;
      const back = await cpu.read(t);
      back[1] = 99;
      expect([...await cpu.read(t)]).to.deep.equal([1, 2, 3]);
      cpu.dispose(t);
      cpuPair.release();
      expect(cpu.tf.memory().numTensors).to.equal(start);
    });

    it('a tiny checkpoint through createPipeline gives the reference tokens and logits', async function () {
      const dir = await makeTempDir('pg-tfjs-cpu-');
      await buildTinyCheckpoint(dir, gqaSpec());
      const ref = await createPipeline({ model: dir });
      const mine = await createPipeline({ model: dir, backend: 'tfjs', backendOptions: { engine: 'cpu' }, plugins: PLUGINS });
      try {
        expect(mine.backendName).to.equal('tfjs (cpu)');
        const want = await greedyLogits(ref, 6);
        const got = await greedyLogits(mine, 6);
        let worstRel = 0;
        got.logits.forEach((l, i) => { worstRel = Math.max(worstRel, relMaxDiff(l, want.logits[i])); });
        note('cpu: model (rel max)', worstRel);
        expect(worstRel).to.be.below(1e-4);
        expect(got.tokens).to.deep.equal(want.tokens);
      } finally {
        await ref.close();
        await mine.close();
      }
    });
  });

  // ── leaks ───────────────────────────────────────────────────────────────────
  describe('tfjs backend: no tensor leaks across generations', function () {
    let pipe: PaliGemmaPipeline;
    let beforeLoad = 0;

    before(async function () {
      const dir = await makeTempDir('pg-tfjs-leak-');
      await buildTinyCheckpoint(dir, { ...mqaSpec(), includeLmHead: true });
      beforeLoad = numTensors();
      pipe = await createPipeline({ model: dir, backend: 'tfjs', plugins: PLUGINS });
    });

    it('tf.memory().numTensors is the same after 1 and after 100 generations (maxNewTokens 4)', async function () {
      const tf = tfjs.tf;
      const loaded = tf.memory().numTensors;
      await pipe.generate(IMAGE, PROMPT, { maxNewTokens: 4 });                       // first use: weights settle
      const settled = tf.memory();
      expect(settled.numTensors, 'weights only after one generation').to.equal(loaded);
      const t0 = performance.now();
      let generated = 0;
      for (let i = 0; i < 100; i++) {
        const r = await pipe.generate(makeTestImage(40, 40, i), PROMPT, { maxNewTokens: 4 });
        generated += r.tokens.length;
        if (i === 0 || i === 49) expect(tf.memory().numTensors, `after generation ${i + 1}`).to.equal(loaded);
      }
      const ms = (performance.now() - t0) / 100;
      const end = tf.memory();
      expect(end.numTensors).to.equal(loaded);
      expect(end.numBytes).to.equal(settled.numBytes);
      expect(generated).to.be.greaterThan(100);
      console.log(`      100 generations: ${ms.toFixed(1)} ms each, ${end.numTensors} tensors before and after (${pipe.backendName})`);
      expect(ms, 'ms per generation').to.be.below(3000);
    });

    it('closing the pipeline releases the weights too', async function () {
      await pipe.close();
      expect(numTensors()).to.equal(beforeLoad);
    });
  });
});
