/**
 * Layout and gather cases (embedding, concat, slice, reshape, transpose, writeRows): all copies,
 * so all must be bit-exact. Shapes hit the edges: first and last rows, length-1 slices, a single
 * concat part, the per-head slices and concats the plain attention kernel makes, a reshape that
 * outlives its source, and writes at the last row of a cache.
 */
import type { Tensor, TensorBackend } from '../interfaces/tensor-backend.js';
import { fmt, input, sizeOf, THRESHOLDS as T, type CaseSpec } from './op-case.js';

const F = 4;                       // bytes per float32

export function layoutCases(): CaseSpec[] {
  const exact = { threshold: T.exact };
  const embedding = (v: number, h: number, t: number, dtype?: 'bf16'): CaseSpec => ({
    op: 'embedding', name: `table ${fmt([v, h])} ${t} ids${dtype ? ` ${dtype}` : ''}`, shape: `${fmt([v, h])}, ids [${t}]`, ...exact, dtype, weightOperand: true,
    work: { bytes: 2 * t * h * F },
    build: (d) => {
      // First and last rows always included; repeats allowed.
      const ids = Int32Array.from(d.ints(t, 0, v).map((x, i) => (i === 0 ? v - 1 : i === 1 ? 0 : x)));
      return { inputs: [input(d.normal(v * h), [v, h], dtype)], run: (b, [table]) => b.embedding(table, ids) };
    },
  });
  const concat = (shapes: number[][], axis: number): CaseSpec => {
    const parts = shapes.every((s) => fmt(s) === fmt(shapes[0])) && shapes.length > 2
      ? `${shapes.length} × ${fmt(shapes[0])}` : shapes.map(fmt).join(' ‖ ');
    return { op: 'concat', name: `${parts} axis ${axis}`, shape: parts, ...exact,
    work: { bytes: 2 * shapes.reduce((a, s) => a + sizeOf(s), 0) * F },
    build: (d) => ({ inputs: shapes.map((s) => input(d.normal(sizeOf(s)), s)), run: (b, xs) => b.concat(xs, axis) }),
    };
  };
  const slice = (shape: number[], axis: number, start: number, end: number): CaseSpec => ({
    op: 'slice', name: `${fmt(shape)} axis ${axis} [${start}, ${end})`, shape: fmt(shape), ...exact,
    work: { bytes: 2 * (sizeOf(shape) / shape[axis]) * (end - start) * F },
    build: (d) => ({ inputs: [input(d.normal(sizeOf(shape)), shape)], run: (b, [x]) => b.slice(x, axis, start, end) }),
  });
  const reshape = (from: number[], to: number[], disposeSource = false): CaseSpec => ({
    op: 'reshape', name: `${fmt(from)} → ${fmt(to)}${disposeSource ? ', source disposed first' : ''}`, shape: fmt(from), ...exact,
    uses: disposeSource ? ['reshape', 'scale'] : ['reshape'],
    work: { bytes: 2 * sizeOf(from) * F },
    build: (d) => ({
      inputs: [input(d.normal(sizeOf(from)), from)],
      run: (b, [x]) => {
        if (!disposeSource) return b.reshape(x, to);
        // The reshaped handle must keep shared storage alive after its source is disposed.
        const own = b.scale(x, 1);
        const out = b.reshape(own, to);
        b.dispose(own);
        return out;
      },
    }),
  });
  const transpose = (shape: number[], perm: number[]): CaseSpec => ({
    op: 'transpose', name: `${fmt(shape)} perm ${fmt(perm)}`, shape: fmt(shape), ...exact,
    work: { bytes: 2 * sizeOf(shape) * F },
    build: (d) => ({ inputs: [input(d.normal(sizeOf(shape)), shape)], run: (b, [x]) => b.transpose(x, perm) }),
  });
  const writeRows = (dst: number[], rows: number, offset: number): CaseSpec => {
    const src = [rows, ...dst.slice(1)];
    return {
      op: 'writeRows', name: `${fmt(src)} into ${fmt(dst)} at ${offset}`, shape: `${fmt(src)} → ${fmt(dst)}`, ...exact,
      uses: ['writeRows', 'scale'],
      work: { bytes: (2 * sizeOf(dst) + 2 * sizeOf(src)) * F },
      build: (d) => ({
        inputs: [input(d.normal(sizeOf(dst)), dst), input(d.normal(sizeOf(src)), src)],
        run: (b: TensorBackend, [base, x]: Tensor[]) => {
          const target = b.scale(base, 1);              // a fresh copy: the op mutates it
          b.writeRows(target, x, offset);
          return target;
        },
      }),
    };
  };
  return [
    embedding(257, 33, 1), embedding(257, 33, 17), embedding(1031, 64, 300), embedding(257, 33, 17, 'bf16'),
    concat([[3, 17], [1, 17], [5, 17]], 0), concat([[17, 3], [17, 1], [17, 65]], 1), concat([[5, 3, 7], [5, 3, 1]], 2),
    concat([[3, 5]], 0), concat(Array.from({ length: 8 }, () => [17, 1, 16]), 1),
    slice([17, 33], 0, 16, 17), slice([17, 33], 0, 0, 1), slice([17, 33], 1, 5, 22), slice([5, 8, 16], 1, 3, 4),
    slice([5, 8, 16], 2, 1, 16), slice([300, 4, 16], 0, 0, 257),
    reshape([17, 33], [33, 17]), reshape([3, 17, 65], [51, 65]), reshape([1], [1, 1, 1]), reshape([17, 8, 16], [17, 128], true),
    transpose([17, 33], [1, 0]), transpose([3, 17, 65], [1, 0, 2]), transpose([5, 7, 3], [2, 0, 1]), transpose([5, 7, 3], [0, 2, 1]),
    transpose([2, 3, 5, 7], [0, 2, 1, 3]), transpose([1, 1, 1], [0, 2, 1]), transpose([300, 8, 16], [1, 0, 2]),
    writeRows([33, 3, 16], 1, 32), writeRows([33, 3, 16], 17, 0), writeRows([33, 3, 16], 5, 7), writeRows([65, 1, 64], 1, 0),
  ];
}
