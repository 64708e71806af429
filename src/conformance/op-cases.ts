/**
 * The op cases: every TensorBackend op at several shapes, chosen to break the usual shortcuts of
 * a new backend: sizes no tile divides (1, 3, 17, 33, 65, 129, 1031), length-1 rows, long
 * sequences (300), broadcasting, 16-bit storage, and inputs that punish unstable formulas
 * (softmax logits at ±80 and beyond, a layerNorm row with mean 1000).
 */
import { attentionCases } from './attention-cases.js';
import { layoutCases } from './layout-cases.js';
import {
  defineCase, fmt, input, sizeOf, THRESHOLDS as T, uploadInput, type CaseSpec, type OpCase,
} from './op-case.js';
import type { SeededData } from './seeded-data.js';
import type { ReduceOp, UnaryOp } from '../interfaces/tensor-backend.js';

const F = 4;                       // bytes per float32

/** Every op case; attention cases once per kernel slot (the backend's default kernel and 'plain'). */
export function opCases(): OpCase[] {
  return [
    ...memoryCases(), ...matmulCases(), ...elementwiseCases(), ...normCases(), ...softmaxCases(),
    ...ropeCases(), ...layoutCases(), ...patchEmbedCases(),
    ...attentionCases('default'), ...attentionCases('plain'),
  ].map(defineCase);
}

// ── upload / read ───────────────────────────────────────────────────────────
function memoryCases(): CaseSpec[] {
  const roundTrip = (shape: number[], dtype?: 'bf16' | 'f16'): CaseSpec => ({
    op: 'upload', name: `${dtype ?? 'f32'} ${fmt(shape)}`, shape: fmt(shape), threshold: T.exact, dtype, uses: [],
    work: { bytes: sizeOf(shape) * (dtype ? 2 : F) + sizeOf(shape) * F },
    build: (d) => {
      const host = input(d.normal(sizeOf(shape), 3), shape, dtype);
      return { inputs: [], run: (b, _, ctx) => uploadInput(b, host, ctx.oracle) };
    },
  });
  const zeros = (shape: number[]): CaseSpec => ({
    op: 'read', name: `zeros ${fmt(shape)}`, shape: fmt(shape), threshold: T.exact, uses: [],
    work: { bytes: sizeOf(shape) * F },
    build: () => ({ inputs: [], run: (b) => b.zeros(shape) }),
  });
  return [roundTrip([1]), roundTrip([3, 17, 65]), roundTrip([17, 33], 'bf16'), roundTrip([17, 33], 'f16'), zeros([1]), zeros([33, 3, 16])];
}

// ── matmul ──────────────────────────────────────────────────────────────────
function matmulCases(): CaseSpec[] {
  const mm = (m: number, k: number, n: number, tB: boolean, bias = false, dtype?: 'bf16' | 'f16'): CaseSpec => {
    const bShape = tB ? [n, k] : [k, n];
    return {
      op: 'matmul', name: `m${m} k${k} n${n}${tB ? ' bᵀ' : ''}${bias ? ' +bias' : ''}${dtype ? ` ${dtype} weight` : ''}`,
      shape: `${fmt([m, k])}·${fmt(bShape)}${tB ? 'ᵀ' : ''}`, threshold: T.matmul, dtype, weightOperand: tB,
      work: { flops: 2 * m * k * n + (bias ? m * n : 0) },
      build: (d) => ({
        inputs: [
          input(d.normal(m * k), [m, k]),
          input(d.normal(k * n, 1 / Math.sqrt(k)), bShape, dtype),
          ...(bias ? [input(d.normal(n), [n])] : []),
        ],
        run: (b, [x, w, bi]) => b.matmul(x, w, { transposeB: tB, bias: bi }),
      }),
    };
  };
  return [
    mm(1, 1, 1, false), mm(1, 129, 65, true), mm(3, 17, 5, false), mm(4, 16, 8, true), mm(17, 33, 65, true, true),
    mm(64, 64, 64, false), mm(65, 129, 33, false), mm(129, 65, 17, true), mm(300, 64, 129, true, true),
    mm(33, 1031, 17, true), mm(17, 33, 65, true, false, 'bf16'), mm(5, 64, 33, true, true, 'f16'),
  ];
}

// ── elementwise ─────────────────────────────────────────────────────────────
function elementwiseCases(): CaseSpec[] {
  const binary = (op: 'add' | 'mul', a: number[], bShape: number[]): CaseSpec => ({
    op, name: `${fmt(a)} ${op === 'add' ? '+' : '·'} ${fmt(bShape)}`, shape: `${fmt(a)}, ${fmt(bShape)}`, threshold: T.elementwise,
    work: { bytes: (2 * sizeOf(a) + sizeOf(bShape)) * F },
    build: (d) => ({
      inputs: [input(d.normal(sizeOf(a), 2), a), input(d.normal(sizeOf(bShape), 2), bShape)],
      run: (b, [x, y]) => b[op](x, y),
    }),
  });
  const scale = (shape: number[], s: number, label = String(s)): CaseSpec => ({
    op: 'scale', name: `${fmt(shape)} × ${label}`, shape: fmt(shape), threshold: T.elementwise,
    work: { bytes: 2 * sizeOf(shape) * F },
    build: (d) => ({ inputs: [input(d.normal(sizeOf(shape), 3), shape)], run: (b, [x]) => b.scale(x, s) }),
  });
  const gelu = (shape: number[], what: string, gen: (d: SeededData, n: number) => Float32Array): CaseSpec => ({
    op: 'gelu', name: `${fmt(shape)} ${what}`, shape: fmt(shape), threshold: T.gelu,
    work: { bytes: 2 * sizeOf(shape) * F },
    build: (d) => ({ inputs: [input(gen(d, sizeOf(shape)), shape)], run: (b, [x]) => b.gelu(x) }),
  });
  // The last two broadcast one value per row (a `reduce` result) over the last axis.
  const pairs: Array<[number[], number[]]> = [[[1], [1]], [[17, 33], [17, 33]], [[3, 17, 65], [65]], [[5, 7, 3], [7, 3]], [[300, 129], [129]],
    [[17, 33], [17, 1]], [[3, 5, 65], [3, 5, 1]]];
  const unary = (op: UnaryOp, shape: number[], gen: (d: SeededData, n: number) => Float32Array, what: string): CaseSpec => ({
    op: 'unary', name: `${op} ${fmt(shape)} ${what}`, shape: fmt(shape), threshold: T.gelu,
    work: { bytes: 2 * sizeOf(shape) * F },
    build: (d) => ({ inputs: [input(gen(d, sizeOf(shape)), shape)], run: (b, [x]) => b.unary(op, x) }),
  });
  const reduce = (op: ReduceOp, shape: number[], gen: (d: SeededData, n: number) => Float32Array, what: string): CaseSpec => ({
    op: 'reduce', name: `${op} ${fmt(shape)} ${what}`, shape: fmt(shape), threshold: T.reduction,
    work: { bytes: sizeOf(shape) * F },
    build: (d) => ({ inputs: [input(gen(d, sizeOf(shape)), shape)], run: (b, [x]) => b.reduce(op, x) }),
  });
  const normal = (d: SeededData, n: number) => d.normal(n, 2);
  const positive = (d: SeededData, n: number) => d.uniform(n, 0.01, 50);
  const unaryCases = [
    unary('tanh', [17, 65], (d, n) => d.uniform(n, -30, 30), 'uniform ±30 (saturates)'), unary('tanh', [1], normal, 'N(0,2)'),
    unary('exp', [7, 129], (d, n) => d.uniform(n, -80, 80), 'uniform ±80'), unary('sigmoid', [7, 129], (d, n) => d.uniform(n, -60, 60), 'uniform ±60'),
    unary('rsqrt', [17, 33], positive, 'uniform 0.01..50'), unary('reciprocal', [17, 33], positive, 'uniform 0.01..50'),
  ];
  const reduceCases = [
    reduce('sum', [1], normal, 'N(0,2)'), reduce('sum', [17, 1031], normal, 'N(0,2)'), reduce('sum', [3, 5, 65], normal, 'N(0,2)'),
    reduce('max', [1], normal, 'N(0,2)'), reduce('max', [17, 1031], (d, n) => d.uniform(n, -100, 100), 'uniform ±100'), reduce('max', [300, 3], normal, 'N(0,2)'),
  ];
  return [
    ...pairs.map(([a, b]) => binary('add', a, b)), ...pairs.map(([a, b]) => binary('mul', a, b)),
    scale([1], -2.5), scale([17, 65], 0.125), scale([300, 33], 1 / Math.sqrt(3), '1/√3'),
    // One moderate value: in the far tail f32 1 + tanh(z) cancels, which every f32 backend shares.
    gelu([1], 'x = 0.7', () => Float32Array.of(0.7)), gelu([17, 65], 'N(0,2)', (d, n) => d.normal(n, 2)),
    gelu([7, 129], 'uniform ±30 (tanh saturates)', (d, n) => d.uniform(n, -30, 30)),
    ...unaryCases, ...reduceCases,
  ];
}

// ── layerNorm, rmsNorm ──────────────────────────────────────────────────────
function normCases(): CaseSpec[] {
  const layerNorm = (shape: number[], mean = 0, dtype?: 'f16'): CaseSpec => {
    const d = shape[shape.length - 1];
    return {
      op: 'layerNorm', name: `${fmt(shape)}${mean ? ` mean ${mean}` : ''}${dtype ? ` ${dtype} weights` : ''}`,
      shape: fmt(shape), threshold: T.reduction, dtype,
      work: { bytes: (2 * sizeOf(shape) + 2 * d) * F },
      build: (g) => ({
        inputs: [input(g.normal(sizeOf(shape), 2, mean), shape), input(g.normal(d, 0.5, 1), [d], dtype), input(g.normal(d, 0.5), [d], dtype)],
        run: (b, [x, w, bias]) => b.layerNorm(x, w, bias, 1e-6),
      }),
    };
  };
  const rmsNorm = (shape: number[]): CaseSpec => {
    const d = shape[shape.length - 1];
    return {
      op: 'rmsNorm', name: fmt(shape), shape: fmt(shape), threshold: T.reduction,
      work: { bytes: (2 * sizeOf(shape) + d) * F },
      build: (g) => ({
        inputs: [input(g.normal(sizeOf(shape), 3), shape), input(g.normal(d, 0.3), [d])],
        run: (b, [x, w]) => b.rmsNorm(x, w, 1e-6),
      }),
    };
  };
  return [
    layerNorm([1, 1]), layerNorm([3, 17]), layerNorm([65, 129]), layerNorm([300, 65]), layerNorm([9, 129], 1000),
    layerNorm([17, 33], 0, 'f16'),
    rmsNorm([1, 1]), rmsNorm([3, 17]), rmsNorm([33, 129]), rmsNorm([300, 65]), rmsNorm([2, 1031]),
  ];
}

// ── softmax ─────────────────────────────────────────────────────────────────
function softmaxCases(): CaseSpec[] {
  const softmax = (shape: number[], what: string, gen: (d: SeededData, n: number) => Float32Array): CaseSpec => ({
    op: 'softmax', name: `${fmt(shape)} ${what}`, shape: fmt(shape), threshold: T.reduction,
    work: { bytes: 2 * sizeOf(shape) * F },
    build: (d) => ({ inputs: [input(gen(d, sizeOf(shape)), shape)], run: (b, [x]) => b.softmax(x) }),
  });
  const std = (s: number) => (d: SeededData, n: number) => d.normal(n, s);
  // Masked scores: about a third -Inf, never a whole row (column 0 stays finite).
  const masked = (d: SeededData, n: number) => d.normal(n, 3).map((x, i) => (i % 33 !== 0 && d.next() < 0.35 ? -Infinity : x));
  return [
    softmax([1, 1], 'N(0,3)', std(3)), softmax([3, 17], 'N(0,3)', std(3)), softmax([17, 129], 'N(0,3)', std(3)),
    softmax([1, 300], 'N(0,3)', std(3)), softmax([2, 1031], 'N(0,3)', std(3)),
    softmax([5, 129], 'logits +80±20', (d, n) => d.uniform(n, 60, 100)),
    softmax([5, 65], 'logits −80±20', (d, n) => d.uniform(n, -100, -60)),
    softmax([3, 33], 'logits −110±5', (d, n) => d.uniform(n, -115, -105)),
    softmax([7, 33], 'with −Inf (masked)', masked),
  ];
}

// ── rope ────────────────────────────────────────────────────────────────────
function ropeCases(): CaseSpec[] {
  const rope = (shape: [number, number, number], what: string, positions: (d: SeededData) => Int32Array, theta = 10000): CaseSpec => ({
    op: 'rope', name: `${fmt(shape)} ${what}${theta !== 10000 ? ` θ=${theta}` : ''}`, shape: fmt(shape), threshold: T.rope,
    work: { bytes: 2 * sizeOf(shape) * F },
    build: (d) => {
      const pos = positions(d);
      return { inputs: [input(d.normal(sizeOf(shape)), shape)], run: (b, [x]) => b.rope(x, pos, theta) };
    },
  });
  const from1 = (t: number) => () => Int32Array.from({ length: t }, (_, i) => i + 1);
  return [
    rope([1, 1, 2], 'pos 1', from1(1)), rope([17, 3, 64], 'pos 1..17', from1(17)), rope([300, 1, 32], 'pos 1..300', from1(300)),
    rope([5, 8, 16], 'pos 1000+ shuffled', (d) => Int32Array.from(d.ints(5, 1000, 1300))),
    rope([3, 2, 130], 'pos 1..3', from1(3), 1_000_000),
  ];
}

// ── patchEmbed ──────────────────────────────────────────────────────────────
function patchEmbedCases(): CaseSpec[] {
  const patch = (c: number, h: number, w: number, p: number, o: number): CaseSpec => {
    const n = (h / p) * (w / p), k = c * p * p;
    return {
      op: 'patchEmbed', name: `${fmt([c, h, w])} patch ${p} → ${o}`, shape: `${fmt([c, h, w])}, ${fmt([o, c, p, p])}`,
      threshold: T.matmul, work: { flops: 2 * n * k * o + n * o },
      build: (d) => ({
        inputs: [input(d.uniform(c * h * w), [c, h, w]), input(d.normal(o * k, 1 / Math.sqrt(k)), [o, c, p, p]), input(d.normal(o, 0.1), [o])],
        run: (b, [px, wt, bias]) => b.patchEmbed(px, wt, bias, p),
      }),
    };
  };
  return [patch(1, 9, 9, 3, 5), patch(3, 28, 28, 14, 17), patch(3, 28, 42, 14, 33), patch(3, 224, 224, 14, 32)];
}
