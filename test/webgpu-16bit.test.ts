/**
 * The WebGPU backend's 16-bit storage and its lossy f16 weights.
 *
 * f16/bf16 uploads stay packed on the device (two halves per u32 word): matmul's B and the
 * embedding table are read packed, every other op widens on the device. Every op on 16-bit
 * tensors must equal, bit for bit, the same op on the host-widened float32 tensors, and match
 * the reference backend (which also takes 16-bit uploads) within the usual tolerances.
 *
 * With `weights: 'f16'`, an uploaded f32 weight is narrowed to f16 on its first use as
 * matmul's transposed B or as an embedding table; results then equal the reference on the
 * f16-rounded weights.
 *
 * Without a GPU this runs on SwiftShader; it is skipped, with the reason printed, only when no
 * WebGPU adapter can be created.
 */
import { AttendKernel } from '../src/attention/plain-attention-kernel.js';
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ReferenceAttentionKernel } from '../src/backends/reference/reference-attention-kernel.js';
import { ReferenceBackend } from '../src/backends/reference/reference-backend.js';
import { WebGpuBackend, parseWeightsOption, resolveWeights } from '../src/backends/webgpu/webgpu-backend.js';
import { webgpuBackendPlugin } from '../src/backends/webgpu/webgpu-backend-module.js';
import { BUILTIN_PLUGINS } from '../src/builtin-plugins.js';
import { createPipeline } from '../src/create-pipeline.js';
import { promptIds, type PaliGemmaPipeline } from '../src/index.js';
import { PaliGemmaError } from '../src/interfaces/errors.js';
import type { Tensor, TensorOps } from '../src/interfaces/tensor-backend.js';
import { f16ToF32, f32ToF16 } from '../src/tensor/dtype.js';
import { greedyRun, relMaxDiff } from './support/model-compare.js';
import { buildTinyCheckpoint, makeTestImage, mqaSpec, type TinySpec } from './support/tiny-checkpoint.js';
import { expectBitEqual, halfBits, widened, type Half } from './support/half-data.js';
import { rand, sizeOf } from './support/seeded-values.js';
import { startGpuOrSkip } from './support/webgpu.js';
import { compare } from '../src/conformance/compare.js';
import { THRESHOLDS } from '../src/conformance/op-case.js';

const HALVES: Half[] = ['f16', 'bf16'];

// ── seeded inputs and comparison ─────────────────────────────────────────────

/** f32 values rounded to nearest-even f16, widened back. */
const f16Rounded = (x: Float32Array): Float32Array => f16ToF32(f32ToF16(x));

/** Thresholds on the normalized MSE against the reference: the conformance kit's. */
const TOL = THRESHOLDS;

/** One input of an op case: 16-bit (`half`) or float32, seeded by position. */
interface Input { shape: number[]; half?: boolean; scale?: number }

interface OpCase {
  label: string;
  inputs: Input[];
  op: (b: TensorOps, xs: Tensor[]) => Tensor;
  tol: number;
}

const attention = { gpu: new AttendKernel('webgpu'), ref: new ReferenceAttentionKernel() };

const OP_CASES: OpCase[] = [
  { label: 'matmul bᵀ 16-bit B [17,33]·[65,33]ᵀ (odd count)', inputs: [{ shape: [17, 33] }, { shape: [65, 33], half: true, scale: 0.2 }],
    op: (b, [x, w]) => b.matmul(x, w, { transposeB: true }), tol: TOL.matmul },
  { label: 'matmul 16-bit B [17,33]·[33,65] (odd count)', inputs: [{ shape: [17, 33] }, { shape: [33, 65], half: true, scale: 0.2 }],
    op: (b, [x, w]) => b.matmul(x, w), tol: TOL.matmul },
  { label: 'matmul bᵀ 16-bit B and bias, one row [1,129]·[65,129]ᵀ', inputs: [{ shape: [1, 129] }, { shape: [65, 129], half: true, scale: 0.1 }, { shape: [65], half: true }],
    op: (b, [x, w, bi]) => b.matmul(x, w, { transposeB: true, bias: bi }), tol: TOL.matmul },
  { label: 'matmul bᵀ 16-bit B, f32 bias, 64-row tiles [65,33]·[65,33]ᵀ', inputs: [{ shape: [65, 33] }, { shape: [65, 33], half: true, scale: 0.2 }, { shape: [65] }],
    op: (b, [x, w, bi]) => b.matmul(x, w, { transposeB: true, bias: bi }), tol: TOL.matmul },
  { label: 'matmul 16-bit A and B [5,33]·[33,7]', inputs: [{ shape: [5, 33], half: true }, { shape: [33, 7], half: true }],
    op: (b, [x, w]) => b.matmul(x, w), tol: TOL.matmul },
  { label: 'embedding 16-bit table [257,33]', inputs: [{ shape: [257, 33], half: true }],
    op: (b, [t]) => b.embedding(t, Int32Array.of(256, 0, 17, 17, 100, 3)), tol: 0 },
  { label: 'layerNorm 16-bit weight and bias [9,65]', inputs: [{ shape: [9, 65], scale: 3 }, { shape: [65], half: true }, { shape: [65], half: true }],
    op: (b, [x, w, bi]) => b.layerNorm(x, w, bi, 1e-6), tol: TOL.reduction },
  { label: 'rmsNorm 16-bit weight [5,129]', inputs: [{ shape: [5, 129], scale: 3 }, { shape: [129], half: true, scale: 0.3 }],
    op: (b, [x, w]) => b.rmsNorm(x, w, 1e-6), tol: TOL.reduction },
  { label: 'rmsNorm 16-bit x and weight [3,33]', inputs: [{ shape: [3, 33], half: true }, { shape: [33], half: true }],
    op: (b, [x, w]) => b.rmsNorm(x, w, 1e-6), tol: TOL.reduction },
  { label: 'add f32 [3,17,65] + 16-bit [65]', inputs: [{ shape: [3, 17, 65] }, { shape: [65], half: true }],
    op: (b, [x, y]) => b.add(x, y), tol: TOL.exact },
  { label: 'add 16-bit [5,7] + f32 [5,7]', inputs: [{ shape: [5, 7], half: true }, { shape: [5, 7] }],
    op: (b, [x, y]) => b.add(x, y), tol: TOL.exact },
  { label: 'mul 16-bit [3,33] × 16-bit [33]', inputs: [{ shape: [3, 33], half: true }, { shape: [33], half: true }],
    op: (b, [x, y]) => b.mul(x, y), tol: TOL.exact },
  { label: 'scale, gelu, softmax of 16-bit [3,33]', inputs: [{ shape: [3, 33], half: true, scale: 3 }],
    op: (b, [x]) => {
      const s = b.scale(x, 0.5), g = b.gelu(x), sum = b.add(s, g);
      const out = b.softmax(sum);
      b.dispose([s, g, sum]);
      return out;
    }, tol: TOL.reduction },
  { label: 'rope of 16-bit [5,2,16]', inputs: [{ shape: [5, 2, 16], half: true }],
    op: (b, [x]) => b.rope(x, Int32Array.of(1, 2, 3, 40, 5), 10000), tol: TOL.rope },
  { label: 'slice, transpose, concat with 16-bit [5,7,3]', inputs: [{ shape: [5, 7, 3], half: true }, { shape: [5, 2, 3] }],
    op: (b, [x, y]) => {
      const s = b.slice(x, 1, 2, 6), t = b.transpose(s, [0, 2, 1]), back = b.transpose(t, [0, 2, 1]);
      const out = b.concat([back, y, x], 1);
      b.dispose([s, t, back]);
      return out;
    }, tol: TOL.exact },
  { label: 'patchEmbed 16-bit weight and bias [3,28,28] patch 14 → 17', inputs: [{ shape: [3, 28, 28] }, { shape: [17, 3, 14, 14], half: true, scale: 0.05 }, { shape: [17], half: true, scale: 0.1 }],
    op: (b, [px, w, bi]) => b.patchEmbed(px, w, bi, 14), tol: TOL.matmul },
  { label: 'fused attention on 16-bit q, k, v', inputs: [{ shape: [5, 4, 16], half: true }, { shape: [7, 2, 16], half: true }, { shape: [7, 2, 16], half: true }],
    op: (b, [q, k, v]) => (b instanceof WebGpuBackend ? attention.gpu : attention.ref).attend(b, q, k, v, { scale: 0.25, mask: { kind: 'causal' }, queryOffset: 2 }),
    tol: TOL.matmul },
];

// ── the suite ────────────────────────────────────────────────────────────────

describe('webgpu backend: f16/bf16 storage and f16 weights', function () {
  this.timeout(120_000);
  const ref = new ReferenceBackend();
  let gpu: WebGpuBackend;
  const worst: Record<string, number> = {};
  const note = (what: string, err: number) => { worst[what] = Math.max(worst[what] ?? 0, err); };

  before(async function () {
    gpu = await startGpuOrSkip(this, { weights: 'f32' });
  });
  after(async function () {
    if (Object.keys(worst).length > 0) {
      console.log(`    worst: ${Object.entries(worst).map(([k, v]) => `${k} ${v.toExponential(1)}`).join(', ')}`);
    }
    await gpu?.close();
  });

  for (const dtype of HALVES) {
    describe(dtype, function () {
      it('upload keeps packed 16-bit storage: every bit pattern reads back as the host widening', async function () {
        const n = 65535;                                                  // every pattern but 0xffff; an odd count
        const bits = Uint16Array.from({ length: n }, (_, i) => i);
        const before = gpu.stats().liveBytes;
        const t = gpu.upload(bits, [n], dtype);
        expect(t.dtype).to.equal(dtype);
        expect(gpu.stats().liveBytes - before, 'live bytes').to.equal(Math.ceil(n / 2) * 4);
        const want = widened(dtype, bits);
        bits[1] ^= 1;                                                       // upload copied the bits
        expectBitEqual(await gpu.read(t), want, 'read');
        gpu.dispose(t);
        expect(gpu.stats().liveBytes).to.equal(before);
      });

      it('a tensor of n elements holds ≈ 2n bytes, not 4n', function () {
        const before = gpu.stats().liveBytes;
        const t16 = gpu.upload(halfBits(dtype, 65 * 33, 1), [65, 33], dtype);
        const mid = gpu.stats().liveBytes;
        const t32 = gpu.upload(new Float32Array(65 * 33), [65, 33]);
        const bytes16 = mid - before, bytes32 = gpu.stats().liveBytes - mid;
        expect(bytes16).to.equal(2 * 65 * 33 + 2);                        // 2145 halves, padded to a word
        expect(bytes32).to.equal(4 * 65 * 33);
        note(`${dtype} bytes / f32 bytes`, bytes16 / bytes32);
        gpu.dispose([t16, t32]);
      });

      for (const c of OP_CASES) {
        it(`${c.label}: bit-identical to host widening, matches the reference`, async function () {
          const base = gpu.liveBuffers;
          const values = c.inputs.map((x, i) => {
            const n = sizeOf(x.shape);
            return x.half ? { bits: halfBits(dtype, n, 10 + i, x.scale) } : { f32: rand(n, 10 + i, x.scale) };
          });
          const upload = (b: TensorOps, packed: boolean) => values.map((v, i) => {
            const shape = c.inputs[i].shape;
            if (!v.bits) return b.upload(v.f32!, shape);
            return packed ? b.upload(v.bits, shape, dtype) : b.upload(widened(dtype, v.bits), shape);
          });
          const xs16 = upload(gpu, true), xs32 = upload(gpu, false);
          for (const [i, x] of xs16.entries()) expect(x.dtype).to.equal(c.inputs[i].half ? dtype : 'f32');
          const out16 = c.op(gpu, xs16), out32 = c.op(gpu, xs32), want = c.op(ref, upload(ref, true));
          const got = await gpu.read(out16);
          expectBitEqual(got, await gpu.read(out32), 'against the same op on host-widened f32');
          const err = compare(got, await ref.read(want)).error;
          note(c.label.split(/[ ,]/)[0], err);
          expect(err, 'normalized MSE against the reference').to.be.at.most(c.tol);
          gpu.dispose([...xs16, ...xs32, out16, out32]);
          expect(gpu.liveBuffers, 'live buffers after disposing (widened temporaries included)').to.equal(base);
        });
      }

      it('reshape shares the packed storage and keeps the dtype', async function () {
        const bits = halfBits(dtype, 7 * 9, 2);
        const base = gpu.liveBuffers;
        const x = gpu.upload(bits, [7, 9], dtype);
        const y = gpu.reshape(x, [63]);
        expect(y.dtype).to.equal(dtype);
        expect(gpu.liveBuffers).to.equal(base + 1);
        gpu.dispose(x);
        expectBitEqual(await gpu.read(y), widened(dtype, bits), 'read through the alias');
        gpu.dispose(y);
        expect(gpu.liveBuffers).to.equal(base);
      });

      it('writeRows refuses a 16-bit destination and widens a 16-bit source', async function () {
        const h = gpu.upload(halfBits(dtype, 4 * 3, 3), [4, 3], dtype);
        const rows = gpu.upload(new Float32Array(3), [1, 3]);
        expect(() => gpu.writeRows(h, rows, 0)).to.throw(Error, new RegExp(`stored as ${dtype}; only f32 tensors are writable`));
        const cache = gpu.zeros([5, 3]);
        const src = halfBits(dtype, 2 * 3, 4);
        const s = gpu.upload(src, [2, 3], dtype);
        gpu.writeRows(cache, s, 2);
        const want = new Float32Array(15);
        want.set(widened(dtype, src), 6);
        expectBitEqual(await gpu.read(cache), want, 'cache');
        gpu.dispose([h, rows, cache, s]);
      });
    });
  }

  describe('weights option', function () {
    it("'auto' is f16 exactly when the adapter has shader-f16 (a pure decision)", function () {
      expect(resolveWeights('auto', new Set(['shader-f16', 'timestamp-query']))).to.equal('f16');
      expect(resolveWeights('auto', new Set(['timestamp-query']))).to.equal('f32');
      expect(resolveWeights('f32', new Set(['shader-f16']))).to.equal('f32');
      expect(resolveWeights('f16', new Set())).to.equal('f16');
      expect(parseWeightsOption(undefined)).to.equal('auto');
      expect(parseWeightsOption('f16')).to.equal('f16');
    });

    it('rejects any other value, naming the option and the allowed values', function () {
      for (const bad of ['bf16', 'F16', 16, true]) {
        expect(() => new WebGpuBackend({ weights: bad as never })).to.throw(PaliGemmaError, /weights '.*' \(use auto, f32, f16\)/);
      }
    });

    it("with 'f32', weights stay exact: lossyWeights unset, no 'f16 weights' in the engine", async function () {
      expect(gpu.lossyWeights).to.equal(undefined);
      expect(gpu.engine).to.not.contain('f16 weights');
      const w = gpu.upload(rand(65 * 33, 5), [65, 33]);
      const x = gpu.upload(rand(3 * 33, 6), [3, 33]);
      gpu.dispose(gpu.matmul(x, w, { transposeB: true }));
      expect(w.dtype).to.equal('f32');
      gpu.dispose([w, x]);
    });

    describe("'f16': uploaded f32 weights are narrowed on first use as a weight", function () {
      let half: WebGpuBackend;
      before(async function () {
        half = new WebGpuBackend({ weights: 'f16' });
        await half.init();
      });
      after(async function () {
        await half?.close();
      });

      it('says so: lossyWeights and the engine string', function () {
        expect(half.lossyWeights).to.equal('f16');
        expect(half.engine).to.match(/^webgpu \(.+, f16 weights\)$/);
        if (/swiftshader/.test(half.engine)) expect(half.engine).to.match(/software, f16 weights\)$/);
      });

      for (const [m, k, n] of [[17, 33, 65], [1, 129, 33], [65, 64, 17]]) {
        it(`matmul bᵀ [${m},${k}]·[${n},${k}]ᵀ + bias equals the reference on f16-rounded weights`, async function () {
          const wv = rand(n * k, 7, 0.3), xv = rand(m * k, 8), bv = rand(n, 9);
          const before = half.stats().liveBytes;
          const w = half.upload(wv, [n, k]), x = half.upload(xv, [m, k]), bias = half.upload(bv, [n]);
          expect(w.dtype).to.equal('f32');
          const out = half.matmul(x, w, { transposeB: true, bias });
          expect(w.dtype, 'the weight after its first use').to.equal('f16');
          expect([x.dtype, bias.dtype], 'a and the bias are not weights').to.deep.equal(['f32', 'f32']);
          expect(half.stats().liveBytes - before, 'live bytes').to.equal(Math.ceil((n * k) / 2) * 4 + (m * k + n) * 4 + m * n * 4);
          const want = ref.matmul(ref.upload(xv, [m, k]), ref.upload(f16Rounded(wv), [n, k]), { transposeB: true, bias: ref.upload(bv, [n]) });
          const err = compare(await half.read(out), await ref.read(want)).error;
          note('f16 weights matmul', err);
          expect(err).to.be.at.most(TOL.matmul);
          expectBitEqual(await half.read(w), f16Rounded(wv), 'the narrowed weight reads back rounded');
          half.dispose([w, x, bias, out]);
          expect(half.stats().liveBytes).to.equal(before);
        });
      }

      it('an embedding table is narrowed; gathered rows are the rounded values', async function () {
        const tv = rand(257 * 33, 11);
        const t = half.upload(tv, [257, 33]);
        const rows = half.embedding(t, Int32Array.of(256, 0, 5));
        expect(t.dtype).to.equal('f16');
        const r = f16Rounded(tv);
        const want = Float32Array.from([...r.subarray(256 * 33, 257 * 33), ...r.subarray(0, 33), ...r.subarray(5 * 33, 6 * 33)]);
        expectBitEqual(await half.read(rows), want, 'rows');
        half.dispose([t, rows]);
      });

      it('reshape aliases share the narrowed storage', async function () {
        const wv = rand(65 * 33, 12);
        const base = half.liveBuffers, bytes = half.stats().liveBytes;
        const w = half.upload(wv, [65, 33]);
        const alias = half.reshape(w, [5, 13, 33]);
        const x = half.upload(rand(33, 13), [1, 33]);
        const out = half.matmul(x, w, { transposeB: true });
        expect(alias.dtype).to.equal('f16');
        half.dispose(w);
        expectBitEqual(await half.read(alias), f16Rounded(wv), 'read through the alias');
        half.dispose([alias, x, out]);
        expect(half.liveBuffers).to.equal(base);
        expect(half.stats().liveBytes).to.equal(bytes);
      });

      it('written, computed, zero-filled and non-transposed operands stay f32 and exact', async function () {
        const wv = rand(9 * 33, 14);
        const x = half.upload(rand(2 * 33, 15), [2, 33]);
        const written = half.upload(wv, [9, 33]);
        half.writeRows(written, half.upload(wv.subarray(0, 33), [1, 33]), 0);
        const computed = half.scale(written, 1);
        const zeros = half.zeros([9, 33]);
        const plain = half.upload(wv, [33, 9]);
        const outs = [
          half.matmul(x, written, { transposeB: true }), half.matmul(x, computed, { transposeB: true }),
          half.matmul(x, zeros, { transposeB: true }), half.matmul(x, plain),
        ];
        expect([written, computed, zeros, plain].map((t) => t.dtype)).to.deep.equal(['f32', 'f32', 'f32', 'f32']);
        expectBitEqual(await half.read(written), wv, 'the written tensor');
        const want = ref.matmul(ref.upload(await half.read(x), [2, 33]), ref.upload(wv, [9, 33]), { transposeB: true });
        expect(compare(await half.read(outs[0]), await ref.read(want)).error).to.be.at.most(TOL.matmul);
        half.dispose([x, written, computed, zeros, plain, ...outs]);
      });
    });
  });

  describe('whole model on tiny checkpoints', function () {
    const plugins = () => (BUILTIN_PLUGINS.some((p) => p.name === webgpuBackendPlugin.name) ? [] : [webgpuBackendPlugin]);

    /** Reference and webgpu pipelines on one tiny checkpoint; closed and deleted afterwards. */
    async function withPipes(
      spec: TinySpec, weights: 'f32' | 'f16', body: (ref: PaliGemmaPipeline, gpu: PaliGemmaPipeline, f32Bytes: number) => Promise<void>,
    ): Promise<void> {
      const dir = mkdtempSync(join(tmpdir(), 'pg-webgpu16-'));
      let refPipe: PaliGemmaPipeline | undefined, gpuPipe: PaliGemmaPipeline | undefined;
      try {
        const ckpt = await buildTinyCheckpoint(dir, spec);
        const f32Bytes = Object.values(ckpt.weights).reduce((a, w) => a + w.data.length * 4, 0);
        refPipe = await createPipeline({ model: dir, backend: 'reference' });
        gpuPipe = await createPipeline({ model: dir, backend: 'webgpu', backendOptions: { weights }, plugins: plugins() });
        await body(refPipe, gpuPipe, f32Bytes);
      } finally {
        await refPipe?.close();
        await gpuPipe?.close();
        rmSync(dir, { recursive: true, force: true });
      }
    }

    /** Greedy steps of both pipelines at the model level: tokens must agree; returns max rel. logit diff. */
    async function compareGreedy(refPipe: PaliGemmaPipeline, gpuPipe: PaliGemmaPipeline, steps: number): Promise<number> {
      const { data, width, height } = makeTestImage(24, 24, 5);
      const pixels = await refPipe.imageProcessor.process({ data, width, height, channels: 3 });
      const ids = Int32Array.from(promptIds(refPipe.tokenizer, 'caption en', refPipe.model.config.numImageTokens));
      const want = await greedyRun(refPipe.model, pixels, ids, steps);
      const got = await greedyRun(gpuPipe.model, pixels, ids, steps);
      const rel = Math.max(...got.logits.map((l, i) => relMaxDiff(l, want.logits[i])));
      expect(got.tokens, 'greedy tokens').to.deep.equal(want.tokens);
      return rel;
    }

    for (const dtype of ['BF16', 'F16'] as const) {
      it(`${dtype} checkpoint: weights stay 16-bit, same greedy tokens as the reference, buffers back to baseline`, async function () {
        await withPipes({ ...mqaSpec(), dtype }, 'f32', async (refPipe, gpuPipe, f32Bytes) => {
          const backend = gpuPipe.backend as WebGpuBackend;
          const ratio = backend.stats().liveBytes / f32Bytes;
          note(`model ${dtype} bytes / f32 bytes`, ratio);
          expect(ratio, 'device bytes of the loaded weights / their f32 bytes').to.be.within(0.5, 0.55);
          const rel = await compareGreedy(refPipe, gpuPipe, 6);
          note(`model ${dtype} rel`, rel);
          expect(rel, 'max |Δlogit| / max |logit|').to.be.below(1e-3);

          const { data, width, height } = makeTestImage(24, 24, 5);
          const image = { data, width, height, channels: 3 as const };
          const first = await gpuPipe.generate(image, 'caption en', { maxNewTokens: 6 });
          const live = backend.liveBuffers, device = backend.stats().deviceBuffers;
          for (let i = 0; i < 2; i++) {
            expect((await gpuPipe.generate(image, 'caption en', { maxNewTokens: 6 })).tokens).to.deep.equal(first.tokens);
          }
          expect(backend.liveBuffers, 'live buffers after repeated generations').to.equal(live);
          expect(backend.stats().deviceBuffers, 'device buffers after repeated generations').to.equal(device);
        });
      });
    }

    it('F32 checkpoint with weights=f16: same greedy tokens as the reference, half the weight bytes', async function () {
      await withPipes(mqaSpec(), 'f16', async (refPipe, gpuPipe, f32Bytes) => {
        const backend = gpuPipe.backend as WebGpuBackend;
        expect(backend.lossyWeights).to.equal('f16');
        const rel = await compareGreedy(refPipe, gpuPipe, 6);
        note('model f16-weights rel', rel);
        expect(rel, 'max |Δlogit| / max |logit|').to.be.below(2e-2);
        // Matmul weights and the embedding table are narrowed now; norms, biases and the patch
        // embedding stay f32.
        const ratio = backend.stats().liveBytes / f32Bytes;
        note('model f16-weights bytes / f32 bytes', ratio);
        expect(ratio).to.be.below(0.6);
      });
    });
  });
});
