/**
 * The onnx backend's 16-bit weights in its half memory (half-memory.ts): 2-D f16/bf16 uploads
 * kept as their bits in shared WebAssembly memory, few-row products from the bits (gemv16),
 * many-row products, gathers and other reads through host widening. Pinned against float64
 * sums of the exact widened values, computed here.
 */
import { expect } from 'chai';
import { OnnxBackend } from '../src/backends/onnx/onnx-backend.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../src/tensor/dtype.js';

/** Seeded values in (-scale, scale). */
function rand(n: number, seed: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (s * 1664525 + 1013904223) >>> 0;
    out[i] = ((s / 2 ** 32) * 2 - 1) * scale;
  }
  return out;
}

/** float64 x [m, k] · W [n, k]ᵀ (+ bias), and Σ|x||w| per output (the scale of its float32 rounding). */
function product(x: Float32Array, w: Float32Array, m: number, k: number, n: number, bias?: Float32Array): { y: Float64Array; scale: Float64Array } {
  const y = new Float64Array(m * n), scale = new Float64Array(m * n);
  for (let r = 0; r < m; r++) {
    for (let j = 0; j < n; j++) {
      let s = bias ? bias[j] : 0, a = bias ? Math.abs(bias[j]) : 0;
      for (let p = 0; p < k; p++) { s += x[r * k + p] * w[j * k + p]; a += Math.abs(x[r * k + p] * w[j * k + p]); }
      y[r * n + j] = s;
      scale[r * n + j] = a;
    }
  }
  return { y, scale };
}

/** Worst |got − want| / Σ|x||w| over the outputs. */
function worstError(got: Float32Array, want: { y: Float64Array; scale: Float64Array }): number {
  let worst = 0;
  for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i] - want.y[i]) / Math.max(want.scale[i], 1e-30));
  return worst;
}

/** 16-bit weights with the awkward values: zeros, negatives, subnormals, the largest finite. */
function weights(format: 'f16' | 'bf16', n: number, k: number, seed: number): { bits: Uint16Array; exact: Float32Array } {
  const v = rand(n * k, seed, 0.5);
  v[0] = 0; v[1] = -0; v[k + 2] = 65504; v[2 * k + 3] = -3e-6; v[3 * k + 5] = 4e-7;   // f16 subnormals
  if (format === 'bf16') { v[4 * k] = 1e30; v[4 * k + 1] = -2e-30; }                  // bf16 range only
  const bits = format === 'f16' ? f32ToF16(v) : f32ToBf16(v);
  return { bits, exact: format === 'f16' ? f16ToF32(bits) : bf16ToF32(bits) };
}

describe('onnx backend: 16-bit weights in the half memory', function () {
  this.timeout(60_000);

  for (const format of ['f16', 'bf16'] as const) {
    it(`${format}: every bit pattern reads back exactly (widening), and a gather gives the exact rows`, async function () {
      const b = new OnnxBackend();
      await b.init();
      try {
        // All 65536 patterns as a [256, 256] weight (f16's Infinity/NaN patterns left out: such
        // a weight is not placed, see below).
        const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
        const bits = format === 'f16' ? all.map((h) => ((h & 0x7c00) === 0x7c00 ? 0x3c00 : h)) : all;
        const want = format === 'f16' ? f16ToF32(bits) : bf16ToF32(bits);
        const t = b.upload(bits, [256, 256], format);
        const got = await b.read(t);
        expect(Buffer.from(got.buffer).equals(Buffer.from(want.buffer)), 'bit-exact widening').to.equal(true);
        const ids = Int32Array.from([255, 0, 17, 17, 128]);
        const rows = await b.read(b.embedding(t, ids));
        ids.forEach((id, i) => {
          const w = want.subarray(id * 256, (id + 1) * 256), g = rows.subarray(i * 256, (i + 1) * 256);
          expect(Buffer.from(g.slice().buffer).equals(Buffer.from(w.slice().buffer)), `row ${id}`).to.equal(true);
        });
        // Read by another op (here an add): widened whole on the host, same values.
        const doubled = await b.read(b.add(t, t));
        for (let i = 0; i < doubled.length; i += 97) if (Number.isFinite(want[i])) expect(doubled[i]).to.equal(Math.fround(want[i] * 2));
      } finally {
        await b.close();
      }
    });

    it(`${format}: few-row products run from the bits (gemv16) and many-row ones through chunked widening, both equal to float64 sums`, async function () {
      // k = 264 (a multiple of 8), n = 37 (odd); a second shape big enough for both threads.
      for (const [n, k] of [[37, 264], [1030, 512]] as const) {
        const { bits, exact } = weights(format, n, k, 11 + n);
        const bias = rand(n, 12);
        const b = new OnnxBackend({ widenChunkBytes: 8 * k * 4 });          // 8 rows per widened chunk
        await b.init();
        try {
          const w = b.upload(bits, [n, k], format);
          const bt = b.upload(bias, [n]);
          for (const m of [1, 3, 4, 6, 16, 17, 40]) {
            const x = rand(m * k, 100 + m, 2);
            // One row with a value past 2¹⁵: f16 then takes the kernel that scales each weight
            // (x cannot be prescaled by 2¹¹² without overflow).
            if (m === 3) x[k + 7] = 4e4;
            const calls = b.stats.halfGemvCalls;
            const got = await b.read(b.matmul(b.upload(x, [m, k]), w, { transposeB: true, bias: bt }));
            const err = worstError(got, product(x, exact, m, k, n, bias));
            // float32 sums of k terms: a few ulps of Σ|x||w| (onnxruntime's Gemm past 16 rows too).
            expect(err, `${n}×${k}, ${m} rows`).to.be.below(1e-5);
            // Up to halfGemvRows (16) rows the product is gemv16's; past it, onnxruntime's.
            expect(b.stats.halfGemvCalls - calls, `${m} rows`).to.equal(m <= 16 ? 1 : 0);
          }
        } finally {
          await b.close();
        }
      }
    });
  }

  it('an error in the kernel would show: the check fails against a weight one ulp off', async function () {
    // The float64 check above is sharp enough to see one element of W one bf16 step off.
    const n = 9, k = 64;
    const { bits, exact } = weights('bf16', n, k, 5);
    bits[3 * k + 10] = 0x3f00;                                           // 0.5 exactly
    exact[3 * k + 10] = 0.5;
    const b = new OnnxBackend();
    await b.init();
    try {
      const x = rand(k, 6, 2);
      x[10] = 2;
      const got = await b.read(b.matmul(b.upload(x, [1, k]), b.upload(bits, [n, k], 'bf16'), { transposeB: true }));
      const off = exact.slice();
      off[3 * k + 10] = bf16ToF32(Uint16Array.of(f32ToBf16(Float32Array.of(off[3 * k + 10]))[0] + 1))[0];
      expect(worstError(got, product(x, exact, 1, k, n))).to.be.below(1e-5);
      expect(worstError(got, product(x, off, 1, k, n))).to.be.above(1e-5);
    } finally {
      await b.close();
    }
  });

  it('an f16 weight holding Infinity or NaN stays a plain f16 storage and computes them as onnxruntime does', async function () {
    const n = 8, k = 16;
    const { bits } = weights('f16', n, k, 7);
    bits[5] = 0x7c00;                                                    // +Infinity
    bits[k + 1] = 0x7e00;                                                // NaN
    const b = new OnnxBackend();
    await b.init();
    try {
      const x = new Float32Array(k).fill(1);
      const w = b.upload(bits, [n, k], 'f16');
      const got = await b.read(b.matmul(b.upload(x, [1, k]), w, { transposeB: true }));
      expect(b.stats.halfGemvCalls).to.equal(0);
      expect(got[0]).to.equal(Infinity);
      expect(Number.isNaN(got[1])).to.equal(true);
      expect(Number.isFinite(got[2])).to.equal(true);
    } finally {
      await b.close();
    }
  });

  it('reserve: a weight filled in place computes as the same weight uploaded, in the half memory or (f16 with Inf/NaN) out of it', async function () {
    const n = 24, k = 40;
    const x = rand(3 * k, 11, 2);
    const b = new OnnxBackend();
    await b.init();
    try {
      for (const format of ['bf16', 'f16'] as const) {
        const { bits, exact } = weights(format, n, k, 12);
        const room = b.reserve([n, k], format);
        expect(room.data).to.be.instanceOf(Uint16Array);
        room.data.set(bits);
        const w = room.commit();
        expect(() => room.commit(), 'a second commit').to.throw(/already committed/);
        const calls = b.stats.halfGemvCalls;
        const one = await b.read(b.matmul(b.upload(x.subarray(0, k), [1, k]), w, { transposeB: true }));
        expect(b.stats.halfGemvCalls, `${format}: gemv16 ran on the reserved weight`).to.equal(calls + 1);
        expect(worstError(one, product(x, exact, 1, k, n)), format).to.be.below(1e-6);
        const three = await b.read(b.matmul(b.upload(x, [3, k]), w, { transposeB: true }));
        expect(worstError(three, product(x, exact, 3, k, n)), format).to.be.below(1e-6);
      }
      // An f16 weight holding Infinity: refused by the half memory at commit, kept as its own copy.
      const { bits } = weights('f16', n, k, 13);
      bits[3] = 0x7c00;
      const room = b.reserve([n, k], 'f16');
      room.data.set(bits);
      const w = room.commit();
      room.data.fill(0);                                                 // the room was given back: reusing it must not matter
      const calls = b.stats.halfGemvCalls;
      const got = await b.read(b.matmul(b.upload(new Float32Array(k).fill(1), [1, k]), w, { transposeB: true }));
      expect(b.stats.halfGemvCalls).to.equal(calls);
      expect(got[0]).to.equal(Infinity);
      expect(Number.isFinite(got[1])).to.equal(true);
      // f32, and a discarded room.
      const f = b.reserve([2, 3], 'f32');
      f.data.set([1, 2, 3, 4, 5, 6]);
      expect([...await b.read(f.commit())]).to.deep.equal([1, 2, 3, 4, 5, 6]);
      const gone = b.reserve([n, k], 'bf16');
      gone.discard();
      expect(() => gone.commit()).to.throw(/already committed or discarded/);
    } finally {
      await b.close();
    }
  });

  it('halfGemvRows: 0 keeps every 16-bit weight out of the half memory (the Cast path), with the same products', async function () {
    const n = 37, k = 264;
    const { bits, exact } = weights('f16', n, k, 9);
    const x = rand(2 * k, 10, 2);
    const want = product(x, exact, 2, k, n);
    for (const rows of [0, 16]) {
      const b = new OnnxBackend({ halfGemvRows: rows });
      await b.init();
      try {
        const got = await b.read(b.matmul(b.upload(x, [2, k]), b.upload(bits, [n, k], 'f16'), { transposeB: true }));
        expect(worstError(got, want), `halfGemvRows ${rows}`).to.be.below(1e-5);
        expect(b.stats.halfGemvCalls).to.equal(rows === 0 ? 0 : 1);
      } finally {
        await b.close();
      }
    }
    expect(() => new OnnxBackend({ halfGemvRows: -1 })).to.throw(/halfGemvRows/);
  });
});
