/**
 * Block-wise int4/int8 weights in MatMulNBits' layout: onnxruntime's product equals float64
 * math on the weights dequantized here from the packed bytes by the test itself (tight), and
 * those weights are within half a quantization step of the originals (loose).
 */
import { expect } from 'chai';
import { loadOrt } from '../src/backends/onnx/onnx-runtime.js';
import { compileGraph, DataLeaf, type GraphNode } from '../src/backends/onnx/onnx-graph.js';
import { matMulNBits, nbitsWeight } from '../src/backends/onnx/matmul-nbits.js';
import { ONNX_IR_VERSION, ONNX_OPSET } from '../src/backends/onnx/onnx-backend.js';
import {
  dequantizeBlockwise, quantizeBlockwise, type BlockQuantized, type QuantBits,
} from '../src/tensor/block-quantization.js';
import { f32ToBf16, f32ToF16, bf16ToF32, f16ToF32 } from '../src/tensor/dtype.js';
import { rand } from './support/seeded-values.js';

/** The test's own reading of the packed layout: (code − zp) · scale, in float64. */
function unpack(q: BlockQuantized): Float64Array {
  const out = new Float64Array(q.n * q.k);
  const blob = (q.blockSize * q.bits) / 8;
  for (let r = 0; r < q.n; r++) {
    for (let i = 0; i < q.k; i++) {
      const b = Math.floor(i / q.blockSize), j = i % q.blockSize;
      const byte = q.data[(r * q.kBlocks + b) * blob + (q.bits === 8 ? j : Math.floor(j / 2))];
      const code = q.bits === 8 ? byte : (j % 2 === 0 ? byte & 15 : byte >> 4);
      let zp = q.bits === 8 ? 128 : 8;
      if (q.zeroPoints) {
        if (q.bits === 8) zp = q.zeroPoints[r * q.kBlocks + b];
        else {
          const z = q.zeroPoints[r * Math.ceil(q.kBlocks / 2) + Math.floor(b / 2)];
          zp = b % 2 === 0 ? z & 15 : z >> 4;
        }
      }
      out[r * q.k + i] = (code - zp) * q.scales[r * q.kBlocks + b];
    }
  }
  return out;
}

async function runNBits(x: Float32Array, m: number, q: BlockQuantized, accuracyLevel: number, bias?: Float32Array): Promise<Float32Array> {
  const ort = await loadOrt();
  const xl = new DataLeaf(x, [m, q.k], 'float32');
  const bl = bias && new DataLeaf(bias, [q.n], 'float32');
  const y: GraphNode = matMulNBits(xl, nbitsWeight(q), accuracyLevel, bl);
  const g = compileGraph([y], ONNX_OPSET, ONNX_IR_VERSION);
  const session = await ort.InferenceSession.create(g.model(), { logSeverityLevel: 3 });
  try {
    const feeds: Record<string, import('onnxruntime-node').Tensor> = {};
    for (const f of g.feeds) {
      const l = f.leaf as DataLeaf;
      feeds[f.name] = new ort.Tensor(l.elemType as 'float32', l.data as Float32Array, [...l.shape]);
    }
    const out = await session.run(feeds);
    return out[g.outputNames[0]].data as Float32Array;
  } finally {
    await session.release();
  }
}

function matmul64(x: Float32Array, w: Float64Array, m: number, n: number, k: number, bias?: Float32Array): Float64Array {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = bias ? bias[j] : 0;
      for (let t = 0; t < k; t++) s += x[i * k + t] * w[j * k + t];
      out[i * n + j] = s;
    }
  }
  return out;
}

/** Largest |a − b| over the scale of b (its largest |value|). */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let e = 0, s = 0;
  for (let i = 0; i < b.length; i++) { e = Math.max(e, Math.abs(a[i] - b[i])); s = Math.max(s, Math.abs(b[i])); }
  return e / s;
}

const rowsOf = (w: Float32Array, k: number) => (r: number, out: Float32Array) => out.set(w.subarray(r * k, (r + 1) * k));

describe('block-wise weight quantization (MatMulNBits layout)', function () {
  this.timeout(60_000);

  const cases: Array<{ bits: QuantBits; blockSize: number; symmetric: boolean; n: number; k: number; m: number }> = [
    { bits: 4, blockSize: 32, symmetric: true, n: 24, k: 96, m: 3 },
    { bits: 4, blockSize: 32, symmetric: false, n: 17, k: 70, m: 2 },       // K padded, odd block count
    { bits: 8, blockSize: 32, symmetric: true, n: 16, k: 64, m: 1 },
    { bits: 8, blockSize: 64, symmetric: false, n: 9, k: 100, m: 5 },       // K padded
    { bits: 4, blockSize: 16, symmetric: true, n: 8, k: 40, m: 4 },
  ];

  for (const c of cases) {
    const label = `int${c.bits} block ${c.blockSize} ${c.symmetric ? 'symmetric' : 'asymmetric'} [${c.n}, ${c.k}] × ${c.m} rows`;

    it(`${label}: onnxruntime equals float64 math on the unpacked weights (accuracy_level 0)`, async () => {
      const w = rand(c.n * c.k, 11 + c.n, 0.5);
      const x = rand(c.m * c.k, 23 + c.k, 2);
      const bias = rand(c.n, 5);
      const q = quantizeBlockwise(c.n, c.k, rowsOf(w, c.k), c);
      const want = matmul64(x, unpack(q), c.m, c.n, c.k, bias);
      const got = await runNBits(x, c.m, q, 0, bias);
      expect(relErr(got, want)).to.be.below(1e-5);
    });

    it(`${label}: accuracy_level 4 (int8 activations) stays within its activation rounding`, async () => {
      const w = rand(c.n * c.k, 13 + c.n, 0.5);
      const x = rand(c.m * c.k, 29 + c.k, 2);
      const q = quantizeBlockwise(c.n, c.k, rowsOf(w, c.k), c);
      const deq = unpack(q);
      const want = matmul64(x, deq, c.m, c.n, c.k);
      const got = await runNBits(x, c.m, q, 4);
      // Each activation block is rounded to int8 (a step of its largest |x| / 127): an output
      // moves by at most Σ_blocks (step/2) · Σ|w| over the block.
      for (let i = 0; i < c.m; i++) {
        for (let j = 0; j < c.n; j++) {
          let bound = 0;
          for (let b = 0; b < q.kBlocks; b++) {
            let xmax = 0, wsum = 0;
            for (let t = b * c.blockSize; t < Math.min(c.k, (b + 1) * c.blockSize); t++) {
              xmax = Math.max(xmax, Math.abs(x[i * c.k + t]));
              wsum += Math.abs(deq[j * c.k + t]);
            }
            bound += (xmax / 127 / 2) * wsum;
          }
          expect(Math.abs(got[i * c.n + j] - want[i * c.n + j]), `(${i}, ${j})`).to.be.at.most(bound * 1.01 + 1e-5);
        }
      }
    });

    it(`${label}: the dequantized weights lie within half a step of the originals`, () => {
      const w = rand(c.n * c.k, 31 + c.k, 0.5);
      const q = quantizeBlockwise(c.n, c.k, rowsOf(w, c.k), c);
      const back = unpack(q);
      const ours = dequantizeBlockwise(q);
      for (let r = 0; r < c.n; r++) {
        for (let i = 0; i < c.k; i++) {
          const b = Math.floor(i / c.blockSize);
          const step = Math.abs(q.scales[r * q.kBlocks + b]);
          const at = r * c.k + i;
          // Symmetric blocks put the largest magnitude at the lowest code exactly, so a value of
          // the other sign near it may clip at the top code: within one step there, half elsewhere.
          const clipped = c.symmetric && Math.abs(w[at] / step) > (1 << (c.bits - 1)) - 0.5;
          const bound = step * (clipped ? 1 : 0.5) * (1 + 1e-6) + 1e-12;
          expect(Math.abs(back[at] - w[at]), `(${r}, ${i})`).to.be.at.most(bound);
          expect(ours[at]).to.equal(Math.fround(back[at]));
        }
      }
      // A step is at most the block's largest magnitude over 2^(bits-1), and no error exceeds
      // one step: 1/8 of the largest weight for int4, 1/128 for int8.
      expect(relErr(back, w)).to.be.below(c.bits === 4 ? 0.126 : 0.0079);
    });
  }

  it('keeps zero exact and pads K with codes that stand for zero', () => {
    const k = 40, n = 2;
    const w = new Float32Array(n * k);
    w[3] = 1; w[k + 39] = -0.25;                                        // all else exactly 0
    const q = quantizeBlockwise(n, k, rowsOf(w, k), { bits: 4, blockSize: 32, symmetric: false });
    const back = unpack(q);
    for (let i = 0; i < n * k; i++) expect(back[i]).to.equal(w[i] === 0 ? 0 : back[i]);
    expect(back[3]).to.be.closeTo(1, 1 / 15);
    // The padded block 1 of row 1 (elements 32..63, K = 40): codes past K decode to 0.
    const blob = 16, zp = (q.zeroPoints![1] >> 4) & 15;
    const block = q.data.subarray((1 * q.kBlocks + 1) * blob, (1 * q.kBlocks + 2) * blob);
    for (let j = 8; j < 32; j++) expect(j % 2 === 0 ? block[j >> 1] & 15 : block[j >> 1] >> 4).to.equal(zp);
  });

  it('quantizes 16-bit sources to the same codes as their float32 values', () => {
    const n = 6, k = 64;
    const w = rand(n * k, 77, 0.3);
    for (const [narrow, widen] of [[f32ToBf16, bf16ToF32], [f32ToF16, f16ToF32]] as const) {
      const bits = narrow(w);
      const exact = widen(bits);
      const from16 = quantizeBlockwise(n, k, (r, out) => widen(bits.subarray(r * k, (r + 1) * k), out), { bits: 8 });
      const from32 = quantizeBlockwise(n, k, rowsOf(exact, k), { bits: 8 });
      expect(from16.data).to.deep.equal(from32.data);
      expect(from16.scales).to.deep.equal(from32.scales);
    }
  });

  it('symmetric codes are the documented ones: the first largest magnitude is exact, the rest rounded half up', () => {
    // Blocks with exact half-step ties, both signs of the extreme, repeated extremes, zeros and
    // values that round to -0, against the rule written out in float64 here.
    for (const bits of [4, 8] as const) {
      const k = 96, n = 5, mid = 2 ** (bits - 1);
      const w = rand(n * k, 11 + bits, 0.5);
      for (let i = 0; i < k; i++) w[i] = (i % 2 ? -1 : 1) * (i % 17) / 16;        // row 0: exact ties
      w[k + 3] = -2; w[k + 40] = 2; w[k + 41] = -2;                                // row 1: ±extremes
      w.fill(0, 2 * k + 32, 2 * k + 64);                                           // row 2: a zero block
      for (let i = 3 * k; i < 4 * k; i++) w[i] = -1e-9 * (i % 3);                   // row 3: tiny negatives
      const q = quantizeBlockwise(n, k, rowsOf(w, k), { bits });
      for (let r = 0; r < n; r++) for (let b = 0; b < q.kBlocks; b++) {
        const block = Array.from(w.subarray(r * k + b * 32, r * k + b * 32 + 32));
        let m = 0;
        for (const v of block) if (Math.abs(v) > Math.abs(m)) m = v;
        const scale = Math.fround(m / -mid);
        expect(Object.is(q.scales[r * q.kBlocks + b], scale), `row ${r} block ${b} scale`).to.equal(true);
        block.forEach((v, j) => {
          const want = scale === 0 ? mid : Math.min(2 * mid - 1, Math.max(0, Math.floor(v * (1 / scale) + 0.5) + mid));
          const at = (r * q.kBlocks + b) * (32 * bits / 8);
          const code = bits === 8 ? q.data[at + j] : (q.data[at + (j >> 1)] >> ((j & 1) * 4)) & 15;
          expect(code, `int${bits} row ${r} element ${b * 32 + j} (${v})`).to.equal(want);
        });
      }
    }
  });

  it('refuses non-finite weights and bad block sizes', () => {
    const w = new Float32Array(32); w[5] = NaN;
    expect(() => quantizeBlockwise(1, 32, rowsOf(w, 32), { bits: 4 })).to.throw(/non-finite/);
    expect(() => quantizeBlockwise(1, 32, rowsOf(new Float32Array(32), 32), { bits: 4, blockSize: 24 })).to.throw(/power of two/);
    expect(() => quantizeBlockwise(1, 32, rowsOf(new Float32Array(32), 32), { bits: 2 as QuantBits })).to.throw(/bits/);
  });
});
