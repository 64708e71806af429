/**
 * Query-block tiling of attention (src/attention/query-blocks.ts): tiled equals untiled, and both
 * equal a float64 attention written here, on every kernel that materialises scores (plain on
 * any backend, onnx, tfjs), at small shapes with Gemma 2's soft-cap, window and prefix; and
 * the tiled kernels really hold less: the largest score tensor (plain), tfjs's peak bytes,
 * onnx's graph (one Softmax per block).
 */
import { AttendKernel } from '../src/attention/plain-attention-kernel.js';
import { expect } from 'chai';
import type { AttentionKernel, AttentionOptions } from '../src/interfaces/attention-kernel.js';
import { PaliGemmaError } from '../src/interfaces/errors.js';
import type { MatmulOptions, Tensor, TensorBackend } from '../src/interfaces/tensor-backend.js';
import { OnnxBackend } from '../src/backends/onnx/onnx-backend.js';
import { ReferenceBackend } from '../src/backends/reference/reference-backend.js';
import { TfjsBackend } from '../src/backends/tfjs/tfjs-backend.js';
import { PlainAttentionKernel } from '../src/attention/plain-attention-kernel.js';
import { queryBlocks } from '../src/attention/query-blocks.js';
import { gaussian, mulberry32 } from '../src/tiny-models/tiny-checkpoint.js';

interface Shape { tq: number; tk: number; hq: number; hkv: number; d: number; opts: AttentionOptions }

const SHAPES: Record<string, Shape> = {
  'prefill T40, prefix 24, window 8, cap 5, gqa 2': {
    tq: 40, tk: 40, hq: 4, hkv: 2, d: 16,
    opts: { scale: 0.25, mask: { kind: 'prefixLm', prefixLength: 24 }, slidingWindow: 8, softCap: 5 },
  },
  'chunk of 29 at 11 in a 48-row cache, causal, gqa 4': {
    tq: 29, tk: 48, hq: 4, hkv: 1, d: 8,
    opts: { scale: 0.3, mask: { kind: 'causal' }, queryOffset: 11, kvLength: 40 },
  },
  'vision-like T37 bidirectional, mha': {
    tq: 37, tk: 37, hq: 3, hkv: 3, d: 8, opts: { scale: 0.35, mask: { kind: 'bidirectional' } },
  },
};

/** 7 rows per block: uneven blocks (the last shorter), none aligned with the prefix or the window. */
const blockOf7 = (s: Shape) => 7 * s.hq * (s.opts.kvLength ?? s.tk);

function inputs(s: Shape, seed: number): { q: Float32Array; k: Float32Array; v: Float32Array } {
  const normal = gaussian(mulberry32(seed));
  const draw = (n: number, std: number) => Float32Array.from({ length: n }, () => std * normal());
  return { q: draw(s.tq * s.hq * s.d, 2), k: draw(s.tk * s.hkv * s.d, 1), v: draw(s.tk * s.hkv * s.d, 1) };
}

/** Float64 attention, written from the definition (prefix rows see the whole prefix; window i − w < j). */
function float64Attention(s: Shape, x: { q: Float32Array; k: Float32Array; v: Float32Array }): Float64Array {
  const { tq, hq, hkv, d, opts } = s, len = opts.kvLength ?? s.tk, off = opts.queryOffset ?? 0;
  const out = new Float64Array(tq * hq * d);
  for (let i = 0; i < tq; i++) {
    const qi = off + i;
    for (let h = 0; h < hq; h++) {
      const g = Math.floor(h / (hq / hkv));
      const sc: number[] = [];
      for (let j = 0; j < len; j++) {
        const m = opts.mask;
        const inPrefix = m.kind === 'prefixLm' && qi < m.prefixLength && j < m.prefixLength;
        const base = m.kind === 'bidirectional' || j <= qi || (m.kind === 'prefixLm' && j < m.prefixLength);
        const visible = inPrefix || (base && (opts.slidingWindow === undefined || qi - j < opts.slidingWindow));
        if (!visible) { sc.push(-Infinity); continue; }
        let dot = 0;
        for (let c = 0; c < d; c++) dot += x.q[(i * hq + h) * d + c] * x.k[(j * hkv + g) * d + c];
        let z = dot * opts.scale;
        if (opts.softCap !== undefined) z = opts.softCap * Math.tanh(z / opts.softCap);
        sc.push(z);
      }
      const max = Math.max(...sc), e = sc.map((z) => Math.exp(z - max)), sum = e.reduce((a, b) => a + b, 0);
      for (let j = 0; j < len; j++) {
        for (let c = 0; c < d; c++) out[(i * hq + h) * d + c] += (e[j] / sum) * x.v[(j * hkv + g) * d + c];
      }
    }
  }
  return out;
}

async function attend(b: TensorBackend, kernel: AttentionKernel, s: Shape, x: ReturnType<typeof inputs>): Promise<Float32Array> {
  const q = b.upload(x.q, [s.tq, s.hq, s.d]), k = b.upload(x.k, [s.tk, s.hkv, s.d]), v = b.upload(x.v, [s.tk, s.hkv, s.d]);
  const out = kernel.attend(b, q, k, v, s.opts);
  try { return await b.read(out); } finally { b.dispose([q, k, v, out]); }
}

const maxAbs = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

/** Records the largest matmul and softmax result (elements): the plain kernel's score matrices. */
class LargestScoresBackend extends ReferenceBackend {
  largest = 0;
  override matmul(a: Tensor, b: Tensor, opts?: MatmulOptions): Tensor { return this.note(super.matmul(a, b, opts)); }
  override softmax(x: Tensor): Tensor { return this.note(super.softmax(x)); }
  private note(t: Tensor): Tensor {
    this.largest = Math.max(this.largest, t.shape.reduce((p, c) => p * c, 1));
    return t;
  }
}

describe('attention tiled over query blocks', function () {
  this.timeout(60_000);

  it('queryBlocks covers every row once, within the element budget', function () {
    expect(queryBlocks(10, 2, 5, 0)).to.deep.equal([[0, 10]]);
    expect(queryBlocks(10, 2, 5, 30)).to.deep.equal([[0, 3], [3, 6], [6, 9], [9, 10]]);
    expect(queryBlocks(3, 4, 100, 1)).to.deep.equal([[0, 1], [1, 2], [2, 3]]);   // at least one row
    // 896 px SigLIP: 16 heads × 4096 keys; the default budget takes 64 query rows per block.
    expect(queryBlocks(4096, 16, 4096)[0]).to.deep.equal([0, 64]);
    expect(queryBlocks(4096, 16, 4096)).to.have.length(64);
  });

  for (const [label, s] of Object.entries(SHAPES)) {
    describe(label, function () {
      const x = inputs(s, label.length);
      const want = float64Attention(s, x);
      const tol = 1e-5 * Math.max(...Array.from(want, Math.abs));

      it('plain kernel (reference ops): tiled = untiled = float64, and the largest score matrix shrinks to the block', async function () {
        const b = new LargestScoresBackend();
        const whole = await attend(b, new PlainAttentionKernel(0), s, x);
        const untiledLargest = b.largest;
        b.largest = 0;
        const tiled = await attend(b, new PlainAttentionKernel(blockOf7(s)), s, x);
        expect(maxAbs(tiled, whole)).to.equal(0);
        expect(maxAbs(tiled, want)).to.be.below(tol);
        // The soft-cap is an elementwise unary('tanh'): no softmax wider than [rows, keys].
        const len = s.opts.kvLength ?? s.tk;
        expect(untiledLargest).to.equal(s.tq * len);
        expect(b.largest).to.equal(7 * len);
      });

      it('onnx kernel: tiled = untiled = float64, one Softmax per block in the graph', async function () {
        const results: Float32Array[] = [], nodes: number[] = [];
        for (const attentionBlockElements of [0, blockOf7(s)]) {
          const b = new OnnxBackend({ attentionBlockElements });
          await b.init();
          try {
            results.push(await attend(b, new AttendKernel('onnx'), s, x));
            nodes.push(b.stats.lastGraph.nodes);
          } finally {
            await b.close();
          }
        }
        expect(maxAbs(results[1], results[0])).to.be.below(tol / 10);
        expect(maxAbs(results[1], want)).to.be.below(tol);
        expect(nodes[1]).to.be.greaterThan(nodes[0] * 2);       // ⌈tq / 7⌉ chains instead of one
      });

      it('tfjs kernel: tiled = untiled = float64, with a smaller peak', async function () {
        const results: Float32Array[] = [], peaks: number[] = [];
        for (const attentionBlockElements of [0, blockOf7(s)]) {
          const b = new TfjsBackend({ attentionBlockElements });
          await b.init();
          try {
            const up = { q: b.upload(x.q, [s.tq, s.hq, s.d]), k: b.upload(x.k, [s.tk, s.hkv, s.d]), v: b.upload(x.v, [s.tk, s.hkv, s.d]) };
            let out: Tensor | undefined;
            const info = await b.tf.profile(() => { out = new AttendKernel('tfjs').attend(b, up.q, up.k, up.v, s.opts); });
            peaks.push(info.peakBytes);
            results.push(await b.read(out!));
            b.dispose([up.q, up.k, up.v, out!]);
          } finally {
            await b.close();
          }
        }
        expect(maxAbs(results[1], results[0])).to.be.below(tol / 10);
        expect(maxAbs(results[1], want)).to.be.below(tol);
        expect(peaks[1]).to.be.below(peaks[0]);
      });
    });
  }

  it('a bad attentionBlockElements is refused by name', function () {
    expect(() => new OnnxBackend({ attentionBlockElements: -1 })).to.throw(PaliGemmaError, /onnx backend: attentionBlockElements must be a non-negative integer/);
    expect(() => new TfjsBackend({ attentionBlockElements: 1.5 })).to.throw(PaliGemmaError, /tfjs backend: attentionBlockElements/);
  });
});
