/** The reference backend's ops against naive float64 loops written here. */
import { expect } from 'chai';
import { ReferenceBackend } from '../src/backends/reference/reference-backend.js';
import { ReferenceAttentionKernel } from '../src/backends/reference/reference-attention-kernel.js';
import { PlainAttentionKernel } from '../src/attention/plain-attention-kernel.js';
import type { AttentionMask } from '../src/interfaces/attention-kernel.js';
import { rand } from './support/seeded-values.js';

const b = new ReferenceBackend();

function close(a: ArrayLike<number>, e: ArrayLike<number>, tol = 1e-5): void {
  expect(a.length).to.equal(e.length);
  for (let i = 0; i < e.length; i++) {
    if (Math.abs(a[i] - e[i]) > tol * (1 + Math.abs(e[i]))) {
      expect.fail(`element ${i}: ${a[i]} vs expected ${e[i]}`);
    }
  }
}

describe('reference backend ops', function () {
  for (const [m, k, n] of [[1, 1, 1], [5, 7, 3], [4, 600, 9], [13, 17, 33], [8, 1030, 4]]) {
    it(`matmul ${m}×${k}·${k}×${n} (plain and transposed B, with bias)`, async function () {
      const a = rand(m * k, 1), w = rand(n * k, 2), bias = rand(n, 3);
      const expected = new Float64Array(m * n);
      for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
        let s = bias[j];
        for (let p = 0; p < k; p++) s += a[i * k + p] * w[j * k + p];
        expected[i * n + j] = s;
      }
      const A = b.upload(a, [m, k]);
      const t = await b.read(b.matmul(A, b.upload(w, [n, k]), { transposeB: true, bias: b.upload(bias, [n]) }));
      close(t, expected, 1e-4);
      const wT = b.transpose(b.upload(w, [n, k]), [1, 0]);                 // [K, N]
      const p = await b.read(b.add(b.matmul(A, wT), b.upload(bias, [n])));
      close(p, expected, 1e-4);
    });
  }

  it('layerNorm, rmsNorm (1 + w), gelu (tanh), softmax with large logits', async function () {
    const x = Float32Array.from([1, 2, 3, 4, -1, 0, 1, 2]);
    const w = Float32Array.from([0.5, -0.5, 0, 1]);
    const rms = await b.read(b.rmsNorm(b.upload(x, [2, 4]), b.upload(w, [4]), 0));
    const r0 = 1 / Math.sqrt((1 + 4 + 9 + 16) / 4);
    close(rms.subarray(0, 4), [1 * r0 * 1.5, 2 * r0 * 0.5, 3 * r0, 4 * r0 * 2]);
    const ln = await b.read(b.layerNorm(b.upload(x, [2, 4]), b.upload(Float32Array.of(1, 1, 1, 1), [4]), b.upload(Float32Array.of(0, 0, 0, 1), [4]), 0));
    const sd = Math.sqrt(1.25);
    close(ln.subarray(0, 4), [-1.5 / sd, -0.5 / sd, 0.5 / sd, 1.5 / sd + 1]);
    close(await b.read(b.gelu(b.upload(Float32Array.of(1, -1, 0), [3]))), [0.8411919906, -0.1588080094, 0], 1e-6);
    const sm = await b.read(b.softmax(b.upload(Float32Array.of(1000, 999, -1000), [3])));
    close(sm, [1 / (1 + Math.exp(-1)), Math.exp(-1) / (1 + Math.exp(-1)), 0]);
  });

  it('rope rotates halves by position · theta^(-2i/D)', async function () {
    const x = Float32Array.from([1, 2, 3, 4]);                             // [1, 1, 4]
    const out = await b.read(b.rope(b.upload(x, [1, 1, 4]), Int32Array.of(3), 100));
    const a0 = 3, a1 = 3 / 10;
    close(out, [1 * Math.cos(a0) - 3 * Math.sin(a0), 2 * Math.cos(a1) - 4 * Math.sin(a1),
      3 * Math.cos(a0) + 1 * Math.sin(a0), 4 * Math.cos(a1) + 2 * Math.sin(a1)]);
  });

  it('concat, slice, transpose, embedding, writeRows', async function () {
    const x = b.upload(Float32Array.from([0, 1, 2, 3, 4, 5]), [2, 3]);
    const y = b.upload(Float32Array.from([6, 7]), [2, 1]);
    close(await b.read(b.concat([x, y], 1)), [0, 1, 2, 6, 3, 4, 5, 7]);
    close(await b.read(b.slice(x, 1, 1, 3)), [1, 2, 4, 5]);
    close(await b.read(b.transpose(x, [1, 0])), [0, 3, 1, 4, 2, 5]);
    close(await b.read(b.embedding(x, Int32Array.of(1, 0, 1))), [3, 4, 5, 0, 1, 2, 3, 4, 5]);
    const dst = b.zeros([4, 3]);
    b.writeRows(dst, x, 1);
    close(await b.read(dst), [0, 0, 0, 0, 1, 2, 3, 4, 5, 0, 0, 0]);
  });

  it('patchEmbed equals a strided convolution', async function () {
    const [c, h, w, o, p] = [3, 8, 12, 5, 4];
    const px = rand(c * h * w, 4), wt = rand(o * c * p * p, 5), bias = rand(o, 6);
    const out = await b.read(b.patchEmbed(b.upload(px, [c, h, w]), b.upload(wt, [o, c, p, p]), b.upload(bias, [o]), p));
    const gw = w / p;
    const expected: number[] = [];
    for (let py = 0; py < h / p; py++) for (let qx = 0; qx < gw; qx++) for (let oc = 0; oc < o; oc++) {
      let s = bias[oc];
      for (let ci = 0; ci < c; ci++) for (let y = 0; y < p; y++) for (let x = 0; x < p; x++) {
        s += px[ci * h * w + (py * p + y) * w + qx * p + x] * wt[((oc * c + ci) * p + y) * p + x];
      }
      expected.push(s);
    }
    close(out, expected, 1e-4);
  });

  const masks: AttentionMask[] = [{ kind: 'bidirectional' }, { kind: 'causal' }, { kind: 'prefixLm', prefixLength: 3 }];
  for (const mask of masks) {
    it(`attention kernels agree with naive attention (${mask.kind}, GQA 4:2, offset into a cache)`, async function () {
      const [tq, hq, hkv, d, cap, off] = [3, 4, 2, 5, 9, 2];
      const q = rand(tq * hq * d, 7), k = rand(cap * hkv * d, 8), v = rand(cap * hkv * d, 9);
      const kvLength = off + tq;
      const expected = new Float64Array(tq * hq * d);
      for (let i = 0; i < tq; i++) for (let h = 0; h < hq; h++) {
        const g = Math.floor(h / 2);
        const qi = off + i;
        const vis = (j: number) => mask.kind === 'bidirectional' || j <= qi || (mask.kind === 'prefixLm' && j < mask.prefixLength);
        const s: number[] = [];
        for (let j = 0; j < kvLength; j++) {
          let dot = 0;
          for (let x = 0; x < d; x++) dot += q[(i * hq + h) * d + x] * k[(j * hkv + g) * d + x];
          s.push(vis(j) ? dot * 0.5 : -Infinity);
        }
        const mx = Math.max(...s), e = s.map((z) => Math.exp(z - mx)), sum = e.reduce((a, z) => a + z, 0);
        for (let j = 0; j < kvLength; j++) for (let x = 0; x < d; x++) {
          expected[(i * hq + h) * d + x] += (e[j] / sum) * v[(j * hkv + g) * d + x];
        }
      }
      const args = [b.upload(q, [tq, hq, d]), b.upload(k, [cap, hkv, d]), b.upload(v, [cap, hkv, d])] as const;
      const opts = { scale: 0.5, mask, queryOffset: off, kvLength };
      close(await b.read(new ReferenceAttentionKernel().attend(b, ...args, opts)), expected, 1e-5);
      close(await b.read(new PlainAttentionKernel().attend(b, ...args, opts)), expected, 1e-5);
    });
  }
});
