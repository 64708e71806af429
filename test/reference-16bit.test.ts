/**
 * The reference backend keeps f16/bf16 uploads as their 16-bit bits and widens them inside the
 * kernels. Every op on 16-bit tensors must equal the same op on the widened float32 tensors,
 * bit for bit; checkpoints stored as BF16/F16 must give the same logits and tokens as when their
 * weights were widened at load time, in half the memory.
 */
import { expect } from 'chai';
import { join } from 'node:path';
import sharp from 'sharp';
import { configureMatmul, matmulEngineInfo, matmulTransposedBJs } from '../src/backends/reference/matmul.js';
import { ReferenceAttentionKernel } from '../src/backends/reference/reference-attention-kernel.js';
import { ReferenceBackend } from '../src/backends/reference/reference-backend.js';
import { ReferenceTensor } from '../src/backends/reference/reference-tensor.js';
import { WasmMatmul } from '../src/backends/reference/wasm-matmul.js';
import { createPipeline, loadCheckpoint, type DType, type OpName, type Tensor } from '../src/index.js';
import { PlainAttentionKernel } from '../src/attention/plain-attention-kernel.js';
import { f32ToBf16, f32ToF16 } from '../src/tensor/dtype.js';
import { buildTinyCheckpoint, gqaSpec, makeTempDir, makeTestImage, mqaSpec } from './support/tiny-checkpoint.js';
import { expectBitEqual, halfBits, widened, type Half } from './support/half-data.js';
import { rand, sizeOf } from './support/seeded-values.js';

const HALVES: Half[] = ['bf16', 'f16'];
const b = new ReferenceBackend();

/** The reference backend as it was without 16-bit storage: the loader widens every weight. */
class WidenedReferenceBackend extends ReferenceBackend {
  override supports(op: OpName, dtype: DType = 'f32'): boolean {
    return dtype === 'f32' && super.supports(op, dtype);
  }
}

/** A 16-bit tensor and the same values uploaded as float32. */
function pair(dtype: Half, shape: number[], seed: number, scale = 1): [Tensor, Tensor] {
  const bits = halfBits(dtype, shape.reduce((x, y) => x * y, 1), seed, scale);
  return [b.upload(bits, shape, dtype), b.upload(widened(dtype, bits), shape, 'f32')];
}

async function same(half: Tensor, full: Tensor, what: string): Promise<void> {
  expect(full.dtype, what).to.equal('f32');
  expectBitEqual(await b.read(half), await b.read(full), what);
}

function storedBytes(t: Tensor): number {
  return (t as ReferenceTensor).storage.byteLength;
}

describe('reference backend: f16/bf16 storage', function () {
  it('supports 16-bit uploads and every op on them', function () {
    for (const dtype of HALVES) {
      expect(b.supports('upload', dtype)).to.equal(true);
      expect(b.supports('matmul', dtype)).to.equal(true);
    }
  });

  for (const dtype of HALVES) {
    describe(dtype, function () {
      it('upload keeps the 16-bit bits (half the bytes); read widens exactly, specials included', async function () {
        const bits = halfBits(dtype, 17 * 33, 1);
        bits.set(dtype === 'bf16' ? [0x7f80, 0xff80, 0x7fc0, 0x0001, 0x8001] : [0x7c00, 0xfc00, 0x7e00, 0x0001, 0x83ff]);
        const t = b.upload(bits, [17, 33], dtype);
        expect(t.dtype).to.equal(dtype);
        expect(storedBytes(t)).to.equal(17 * 33 * 2);
        const want = widened(dtype, bits);
        bits[0] ^= 1;                                                       // upload copied the bits
        expectBitEqual(await b.read(t), want, 'read');
      });

      it('upload rejects a mismatched array', function () {
        expect(() => b.upload(new Float32Array(4), [4], dtype)).to.throw(/Uint16Array/);
        expect(() => b.upload(new Uint16Array(4), [4], 'f32')).to.throw(/Float32Array/);
      });

      for (const engine of ['js', 'wasm'] as const) {
        it(`matmul with a 16-bit transposed B (weight) and bias, ${engine} kernel`, async function () {
          try {
            configureMatmul({ engine });
            if (engine === 'wasm') {
              try { matmulEngineInfo(); } catch { this.skip(); }
            }
            for (const [m, k, n] of [[1, 64, 33], [5, 1030, 130], [17, 33, 65], [4, 3, 9]]) {
              const a = b.upload(rand(m * k, 2), [m, k]);
              const [wh, wf] = pair(dtype, [n, k], 3);
              const [bh, bf] = pair(dtype, [n], 4);
              await same(b.matmul(a, wh, { transposeB: true, bias: bh }), b.matmul(a, wf, { transposeB: true, bias: bf }), `${m}×${k}×${n}`);
              const [ah, af] = pair(dtype, [m, k], 5);                    // 16-bit A too
              await same(b.matmul(ah, wh, { transposeB: true }), b.matmul(af, wf, { transposeB: true }), `${m}×${k}×${n} (16-bit A)`);
            }
          } finally {
            configureMatmul({ engine: 'auto' });
          }
        });
      }

      it('the wasm kernel widens B chunk by chunk (small chunks), bit-identical to the JS kernel', function () {
        let w: WasmMatmul;
        try {
          w = new WasmMatmul({ threads: 3, stageBytes: { a: 64 << 10, b: 8 << 10, c: 8 << 10 }, minThreadedMacs: 0 });
        } catch {
          this.skip();
        }
        try {
          for (const [m, k, n] of [[1, 300, 77], [9, 257, 130], [40, 64, 33]]) {
            const a = rand(m * k, 7);
            const bits = halfBits(dtype, n * k, 8);
            const want = new Float32Array(m * n), got = new Float32Array(m * n), js = new Float32Array(m * n);
            matmulTransposedBJs(a, widened(dtype, bits), want, m, k, n);
            w!.matmulTransposedB(a, bits, got, m, k, n, dtype);
            matmulTransposedBJs(a, bits, js, m, k, n, dtype);
            expectBitEqual(got, want, `wasm ${m}×${k}×${n}`);
            expectBitEqual(js, want, `js ${m}×${k}×${n}`);
          }
        } finally {
          w!.close();
        }
      });

      it('matmul without transposed B (16-bit A and B)', async function () {
        const [ah, af] = pair(dtype, [5, 7], 9);
        const [bh, bf] = pair(dtype, [7, 6], 10);
        await same(b.matmul(ah, bh), b.matmul(af, bf), 'plain');
        const x = b.upload(rand(35, 11), [5, 7]);
        await same(b.matmul(x, bh), b.matmul(x, bf), 'plain, f32 A');
      });

      it('add, mul (either operand 16-bit, broadcast), scale, gelu', async function () {
        const x = b.upload(rand(6 * 10, 12), [6, 10]);
        const [rh, rf] = pair(dtype, [10], 13);
        const [fh, ff] = pair(dtype, [6, 10], 14);
        await same(b.add(x, rh), b.add(x, rf), 'add (16-bit row)');
        await same(b.add(fh, rh), b.add(ff, rf), 'add (both 16-bit)');
        await same(b.mul(x, fh), b.mul(x, ff), 'mul');
        await same(b.mul(fh, x), b.mul(ff, x), 'mul (16-bit a)');
        await same(b.scale(fh, 0.37), b.scale(ff, 0.37), 'scale');
        await same(b.gelu(fh), b.gelu(ff), 'gelu');
      });

      it('layerNorm, rmsNorm, softmax, rope', async function () {
        const x = b.upload(rand(4 * 32, 15, 3), [4, 32]);
        const [wh, wf] = pair(dtype, [32], 16);
        const [bh, bf] = pair(dtype, [32], 17);
        const [xh, xf] = pair(dtype, [4, 32], 18, 3);
        await same(b.layerNorm(x, wh, bh, 1e-6), b.layerNorm(x, wf, bf, 1e-6), 'layerNorm');
        await same(b.layerNorm(xh, wh, bh, 1e-6), b.layerNorm(xf, wf, bf, 1e-6), 'layerNorm (16-bit x)');
        await same(b.rmsNorm(x, wh, 1e-6), b.rmsNorm(x, wf, 1e-6), 'rmsNorm');
        await same(b.rmsNorm(xh, wh, 1e-6), b.rmsNorm(xf, wf, 1e-6), 'rmsNorm (16-bit x)');
        await same(b.softmax(xh), b.softmax(xf), 'softmax');
        const [rh, rf] = pair(dtype, [3, 2, 8], 19);
        await same(b.rope(rh, Int32Array.of(0, 5, 9), 10000), b.rope(rf, Int32Array.of(0, 5, 9), 10000), 'rope');
      });

      it('embedding gathers and widens only the chosen rows', async function () {
        const [th, tf] = pair(dtype, [257, 33], 20);
        const ids = Int32Array.of(0, 256, 3, 3, 100);
        await same(b.embedding(th, ids), b.embedding(tf, ids), 'embedding');
      });

      it('concat, slice, reshape (shares the 16-bit storage), transpose', async function () {
        const [ah, af] = pair(dtype, [3, 4, 5], 21);
        const [ch, cf] = pair(dtype, [3, 2, 5], 22);
        const x = b.upload(rand(3 * 4 * 5, 23), [3, 4, 5]);
        await same(b.concat([ah, x, ch], 1), b.concat([af, x, cf], 1), 'concat');
        await same(b.slice(ah, 1, 1, 3), b.slice(af, 1, 1, 3), 'slice');
        const r = b.reshape(ah, [12, 5]);
        expect(r.dtype).to.equal(dtype);
        expect((r as ReferenceTensor).bits!.buffer).to.equal((ah as ReferenceTensor).bits!.buffer);
        await same(r, b.reshape(af, [12, 5]), 'reshape');
        await same(b.transpose(ah, [2, 0, 1]), b.transpose(af, [2, 0, 1]), 'transpose');
      });

      it('writeRows: a 16-bit source into a float32 cache; a 16-bit destination stores rounded bits', async function () {
        const [sh, sf] = pair(dtype, [2, 3, 4], 24);
        const d1 = b.zeros([5, 3, 4]), d2 = b.zeros([5, 3, 4]);
        b.writeRows(d1, sh, 2);
        b.writeRows(d2, sf, 2);
        await same(d1, d2, 'writeRows');
        const [dh] = pair(dtype, [5, 3, 4], 25);
        b.writeRows(dh, sh, 1);                                           // same dtype: bits copied
        const x = rand(12, 26);
        b.writeRows(dh, b.upload(x, [1, 3, 4]), 4);                       // float32: rounded to nearest even
        const got = await b.read(dh);
        expectBitEqual(got.subarray(12, 36), await b.read(sf), 'writeRows into 16-bit (copied)');
        expectBitEqual(got.subarray(48), widened(dtype, (dtype === 'bf16' ? f32ToBf16 : f32ToF16)(x)), 'writeRows into 16-bit (rounded)');
      });

      it('patchEmbed with a 16-bit weight and bias', async function () {
        const px = b.upload(rand(3 * 8 * 12, 27), [3, 8, 12]);
        const [wh, wf] = pair(dtype, [6, 3, 4, 4], 28);
        const [bh, bf] = pair(dtype, [6], 29);
        await same(b.patchEmbed(px, wh, bh, 4), b.patchEmbed(px, wf, bf, 4), 'patchEmbed');
      });

      it('attention kernels on 16-bit q, k, v', async function () {
        const [qh, qf] = pair(dtype, [3, 4, 8], 30);
        const [kh, kf] = pair(dtype, [6, 2, 8], 31);
        const [vh, vf] = pair(dtype, [6, 2, 8], 32);
        const opts = { scale: 0.35, mask: { kind: 'causal' } as const, queryOffset: 2, kvLength: 5 };
        for (const kernel of [new ReferenceAttentionKernel(), new PlainAttentionKernel()]) {
          await same(kernel.attend(b, qh, kh, vh, opts), kernel.attend(b, qf, kf, vf, opts), kernel.name);
        }
      });
    });
  }
});

describe('reference backend: 16-bit checkpoints', function () {
  this.timeout(60_000);
  for (const c of [{ dtype: 'BF16' as const, spec: mqaSpec() }, { dtype: 'F16' as const, spec: gqaSpec() }]) {
    it(`${c.dtype}: same logits and tokens as with the weights widened at load, in half the memory`, async function () {
      const dir = await makeTempDir('pg-16bit-');
      await buildTinyCheckpoint(dir, { ...c.spec, dtype: c.dtype });
      const { data, width, height } = makeTestImage(40, 40, 5);
      const image = join(dir, 'image.png');
      await sharp(Buffer.from(data), { raw: { width, height, channels: 3 } }).png().toFile(image);

      const halfBackend = new ReferenceBackend(), fullBackend = new WidenedReferenceBackend();
      const half = await loadCheckpoint(dir, halfBackend);
      const full = await loadCheckpoint(dir, fullBackend);
      try {
        const want = c.dtype === 'BF16' ? 'bf16' : 'f16';
        const halfBytes = [...half.weights.values()].reduce((s, t) => s + storedBytes(t), 0);
        const fullBytes = [...full.weights.values()].reduce((s, t) => s + storedBytes(t), 0);
        for (const t of half.weights.values()) expect(t.dtype).to.equal(want);
        expect(halfBytes).to.equal(half.totalBytes);
        expect(fullBytes).to.equal(2 * halfBytes);
      } finally {
        half.dispose();
        full.dispose();
      }

      const p16 = await createPipeline({ model: dir, backend: new ReferenceBackend() });
      const p32 = await createPipeline({ model: dir, backend: new WidenedReferenceBackend() });
      try {
        const [r16, r32] = await Promise.all([p16, p32].map((p) => p.generate(image, 'caption en', { maxNewTokens: 6, logprobs: 3 })));
        expect(r16.tokens).to.deep.equal(r32.tokens);
        expect(JSON.stringify(r16.logprobs)).to.equal(JSON.stringify(r32.logprobs));
        // Prefill logits of every row, bit for bit.
        const logits = async (p: typeof p16) => {
          const pixels = await p.imageProcessor.process(image);
          const ids = Int32Array.from([...Array(p.model.config.numImageTokens).fill(p.model.config.imageTokenIndex), 2, 5, 7, 9]);
          const embeds = p.model.embedPrompt(ids, p.model.imageRows(pixels));
          const s = p.model.session(ids.length);
          try { return await s.prefill(embeds, ids.length, 0); } finally { s.dispose(); }
        };
        expectBitEqual(await logits(p16), await logits(p32), 'prefill logits');
      } finally {
        await p16.close();
        await p32.close();
      }
    });
  }
});
