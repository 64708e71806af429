/**
 * The WebGPU backend against the reference backend: every op on seeded random inputs, the fused
 * attention kernel for every mask, buffer accounting, whole tiny models, and process exit.
 *
 * Without a GPU this runs on SwiftShader (apt-get install libvulkan1 chromium-common); the whole
 * file is skipped, with the reason printed, only when no WebGPU adapter can be created.
 * Software WebGPU is slow, so shapes stay small.
 */
import { checkCoreOps } from './support/core-op-checks.js';
import { AttendKernel } from '../src/attention/plain-attention-kernel.js';
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ReferenceAttentionKernel } from '../src/backends/reference/reference-attention-kernel.js';
import { ReferenceBackend } from '../src/backends/reference/reference-backend.js';
import { WebGpuBackend } from '../src/backends/webgpu/webgpu-backend.js';
import { webgpuBackendPlugin } from '../src/backends/webgpu/webgpu-backend-module.js';
import type { AttentionMask, AttentionOptions } from '../src/interfaces/attention-kernel.js';
import { PaliGemmaError } from '../src/interfaces/errors.js';
import type { Tensor, TensorOps } from '../src/interfaces/tensor-backend.js';
import { PlainAttentionKernel } from '../src/attention/plain-attention-kernel.js';
import { BUILTIN_PLUGINS } from '../src/builtin-plugins.js';
import { createPipeline } from '../src/create-pipeline.js';
import { promptIds, type PaliGemmaPipeline } from '../src/index.js';
import { buildTinyCheckpoint, gqaSpec, makeTestImage, mhaSpec, mqaSpec } from './support/tiny-checkpoint.js';
import { argmax, relMaxDiff } from './support/model-compare.js';
import { startGpuOrSkip } from './support/webgpu.js';
import { SeededData, seedOf } from '../src/conformance/seeded-data.js';
import { sizeOf } from './support/seeded-values.js';
import { compare } from '../src/conformance/compare.js';
import { THRESHOLDS } from '../src/conformance/op-case.js';

const ROOT = resolve(import.meta.dirname, '..');

// ── seeded inputs and comparison ─────────────────────────────────────────────

/** Inputs seeded from a case name (the conformance kit's generator), so each case's inputs are fixed. */
const rngFor = (name: string): SeededData => new SeededData(seedOf(name));

/** Thresholds on the normalized MSE against the reference: the conformance kit's. */
const TOL = THRESHOLDS;

interface Input { data: Float32Array; shape: number[] }
const inp = (data: Float32Array, shape: number[]): Input => ({ data, shape });

/** Runs `op` on both backends on the same inputs, compares, and disposes everything. */
async function agree(
  gpu: WebGpuBackend, ref: TensorOps, inputs: Input[], op: (b: TensorOps, xs: Tensor[]) => Tensor, tol: number,
): Promise<number> {
  const xs = inputs.map((x) => gpu.upload(x.data, x.shape));
  const rs = inputs.map((x) => ref.upload(x.data, x.shape));
  const out = op(gpu, xs), want = op(ref, rs);
  expect(out.shape).to.deep.equal(want.shape);
  const err = compare(await gpu.read(out), await ref.read(want)).error;
  gpu.dispose([...xs, out]);
  expect(err, 'normalized MSE').to.be.at.most(tol);
  return err;
}

// ── the suite ────────────────────────────────────────────────────────────────

describe('webgpu backend', function () {
  this.timeout(120_000);
  const ref = new ReferenceBackend();
  let gpu: WebGpuBackend;
  const worst: Record<string, number> = {};
  const note = (op: string, err: number) => { worst[op] = Math.max(worst[op] ?? 0, err); };

  before(async function () {
    // Exact f32 weights: on an adapter with shader-f16 the default would narrow them to f16
    // (test/webgpu-16bit.test.ts covers that).
    gpu = await startGpuOrSkip(this, { weights: 'f32' });
  });
  after(async function () {
    if (Object.keys(worst).length > 0) {
      console.log(`    worst normalized MSE per op: ${Object.entries(worst).map(([k, v]) => `${k} ${v.toExponential(1)}`).join(', ')}`);
    }
    await gpu?.close();
  });

  it('names its engine and adapter', function () {
    expect(gpu.name).to.equal('webgpu');
    expect(gpu.engine).to.match(/^webgpu \(.+\)$/);
    expect(gpu.engine).to.contain(gpu.adapterName!);
    if (/swiftshader/.test(gpu.engine)) expect(gpu.engine).to.contain('software');
  });

  describe('matmul (tiled)', function () {
    const cases: Array<[number, number, number, boolean, boolean]> = [
      [1, 1, 1, false, false], [1, 129, 65, true, false], [3, 17, 5, false, false], [4, 16, 8, true, false],
      [8, 40, 70, false, true], [9, 40, 70, true, true], [17, 33, 65, true, true], [64, 64, 64, false, false],
      [65, 129, 33, false, false], [129, 65, 17, true, false], [300, 64, 129, true, true], [33, 1031, 17, true, false],
    ];
    for (const [m, k, n, tB, bias] of cases) {
      it(`m${m} k${k} n${n}${tB ? ' bᵀ' : ''}${bias ? ' +bias' : ''}`, async function () {
        const g = rngFor(`mm${m},${k},${n},${tB},${bias}`);
        const ins = [inp(g.normal(m * k), [m, k]), inp(g.normal(k * n, 1 / Math.sqrt(k)), tB ? [n, k] : [k, n])];
        if (bias) ins.push(inp(g.normal(n), [n]));
        note('matmul', await agree(gpu, ref, ins, (b, [x, w, bi]) => b.matmul(x, w, { transposeB: tB, bias: bi }), TOL.matmul));
      });
    }
    it('rejects mismatched inner sizes', function () {
      const a = gpu.upload(new Float32Array(6), [2, 3]), b = gpu.upload(new Float32Array(8), [4, 2]);
      expect(() => gpu.matmul(a, b)).to.throw(/inner sizes/);
      gpu.dispose([a, b]);
    });
  });

  describe('elementwise', function () {
    it('unary, reduce, row broadcast, and the defaults (src/ops, attendFromCore) on its core ops', async function () {
      for (const [op, e] of Object.entries(await checkCoreOps(gpu, 1e-9))) note(op, e);
    });
    const pairs: Array<[number[], number[]]> = [[[1], [1]], [[17, 33], [17, 33]], [[3, 17, 65], [65]], [[5, 7, 3], [7, 3]], [[300, 129], [129]]];
    for (const op of ['add', 'mul'] as const) {
      for (const [a, b] of pairs) {
        it(`${op} [${a}] with [${b}]`, async function () {
          const g = rngFor(`${op}${a}|${b}`);
          note(op, await agree(gpu, ref, [inp(g.normal(sizeOf(a), 2), a), inp(g.normal(sizeOf(b), 2), b)], (be, [x, y]) => be[op](x, y), TOL.elementwise));
        });
      }
    }
    it('add rejects a shape that does not broadcast', function () {
      const a = gpu.upload(new Float32Array(6), [2, 3]), b = gpu.upload(new Float32Array(2), [2]);
      expect(() => gpu.add(a, b)).to.throw(/broadcast/);
      gpu.dispose([a, b]);
    });
    for (const [shape, s] of [[[1], -2.5], [[17, 65], 0.125], [[300, 33], 1 / Math.sqrt(3)]] as const) {
      it(`scale [${shape}] by ${s}`, async function () {
        const g = rngFor(`scale${shape}`);
        note('scale', await agree(gpu, ref, [inp(g.normal(sizeOf(shape), 3), [...shape])], (b, [x]) => b.scale(x, s), TOL.elementwise));
      });
    }
    const geluInputs: Array<[number[], string, (g: SeededData, n: number) => Float32Array]> = [
      [[1], 'N(0,2)', (g, n) => g.normal(n, 2)], [[17, 65], 'N(0,2)', (g, n) => g.normal(n, 2)],
      [[7, 129], 'uniform ±30', (g, n) => g.uniform(n, -30, 30)],
      [[33], 'uniform −9…−3 (where 1 + tanh cancels)', (g, n) => g.uniform(n, -9, -3)],
    ];
    for (const [shape, what, gen] of geluInputs) {
      it(`gelu (tanh) [${shape}] ${what}`, async function () {
        const g = rngFor(`gelu${shape}${what}`);
        const x = gen(g, sizeOf(shape));
        note('gelu', await agree(gpu, ref, [inp(x, shape)], (b, [t]) => b.gelu(t), TOL.gelu));
      });
    }
  });

  describe('reductions over the last axis', function () {
    for (const [shape, mean] of [[[1, 1], 0], [[3, 17], 0], [[65, 129], 0], [[300, 65], 0], [[9, 129], 1000]] as const) {
      it(`layerNorm [${shape}]${mean ? ` rows of mean ${mean}` : ''}`, async function () {
        const g = rngFor(`ln${shape}${mean}`);
        const d = shape[1];
        const ins = [inp(g.normal(sizeOf(shape), 2, mean), [...shape]), inp(g.normal(d, 0.5, 1), [d]), inp(g.normal(d, 0.5), [d])];
        note('layerNorm', await agree(gpu, ref, ins, (b, [x, w, bi]) => b.layerNorm(x, w, bi, 1e-6), TOL.reduction));
      });
    }
    for (const shape of [[1, 1], [3, 17], [33, 129], [300, 65], [2, 1031], [2, 3, 5]]) {
      it(`rmsNorm (1 + w) [${shape}]`, async function () {
        const g = rngFor(`rms${shape}`);
        const d = shape[shape.length - 1];
        const ins = [inp(g.normal(sizeOf(shape), 3), shape), inp(g.normal(d, 0.3), [d])];
        note('rmsNorm', await agree(gpu, ref, ins, (b, [x, w]) => b.rmsNorm(x, w, 1e-6), TOL.reduction));
      });
    }
    const softmaxCases: Array<[number[], string, (g: SeededData, n: number) => Float32Array]> = [
      [[1, 1], 'N(0,3)', (g, n) => g.normal(n, 3)], [[3, 17], 'N(0,3)', (g, n) => g.normal(n, 3)],
      [[17, 129], 'N(0,3)', (g, n) => g.normal(n, 3)], [[1, 300], 'N(0,3)', (g, n) => g.normal(n, 3)],
      [[2, 1031], 'N(0,3)', (g, n) => g.normal(n, 3)],
      [[5, 129], 'logits +80±20', (g, n) => g.uniform(n, 60, 100)],
      [[5, 65], 'logits −80±20', (g, n) => g.uniform(n, -100, -60)],
      [[3, 33], 'logits −110±5', (g, n) => g.uniform(n, -115, -105)],
      [[2, 3], 'logits ±1e4', (g, n) => g.uniform(n, -1e4, 1e4)],
      [[7, 33], 'a third −Inf (masked)', (g, n) => g.normal(n, 3).map((x, i) => (i % 33 !== 0 && g.next() < 0.35 ? -Infinity : x))],
    ];
    for (const [shape, what, gen] of softmaxCases) {
      it(`softmax [${shape}] ${what}`, async function () {
        const g = rngFor(`sm${shape}${what}`);
        note('softmax', await agree(gpu, ref, [inp(gen(g, sizeOf(shape)), shape)], (b, [x]) => b.softmax(x), TOL.reduction));
      });
    }
  });

  describe('rope (rotate-half)', function () {
    const from1 = (t: number) => Int32Array.from({ length: t }, (_, i) => i + 1);
    const cases: Array<[[number, number, number], string, (g: SeededData) => Int32Array, number]> = [
      [[1, 1, 2], 'pos 1', () => from1(1), 10000], [[17, 3, 64], 'pos 1..17', () => from1(17), 10000],
      [[300, 1, 32], 'pos 1..300', () => from1(300), 10000],
      [[5, 8, 16], 'pos 1000+ shuffled', (g) => g.ints(5, 1000, 1300), 10000],
      [[3, 2, 130], 'pos 1..3 θ=1e6', () => from1(3), 1_000_000],
    ];
    for (const [shape, what, pos, theta] of cases) {
      it(`[${shape}] ${what}`, async function () {
        const g = rngFor(`rope${shape}${what}`);
        const p = pos(g);
        note('rope', await agree(gpu, ref, [inp(g.normal(sizeOf(shape)), shape)], (b, [x]) => b.rope(x, p, theta), TOL.rope));
      });
    }
  });

  describe('indexing and layout', function () {
    for (const [v, h, t] of [[257, 33, 1], [257, 33, 17], [1031, 64, 300]]) {
      it(`embedding table [${v},${h}], ${t} ids`, async function () {
        const g = rngFor(`emb${v},${h},${t}`);
        const ids = Int32Array.from(g.ints(t, 0, v).map((x, i) => (i === 0 ? v - 1 : i === 1 ? 0 : x)));
        note('embedding', await agree(gpu, ref, [inp(g.normal(v * h), [v, h])], (b, [tab]) => b.embedding(tab, ids), TOL.exact));
      });
    }
    it('embedding rejects an id outside the vocabulary', function () {
      const tab = gpu.upload(new Float32Array(6), [3, 2]);
      expect(() => gpu.embedding(tab, Int32Array.of(3))).to.throw(/outside the vocabulary/);
      gpu.dispose(tab);
    });
    const concats: Array<[number[][], number]> = [
      [[[3, 17], [1, 17], [5, 17]], 0], [[[17, 3], [17, 1], [17, 65]], 1], [[[5, 3, 7], [5, 3, 1]], 2], [[[3, 5]], 0],
      [Array.from({ length: 8 }, () => [17, 1, 16]), 1],
    ];
    for (const [shapes, axis] of concats) {
      it(`concat ${shapes.map((s) => `[${s}]`).join(' ‖ ')} axis ${axis}`, async function () {
        const g = rngFor(`cat${shapes}${axis}`);
        note('concat', await agree(gpu, ref, shapes.map((s) => inp(g.normal(sizeOf(s)), s)), (b, xs) => b.concat(xs, axis), TOL.exact));
      });
    }
    const slices: Array<[number[], number, number, number]> = [
      [[17, 33], 0, 16, 17], [[17, 33], 0, 0, 1], [[17, 33], 1, 5, 22], [[5, 8, 16], 1, 3, 4], [[5, 8, 16], 2, 1, 16], [[300, 4, 16], 0, 0, 257],
    ];
    for (const [shape, axis, s, e] of slices) {
      it(`slice [${shape}] axis ${axis} [${s}, ${e})`, async function () {
        const g = rngFor(`slice${shape}${axis}${s}${e}`);
        note('slice', await agree(gpu, ref, [inp(g.normal(sizeOf(shape)), shape)], (b, [x]) => b.slice(x, axis, s, e), TOL.exact));
      });
    }
    const perms: Array<[number[], number[]]> = [
      [[17, 33], [1, 0]], [[3, 17, 65], [1, 0, 2]], [[5, 7, 3], [2, 0, 1]], [[5, 7, 3], [0, 2, 1]],
      [[2, 3, 5, 7], [0, 2, 1, 3]], [[1, 1, 1], [0, 2, 1]], [[300, 8, 16], [1, 0, 2]],
    ];
    for (const [shape, perm] of perms) {
      it(`transpose [${shape}] by [${perm}]`, async function () {
        const g = rngFor(`tr${shape}${perm}`);
        note('transpose', await agree(gpu, ref, [inp(g.normal(sizeOf(shape)), shape)], (b, [x]) => b.transpose(x, perm), TOL.exact));
      });
    }
    it('reshape shares storage; disposing either handle first is safe', async function () {
      const data = rngFor('reshape').normal(17 * 8 * 16);
      const base = gpu.liveBuffers;
      const x = gpu.upload(data, [17, 8, 16]);
      const y = gpu.reshape(x, [17, 128]);
      expect(gpu.liveBuffers).to.equal(base + 1);                         // one storage, two handles
      gpu.dispose(x);
      expect(gpu.liveBuffers).to.equal(base + 1);
      expect(Array.from(await gpu.read(y))).to.deep.equal(Array.from(data));
      const z = gpu.reshape(y, [136, 16]);
      gpu.dispose(y);
      gpu.dispose(y);                                                    // a second dispose is a no-op
      expect(Array.from(await gpu.read(z))).to.deep.equal(Array.from(data));
      gpu.dispose(z);
      expect(gpu.liveBuffers).to.equal(base);
      expect(() => gpu.reshape(z, [1])).to.throw(/after dispose/);
    });
    for (const [dst, rows, offset] of [[[33, 3, 16], 1, 32], [[33, 3, 16], 17, 0], [[33, 3, 16], 5, 7], [[65, 1, 64], 1, 0]] as const) {
      it(`writeRows [${rows},${dst.slice(1)}] into [${dst}] at ${offset}, in place`, async function () {
        const g = rngFor(`wr${dst}${rows}${offset}`);
        const src = [rows, ...dst.slice(1)];
        note('writeRows', await agree(gpu, ref, [inp(g.normal(sizeOf(dst)), [...dst]), inp(g.normal(sizeOf(src)), src)], (b, [base, x]) => {
          b.writeRows(base, x, offset);
          return b.scale(base, 1);
        }, TOL.exact));
      });
    }
    it('writeRows lands in order with ops recorded before and after it', async function () {
      const cache = gpu.zeros([4, 2]);
      const before = gpu.scale(cache, 1);                                   // reads the zeros
      const row = gpu.upload(Float32Array.of(1, 2), [1, 2]);
      gpu.writeRows(cache, row, 2);
      const after = gpu.scale(cache, 1);
      expect(Array.from(await gpu.read(before))).to.deep.equal([0, 0, 0, 0, 0, 0, 0, 0]);
      expect(Array.from(await gpu.read(after))).to.deep.equal([0, 0, 0, 0, 1, 2, 0, 0]);
      gpu.dispose([cache, before, row, after]);
    });
  });

  describe('memory', function () {
    it('uploads f16 and bf16 bits, reading back their float32 values', async function () {
      const bf = Uint16Array.of(0x3f80, 0xc000, 0x0000, 0x4049, 0xff80);     // 1, -2, 0, 3.140625, -Inf
      const h = Uint16Array.of(0x3c00, 0xc000, 0x0001, 0x7bff, 0xfc00);       // 1, -2, 2^-24, 65504, -Inf
      const a = gpu.upload(bf, [5], 'bf16'), b = gpu.upload(h, [5], 'f16');
      expect(Array.from(await gpu.read(a))).to.deep.equal([1, -2, 0, 3.140625, -Infinity]);
      expect(Array.from(await gpu.read(b))).to.deep.equal([1, -2, 2 ** -24, 65504, -Infinity]);
      gpu.dispose([a, b]);
      expect(gpu.supports('upload', 'bf16')).to.equal(true);
    });
    it('zeros is zero even on a reused (pooled) buffer', async function () {
      const junk = gpu.upload(new Float32Array(33 * 16).fill(7), [33, 16]);
      gpu.dispose(junk);
      const z = gpu.zeros([33, 16]);
      expect((await gpu.read(z)).every((x) => x === 0)).to.equal(true);
      gpu.dispose(z);
    });
    it('an upload never overwrites a pooled buffer that recorded work still reads', async function () {
      const a = gpu.upload(new Float32Array(64).fill(1), [64]);
      const b = gpu.scale(a, 3);                    // recorded, not submitted
      gpu.dispose(a);                               // a's buffer goes back to the pool
      const c = gpu.upload(new Float32Array(64).fill(5), [64]);
      expect(Array.from(await gpu.read(b))).to.deep.equal(new Array(64).fill(3));
      expect(Array.from(await gpu.read(c))).to.deep.equal(new Array(64).fill(5));
      gpu.dispose([b, c]);
    });
    it('live buffers return to the baseline over repeated runs, and the pool stops growing', async function () {
      const g = rngFor('leak');
      const w = gpu.upload(g.normal(64 * 48), [64, 48]);
      const x0 = g.normal(5 * 48);
      const base = gpu.liveBuffers;
      const deviceAfter: number[] = [];
      for (let run = 0; run < 4; run++) {
        const x = gpu.upload(x0, [5, 48]);
        const h = gpu.matmul(x, w, { transposeB: true });
        const hv = gpu.reshape(h, [5, 8, 8]);
        const y = gpu.softmax(hv);
        const r = gpu.rope(y, Int32Array.from([1, 2, 3, 4, 5]), 10000);
        await gpu.read(r);
        gpu.dispose([x, h, hv, y, r]);
        expect(gpu.liveBuffers).to.equal(base);
        deviceAfter.push(gpu.stats().deviceBuffers);
      }
      expect(deviceAfter[3], 'device buffers after runs 2 and 4').to.equal(deviceAfter[1]);
      gpu.dispose(w);
    });
  });

  describe('patchEmbed', function () {
    for (const [c, h, w, p, o] of [[1, 9, 9, 3, 5], [3, 28, 28, 14, 17], [3, 28, 42, 14, 33]]) {
      it(`[${c},${h},${w}] patch ${p} → ${o}`, async function () {
        const g = rngFor(`patch${c},${h},${w},${p},${o}`);
        const k = c * p * p;
        const ins = [inp(g.uniform(c * h * w), [c, h, w]), inp(g.normal(o * k, 1 / Math.sqrt(k)), [o, c, p, p]), inp(g.normal(o, 0.1), [o])];
        note('patchEmbed', await agree(gpu, ref, ins, (b, [px, wt, bi]) => b.patchEmbed(px, wt, bi, p), TOL.matmul));
      });
    }
  });

  describe('fused attention (online softmax)', function () {
    interface Case { label: string; tq: number; tk: number; hq: number; hkv: number; d: number; opts: Omit<AttentionOptions, 'scale'> }
    const masks: AttentionMask[] = [{ kind: 'bidirectional' }, { kind: 'causal' }, { kind: 'prefixLm', prefixLength: 11 }];
    const cases: Case[] = [
      ...masks.flatMap((mask) => [8, 4, 1].map((hkv) => ({ label: 'T17', tq: 17, tk: 17, hq: 8, hkv, d: 16, opts: { mask } }))),
      { label: 'T1', tq: 1, tk: 1, hq: 8, hkv: 1, d: 16, opts: { mask: { kind: 'bidirectional' } } },
      { label: 'T300 keys (5 key blocks)', tq: 300, tk: 300, hq: 2, hkv: 1, d: 32, opts: { mask: { kind: 'prefixLm', prefixLength: 260 } } },
      { label: 'T300 keys', tq: 300, tk: 300, hq: 2, hkv: 2, d: 16, opts: { mask: { kind: 'causal' } } },
      { label: 'decode at 32 in a 65-row cache', tq: 1, tk: 65, hq: 8, hkv: 2, d: 64, opts: { mask: { kind: 'causal' }, queryOffset: 32, kvLength: 33 } },
      { label: 'decode at 299 in a 300-row cache, head size 256', tq: 1, tk: 300, hq: 8, hkv: 1, d: 256, opts: { mask: { kind: 'causal' }, queryOffset: 299, kvLength: 300 } },
      { label: 'chunk of 5 at 12 straddling the prefix, 20-row cache', tq: 5, tk: 20, hq: 4, hkv: 2, d: 16, opts: { mask: { kind: 'prefixLm', prefixLength: 14 }, queryOffset: 12, kvLength: 17 } },
      { label: 'head size 80 (not a multiple of 64)', tq: 9, tk: 9, hq: 4, hkv: 1, d: 80, opts: { mask: { kind: 'prefixLm', prefixLength: 4 } } },
      { label: 'T33 sliding window 8', tq: 33, tk: 33, hq: 2, hkv: 1, d: 16, opts: { mask: { kind: 'causal' }, slidingWindow: 8 } },
      { label: 'T17 soft-cap 50', tq: 17, tk: 17, hq: 4, hkv: 2, d: 16, opts: { mask: { kind: 'bidirectional' }, softCap: 50 } },
    ];
    const kernel = new AttendKernel('webgpu'), oracle = new ReferenceAttentionKernel();
    for (const c of cases) {
      const m = c.opts.mask;
      it(`${c.label} ${m.kind === 'prefixLm' ? `prefixLm(${m.prefixLength})` : m.kind} gqa ${c.hq / c.hkv}`, async function () {
        const g = rngFor(`attn ${c.label} ${JSON.stringify(c.opts)} ${c.hkv}`);
        const q = inp(g.normal(c.tq * c.hq * c.d, 2), [c.tq, c.hq, c.d]);
        const kv = [c.tk, c.hkv, c.d];
        const ins = [q, inp(g.normal(sizeOf(kv)), kv), inp(g.normal(sizeOf(kv)), kv)];
        const opts = { scale: 1 / Math.sqrt(c.d), ...c.opts };
        note('attention', await agree(gpu, ref, ins, (b, [qt, kt, vt]) => (b === gpu ? kernel : oracle).attend(b, qt, kt, vt, opts), TOL.matmul));
      });
    }
    it('the plain kernel, built from this backend\'s ops, agrees too (prefixLm, gqa 4)', async function () {
      const g = rngFor('plain');
      const ins = [inp(g.normal(9 * 4 * 16, 2), [9, 4, 16]), inp(g.normal(12 * 16), [12, 1, 16]), inp(g.normal(12 * 16), [12, 1, 16])];
      const opts: AttentionOptions = { scale: 0.25, mask: { kind: 'prefixLm', prefixLength: 5 }, queryOffset: 2, kvLength: 11 };
      const plain = new PlainAttentionKernel();
      const base = gpu.liveBuffers;
      note('attention', await agree(gpu, ref, ins, (b, [q, k, v]) => (b === gpu ? plain : oracle).attend(b, q, k, v, opts), TOL.matmul));
      expect(gpu.liveBuffers).to.equal(base);
    });
    it('refuses tensors of another backend', function () {
      const t = ref.upload(new Float32Array(16), [1, 1, 16]);
      expect(() => kernel.attend(gpu, t, t, t, { scale: 1, mask: { kind: 'causal' } })).to.throw(/does not belong/);
    });
  });

  describe('whole model on tiny checkpoints', function () {
    const plugins = () => (BUILTIN_PLUGINS.some((p) => p.name === webgpuBackendPlugin.name) ? [] : [webgpuBackendPlugin]);

    const specs = { mqaSpec, mhaSpec, gqaSpec };
    for (const spec of ['mqaSpec', 'mhaSpec', 'gqaSpec'] as const) {
      it(`${spec}: same greedy tokens, logits within 1e-3 of reference, buffers back to baseline`, async function () {
        const dir = mkdtempSync(join(tmpdir(), 'pg-webgpu-'));
        try {
          await buildTinyCheckpoint(dir, specs[spec]());
          const { data, width, height } = makeTestImage(24, 24, 5);
          const image = { data, width, height, channels: 3 as const };
          let refPipe: PaliGemmaPipeline | undefined, gpuPipe: PaliGemmaPipeline | undefined;
          try {
            refPipe = await createPipeline({ model: dir, backend: 'reference' });
            gpuPipe = await createPipeline({ model: dir, backend: 'webgpu', backendOptions: { weights: 'f32' }, plugins: plugins() });
            expect(gpuPipe.backend.name).to.equal('webgpu');
            const want = await refPipe.generate(image, 'caption en', { maxNewTokens: 6 });

            // Step by step: prefill and each decode step's logits, both fed the reference's tokens.
            const pixels = await refPipe.imageProcessor.process(image);
            const ids = Int32Array.from(promptIds(refPipe.tokenizer, 'caption en', refPipe.model.config.numImageTokens));
            const sessions = [refPipe, gpuPipe].map((p: PaliGemmaPipeline) => {
              const rows = p.model.imageRows(pixels);
              const embeds = p.model.embedPrompt(ids, rows);
              p.backend.dispose(rows);
              return { p, s: p.model.session(ids.length + 8), embeds };
            });
            let worstRel = 0;
            const [r, w] = sessions;
            let lr = await r.s.prefill(r.embeds, ids.length);
            let lw = await w.s.prefill(w.embeds, ids.length);
            for (let step = 0; step < want.tokens.length; step++) {
              worstRel = Math.max(worstRel, relMaxDiff(lw, lr));
              expect(argmax(lw), `greedy token ${step}`).to.equal(argmax(lr));
              expect(argmax(lr)).to.equal(want.tokens[step]);
              if (step + 1 < want.tokens.length) {
                lr = await r.s.step(want.tokens[step]);
                lw = await w.s.step(want.tokens[step]);
              }
            }
            for (const x of sessions) { x.s.dispose(); x.p.backend.dispose(x.embeds); }
            expect(worstRel, 'max |Δlogit| / max |logit|').to.be.below(1e-3);
            note(`model ${spec} rel`, worstRel);

            // generate() through the pipeline, repeated: same tokens, no buffer growth.
            const backend = gpuPipe.backend as WebGpuBackend;
            const got = await gpuPipe.generate(image, 'caption en', { maxNewTokens: 6 });
            expect(got.tokens).to.deep.equal(want.tokens);
            const live = backend.liveBuffers, device = backend.stats().deviceBuffers;
            for (let i = 0; i < 2; i++) {
              const again = await gpuPipe.generate(image, 'caption en', { maxNewTokens: 6 });
              expect(again.tokens).to.deep.equal(want.tokens);
            }
            expect(backend.liveBuffers, 'live buffers after repeated generations').to.equal(live);
            expect(backend.stats().deviceBuffers, 'device buffers after repeated generations').to.equal(device);
          } finally {
            await refPipe?.close();
            await gpuPipe?.close();
          }
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      });
    }
  });

  describe('process lifetime and device selection', function () {
    const backendUrl = pathToFileURL(join(ROOT, 'src/backends/webgpu/webgpu-backend.ts')).href;
    function runScript(body: string, env: NodeJS.ProcessEnv): { status: number | null; stdout: string; stderr: string; ms: number } {
      const dir = mkdtempSync(join(tmpdir(), 'pg-webgpu-exit-'));
      const file = join(dir, 'script.mts');
      writeFileSync(file, `import { WebGpuBackend } from ${JSON.stringify(backendUrl)};\n${body}\n`);
      const t0 = Date.now();
      const r = spawnSync(process.execPath, ['--import', 'tsx', file], { cwd: ROOT, env, encoding: 'utf8', timeout: 30_000 });
      rmSync(dir, { recursive: true, force: true });
      return { status: r.status, stdout: r.stdout, stderr: r.stderr, ms: Date.now() - t0 };
    }

    it('a script that creates the backend, runs an op and closes exits by itself', function () {
      const r = runScript(`
const b = new WebGpuBackend();
await b.init();
const x = b.upload(Float32Array.of(1, 2, 3), [3]);
const out = Array.from(await b.read(b.scale(x, 2)));
await b.close();
console.log(JSON.stringify({ out, after: b.stats() }));`, process.env);
      expect(r.status, r.stderr).to.equal(0);
      const res = JSON.parse(r.stdout.trim().split('\n').pop()!);
      expect(res.out).to.deep.equal([2, 4, 6]);
      expect(res.after.deviceBuffers, 'buffers left after close()').to.equal(0);
      expect(r.ms, 'seconds to exit').to.be.below(15_000);
    });

    it('finds a device with VK_ICD_FILENAMES unset (SwiftShader when no GPU driver is installed)', function () {
      const env = { ...process.env };
      delete env.VK_ICD_FILENAMES;
      const r = runScript(`
const b = new WebGpuBackend();
await b.init();
console.log(JSON.stringify({ engine: b.engine, selected: b.selectedSwiftShader }));
await b.close();`, env);
      expect(r.status, r.stderr).to.equal(0);
      const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { engine: string; selected: boolean };
      if (out.selected) expect(out.engine).to.match(/swiftshader.*software/);
    });

    it('without any usable driver, init fails with one line saying what to install', function () {
      const r = runScript(`
try {
  await new WebGpuBackend().init();
  console.log('no error');
} catch (e) {
  console.log(JSON.stringify({ name: e.name, message: e.message }));
}`, { ...process.env, VK_ICD_FILENAMES: '/nonexistent/icd.json' });
      expect(r.status, r.stderr).to.equal(0);
      const last = r.stdout.trim().split('\n').pop()!;
      if (last === 'no error') this.skip();                                // some other Dawn backend answered
      const e = JSON.parse(last) as { name: string; message: string };
      expect(e.name).to.equal('PaliGemmaError');
      expect(e.message).to.not.contain('\n');
      expect(e.message).to.contain('apt-get install libvulkan1 chromium-common');
    });
  });
});
