/**
 * The ops layer on a backend stripped to the core: every default composite (src/ops) and the
 * core-op attention (src/attention/attend.ts) against float64 math written here, and the whole
 * conformance run (op cases and the tiny checkpoints, end to end) against reference.
 */
import { expect } from 'chai';
import { attend } from '../src/attention/attend.js';
import { ReferenceBackend } from '../src/backends/reference/reference-backend.js';
import { runConformance } from '../src/conformance/run-conformance.js';
import type { AttentionOptions } from '../src/interfaces/attention-kernel.js';
import type { CoreOpName, OpName, Tensor, TensorBackend } from '../src/interfaces/tensor-backend.js';
import { withDefaultOps } from '../src/ops/with-default-ops.js';
import { wrapBackend } from '../src/ops/wrap-backend.js';
import { rand } from './support/seeded-values.js';

const CORE: readonly CoreOpName[] = ['upload', 'read', 'matmul', 'add', 'mul', 'scale', 'unary', 'reduce',
  'embedding', 'concat', 'slice', 'reshape', 'transpose', 'writeRows'];

/** Reference with only its core methods: no fused op, supports() false for every composite. */
function coreOnly(inner = new ReferenceBackend()): TensorBackend {
  const b: Record<string, unknown> = {
    name: 'core-only',
    supports: (op: OpName) => (CORE as readonly string[]).includes(op),
  };
  for (const m of [...CORE, 'zeros', 'dispose'] as const) b[m] = (inner[m] as (...a: unknown[]) => unknown).bind(inner);
  return b as unknown as TensorBackend;
}

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  expect(a.length).to.equal(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

/** Applies f to each row of length d of x (float64 in, float64 out). */
const rows = (x: Float32Array, d: number, f: (row: number[]) => number[]): number[] => {
  const out: number[] = [];
  for (let o = 0; o < x.length; o += d) out.push(...f(Array.from(x.subarray(o, o + d))));
  return out;
};

describe('default ops on a core-only backend', function () {
  this.timeout(120_000);
  const core = coreOnly();
  const ops = withDefaultOps(core);
  const up = (x: Float32Array, shape: number[]): Tensor => core.upload(x, shape);

  it('the core-only backend declares no composite, and withDefaultOps fills in each one', function () {
    for (const op of ['gelu', 'layerNorm', 'rmsNorm', 'softmax', 'rope', 'patchEmbed', 'attention'] as const) {
      expect(core[op], op).to.equal(undefined);
      expect(core.supports(op), op).to.equal(false);
    }
    for (const op of ['gelu', 'layerNorm', 'rmsNorm', 'softmax', 'rope', 'patchEmbed'] as const) expect(ops[op]).to.be.a('function');
    const ref = new ReferenceBackend();
    expect(withDefaultOps(ref)).to.equal(ref);                    // every composite declared: no wrapper
  });

  it('unary and reduce (reference) equal float64 math, reduce keeping a size-1 last dim', async function () {
    const ref = new ReferenceBackend();
    const x = rand(3 * 5, 1, 3), t = ref.upload(x, [3, 5]);
    const f64: Record<string, (v: number) => number> = {
      tanh: Math.tanh, exp: Math.exp, sigmoid: (v) => 1 / (1 + Math.exp(-v)), reciprocal: (v) => 1 / v,
    };
    for (const [op, f] of Object.entries(f64)) {
      expect(maxDiff(await ref.read(ref.unary(op as 'tanh', t)), Array.from(x, f)), op).to.be.below(1e-6 * 30);
    }
    const pos = ref.upload(Float32Array.from(x, Math.abs), [3, 5]);
    expect(maxDiff(await ref.read(ref.unary('rsqrt', pos)), Array.from(x, (v) => 1 / Math.sqrt(Math.abs(v))))).to.be.below(1e-3);
    const sum = ref.reduce('sum', t), max = ref.reduce('max', t);
    expect([...sum.shape]).to.deep.equal([3, 1]);
    expect(maxDiff(await ref.read(sum), rows(x, 5, (r) => [r.reduce((a, b) => a + b, 0)]))).to.be.below(1e-5);
    expect(maxDiff(await ref.read(max), rows(x, 5, (r) => [Math.max(...r)]))).to.equal(0);
    // A [..., 1] operand broadcasts over the row.
    expect(maxDiff(await ref.read(ref.add(t, max)), Array.from(x, (v, i) => v + Math.max(...x.subarray(Math.floor(i / 5) * 5, Math.floor(i / 5) * 5 + 5)))))
      .to.be.below(1e-6);
  });

  it('gelu, layerNorm, rmsNorm, softmax match float64 definitions', async function () {
    const d = 33, x = rand(7 * d, 2, 4), w = rand(d, 3), bias = rand(d, 4);
    const X = up(x, [7, d]), W = up(w, [d]), B = up(bias, [d]);
    const c = Math.sqrt(2 / Math.PI);
    const gelu = Array.from(x, (v) => 0.5 * v * (1 + Math.tanh(c * (v + 0.044715 * v ** 3))));
    expect(maxDiff(await core.read(ops.gelu(X)), gelu)).to.be.below(1e-5);
    const ln = rows(x, d, (r) => {
      const mean = r.reduce((a, b) => a + b, 0) / d;
      const v = r.reduce((a, b) => a + (b - mean) ** 2, 0) / d;
      return r.map((e, i) => ((e - mean) / Math.sqrt(v + 1e-6)) * w[i] + bias[i]);
    });
    expect(maxDiff(await core.read(ops.layerNorm(X, W, B, 1e-6)), ln)).to.be.below(1e-5);
    const rms = rows(x, d, (r) => {
      const inv = 1 / Math.sqrt(r.reduce((a, b) => a + b * b, 0) / d + 1e-6);
      return r.map((e, i) => e * inv * (1 + w[i]));
    });
    expect(maxDiff(await core.read(ops.rmsNorm(X, W, 1e-6)), rms)).to.be.below(1e-5);
    const big = Float32Array.from(x, (v) => v * 40);                            // logits far beyond exp's range
    big[3] = -Infinity;
    const sm = rows(big, d, (r) => { const m = Math.max(...r); const e = r.map((v) => Math.exp(v - m)); const s = e.reduce((a, b) => a + b, 0); return e.map((v) => v / s); });
    expect(maxDiff(await core.read(ops.softmax(up(big, [7, d]))), sm)).to.be.below(1e-6);
  });

  it('rope (rotate-half) and patchEmbed match float64 definitions', async function () {
    const [t, h, d] = [5, 3, 8], x = rand(t * h * d, 5), pos = Int32Array.from([1, 2, 3, 40, 700]);
    const want: number[] = new Array(x.length).fill(0);
    for (let ti = 0; ti < t; ti++) for (let hi = 0; hi < h; hi++) for (let i = 0; i < d / 2; i++) {
      const a = pos[ti] * 10000 ** (-2 * i / d), o = (ti * h + hi) * d;
      want[o + i] = x[o + i] * Math.cos(a) - x[o + i + d / 2] * Math.sin(a);
      want[o + i + d / 2] = x[o + i + d / 2] * Math.cos(a) + x[o + i] * Math.sin(a);
    }
    expect(maxDiff(await core.read(ops.rope(up(x, [t, h, d]), pos, 10000)), want)).to.be.below(1e-5);

    const [C, S, P, O] = [3, 8, 4, 5], px = rand(C * S * S, 6), wt = rand(O * C * P * P, 7), bi = rand(O, 8);
    const g = S / P, conv: number[] = [];
    for (let n = 0; n < g * g; n++) for (let o = 0; o < O; o++) {
      let s = bi[o];
      const y0 = Math.floor(n / g) * P, x0 = (n % g) * P;
      for (let ci = 0; ci < C; ci++) for (let y = 0; y < P; y++) for (let xx = 0; xx < P; xx++) {
        s += px[ci * S * S + (y0 + y) * S + x0 + xx] * wt[((o * C + ci) * P + y) * P + xx];
      }
      conv.push(s);
    }
    const out = ops.patchEmbed(up(px, [C, S, S]), up(wt, [O, C, P, P]), up(bi, [O]), P);
    expect([...out.shape]).to.deep.equal([g * g, O]);
    expect(maxDiff(await core.read(out), conv)).to.be.below(1e-5);
  });

  it('attend() from core ops: GQA, prefix-LM mask, soft-cap and sliding window match float64', async function () {
    const [tq, hq, hkv, d, tk] = [6, 4, 2, 8, 9];
    const q = rand(tq * hq * d, 9), k = rand(tk * hkv * d, 10), v = rand(tk * hkv * d, 11);
    const opts: AttentionOptions = { scale: 0.4, mask: { kind: 'prefixLm', prefixLength: 3 }, queryOffset: 2, kvLength: 8, softCap: 2, slidingWindow: 3 };
    const want: number[] = [];
    for (let i = 0; i < tq; i++) for (let hh = 0; hh < hq; hh++) {
      const g = Math.floor(hh / (hq / hkv)), qi = 2 + i, sc: number[] = [];
      for (let j = 0; j < 8; j++) {
        const visible = (qi < 3 && j < 3) || (qi - j < 3 && (j < 3 || j <= qi));
        let s = 0;
        for (let x = 0; x < d; x++) s += q[(i * hq + hh) * d + x] * k[(j * hkv + g) * d + x];
        sc.push(visible ? 2 * Math.tanh((s * 0.4) / 2) : -Infinity);
      }
      const m = Math.max(...sc), e = sc.map((s) => Math.exp(s - m)), z = e.reduce((a, b) => a + b, 0);
      for (let x = 0; x < d; x++) want.push(e.reduce((a, p, j) => a + (p / z) * v[(j * hkv + g) * d + x], 0));
    }
    const out = attend(core, up(q, [tq, hq, d]), up(k, [tk, hkv, d]), up(v, [tk, hkv, d]), opts);
    expect(maxDiff(await core.read(out), want)).to.be.below(1e-5);
  });

  it('a wrapping backend keeps the fused attention: attend() reaches it through wrapBackend', function () {
    const ref = new ReferenceBackend();
    let fused = 0;
    const inner = wrapBackend(ref, { attention: (...a: Parameters<ReferenceBackend['attention']>) => { fused++; return ref.attention(...a); } });
    const wrapped = wrapBackend(inner, { name: 'wrapper' });
    expect(wrapped.name).to.equal('wrapper');
    const q = ref.upload(rand(2 * 2 * 4, 1), [2, 2, 4]), kv = ref.upload(rand(3 * 2 * 4, 2), [3, 2, 4]);
    attend(wrapped, q, kv, kv, { scale: 0.5, mask: { kind: 'causal' } });
    expect(fused).to.equal(1);
  });

  it('conformance: composites run on the defaults and pass; the tiny checkpoints match reference end to end', async function () {
    const r = await runConformance({ backend: () => coreOnly(), samplers: false });
    const bad = [...r.ops, ...r.models].filter((x) => x.status !== 'pass').map((x) => `${'case' in x ? x.case : x.model}: ${x.status} ${x.detail ?? ''}`);
    expect(bad).to.deep.equal([]);
    expect(r.ok).to.equal(true);
    for (const op of ['gelu', 'layerNorm', 'rmsNorm', 'softmax', 'rope', 'patchEmbed']) {
      const cases = r.ops.filter((o) => o.op === op);
      expect(cases.length, op).to.be.above(0);
      for (const c of cases) expect(c.onDefaults, `${op} ${c.case}`).to.include(op);
    }
    expect(r.models.length).to.be.at.least(3);
  });
});
