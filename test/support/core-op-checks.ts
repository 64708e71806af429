/**
 * The core ops a backend adds for the ops layer (unary, reduce, row broadcast) and the default
 * composites built from its core ops, each against the reference backend (normalized MSE).
 * Backend test files call it once on their subject.
 */
import { expect } from 'chai';
import { attendFromCore } from '../../src/attention/attend.js';
import { ReferenceBackend } from '../../src/backends/reference/reference-backend.js';
import { compare } from '../../src/conformance/compare.js';
import type { Tensor, TensorBackend, UnaryOp } from '../../src/interfaces/tensor-backend.js';
import {
  defaultGelu, defaultLayerNorm, defaultPatchEmbed, defaultRmsNorm, defaultRope, defaultSoftmax,
} from '../../src/ops/default-ops.js';
import { rand, sizeOf } from './seeded-values.js';

type Run = (b: TensorBackend, xs: Tensor[]) => Tensor;

/** Runs each check on `subject` and on reference; returns the worst normalized MSE by name. */
export async function checkCoreOps(subject: TensorBackend, limit = 1e-9): Promise<Record<string, number>> {
  const ref = new ReferenceBackend();
  const worst: Record<string, number> = {};
  const check = async (name: string, inputs: Array<[Float32Array, number[]]>, run: Run, refRun: Run = run) => {
    const a = inputs.map(([x, s]) => subject.upload(x, s)), b = inputs.map(([x, s]) => ref.upload(x, s));
    const got = run(subject, a), want = refRun(ref, b);
    expect([...got.shape], name).to.deep.equal([...want.shape]);
    const c = compare(await subject.read(got), await ref.read(want));
    subject.dispose([...a, got]);
    expect(c.problem, name).to.equal('');
    expect(c.error, `${name}: nmse ${c.error}`).to.be.at.most(limit);
    worst[name] = Math.max(worst[name] ?? 0, c.error);
  };
  const ranges: Record<UnaryOp, [number, number]> = { tanh: [-30, 30], exp: [-60, 60], sigmoid: [-60, 60], rsqrt: [0.01, 50], reciprocal: [0.01, 50] };
  let seed = 900;
  for (const [op, [lo, hi]] of Object.entries(ranges) as Array<[UnaryOp, [number, number]]>) {
    for (const shape of [[1], [7, 129]]) {
      const x = rand(sizeOf(shape), seed++, 1).map((v) => lo + ((v + 1) / 2) * (hi - lo));
      await check(`unary ${op}`, [[x, shape]], (b, [t]) => b.unary(op, t));
    }
  }
  for (const op of ['sum', 'max'] as const) {
    for (const shape of [[1], [17, 1031], [3, 5, 65]]) await check(`reduce ${op}`, [[rand(sizeOf(shape), seed++, 3), shape]], (b, [t]) => b.reduce(op, t));
  }
  for (const op of ['add', 'mul'] as const) {
    await check(`${op} rows`, [[rand(17 * 33, seed++, 2), [17, 33]], [rand(17, seed++, 2), [17, 1]]], (b, [x, y]) => b[op](x, y));
  }
  // The defaults on this backend's core ops against reference's own (fused) loops.
  const fused = (op: 'gelu' | 'softmax') => (b: TensorBackend, [x]: Tensor[]) => b[op]!(x);
  await check('default gelu', [[rand(7 * 129, seed++, 6), [7, 129]]], (b, [x]) => defaultGelu(b, x), fused('gelu'));
  await check('default softmax', [[rand(7 * 129, seed++, 40), [7, 129]]], (b, [x]) => defaultSoftmax(b, x), fused('softmax'));
  const norm = (d: number): Array<[Float32Array, number[]]> => [[rand(5 * d, seed++, 3), [5, d]], [rand(d, seed++), [d]], [rand(d, seed++), [d]]];
  await check('default layerNorm', norm(65), (b, [x, w, bi]) => defaultLayerNorm(b, x, w, bi, 1e-6), (b, [x, w, bi]) => b.layerNorm!(x, w, bi, 1e-6));
  await check('default rmsNorm', norm(65), (b, [x, w]) => defaultRmsNorm(b, x, w, 1e-6), (b, [x, w]) => b.rmsNorm!(x, w, 1e-6));
  const pos = Int32Array.from([1, 2, 3, 300]);
  await check('default rope', [[rand(4 * 3 * 16, seed++), [4, 3, 16]]], (b, [x]) => defaultRope(b, x, pos, 10000), (b, [x]) => b.rope!(x, pos, 10000));
  await check('default patchEmbed', [[rand(3 * 8 * 8, seed++), [3, 8, 8]], [rand(5 * 3 * 16, seed++), [5, 3, 4, 4]], [rand(5, seed++), [5]]],
    (b, [p, w, bi]) => defaultPatchEmbed(b, p, w, bi, 4), (b, [p, w, bi]) => b.patchEmbed!(p, w, bi, 4));
  const opts = { scale: 0.3, mask: { kind: 'prefixLm', prefixLength: 3 } as const, queryOffset: 1, kvLength: 7, softCap: 2, slidingWindow: 3 };
  await check('attention from core ops', [[rand(5 * 4 * 8, seed++), [5, 4, 8]], [rand(8 * 2 * 8, seed++), [8, 2, 8]], [rand(8 * 2 * 8, seed++), [8, 2, 8]]],
    (b, [q, k, v]) => attendFromCore(b, q, k, v, opts), (b, [q, k, v]) => b.attention!(q, k, v, opts));
  return worst;
}
