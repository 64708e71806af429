/**
 * The reference backend: every op in plain TypeScript over float32 arrays. It is the oracle the
 * other backends are checked against, so each op reads like its definition in
 * src/interfaces/tensor-backend.ts. Accumulations (norms, softmax) run in float64.
 *
 * f16/bf16 uploads keep their 16-bit bits (half the memory of float32). Kernels widen them as
 * they read: the transposed-B matmul (every Linear layer) a chunk of weight rows at a time,
 * embedding only the gathered rows, other ops their (small) operand on the fly. Results equal
 * those of the same op on the widened float32 tensor, bit for bit.
 */
import type { AttentionOptions } from '../../interfaces/attention-kernel.js';
import type {
  BlockQuantizedWeight, DType, LossyWeights, MatmulOptions, OpName, ReduceOp, Reservation, Tensor, TensorBackend, UnaryOp,
} from '../../interfaces/tensor-backend.js';
import {
  broadcastKind, checkReshape, checkVector, checkWriteRows, concatShape, embeddingDims, matmulDims,
  patchEmbedDims, reduceShape, ropeDims, sizeOf, sliceShape, transposeShape,
} from '../../tensor/op-shapes.js';
import { ropeTable } from '../../tensor/rope-table.js';
import { f32ToBf16, f32ToF16 } from '../../tensor/dtype.js';
import { attachDequantized, attachedCopy, checkedLossyKind, dequantizedTensor } from './block-quantized.js';
import { matmulPlain, matmulTransposedB } from './matmul.js';
import { referenceAttention } from './reference-attention-kernel.js';
import { ReferenceTensor, widen, widenBits, type HalfDType } from './reference-tensor.js';

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

export class ReferenceBackend implements TensorBackend {
  readonly name: string = 'reference';
  engine: string = 'reference (TypeScript, float32)';
  /** Set when a quantized folder's weights arrive (block-quantized.ts). */
  lossyWeights?: LossyWeights;

  supports(op: OpName, dtype: DType = 'f32'): boolean {
    // Every op, fused ones included, is written here and widens 16-bit operands as it reads.
    return (dtype === 'f32' || dtype === 'f16' || dtype === 'bf16') && typeof this[op] === 'function';
  }

  // ── memory ──────────────────────────────────────────────────────────────
  upload(data: Float32Array | Uint16Array, shape: readonly number[], dtype: DType = 'f32'): Tensor {
    if (dtype === 'f32' && data instanceof Float32Array) return new ReferenceTensor([...shape], new Float32Array(data));
    if ((dtype === 'f16' || dtype === 'bf16') && data instanceof Uint16Array) {
      return new ReferenceTensor([...shape], new Uint16Array(data), dtype);
    }
    throw new Error(`reference backend: ${dtype} tensors are uploaded as ${dtype === 'f32' ? 'Float32Array' : 'Uint16Array'}, got ${data.constructor.name}`);
  }

  /** Room a loader fills in place; the tensor then holds that very array (no copy). */
  reserve(shape: readonly number[], dtype: DType = 'f32'): Reservation {
    if (dtype !== 'f32' && dtype !== 'f16' && dtype !== 'bf16') throw new Error(`reference backend: unknown dtype ${String(dtype)}`);
    const n = shape.reduce((a, b) => a * b, 1);
    const data = dtype === 'f32' ? new Float32Array(n) : new Uint16Array(n);
    let used = false;
    const once = () => { if (used) throw new Error('reserve: this reservation was already committed or discarded'); used = true; };
    return {
      data,
      commit: () => {
        once();
        return data instanceof Float32Array ? new ReferenceTensor([...shape], data) : new ReferenceTensor([...shape], data, dtype as 'f16' | 'bf16');
      },
      discard: once,
    };
  }

  uploadBlockQuantized(q: BlockQuantizedWeight): Tensor {
    this.takeQuantized(q);
    return dequantizedTensor(q);
  }

  attachBlockQuantized(table: Tensor, q: BlockQuantizedWeight): void {
    this.takeQuantized(q);
    attachDequantized(ref(table), q);
  }

  private takeQuantized(q: BlockQuantizedWeight): void {
    this.lossyWeights = checkedLossyKind(q, this.lossyWeights);
    this.engine = `reference (TypeScript, float32, ${this.lossyWeights} weights)`;
  }

  zeros(shape: readonly number[]): Tensor {
    return new ReferenceTensor([...shape], new Float32Array(sizeOf(shape)));
  }

  async read(t: Tensor): Promise<Float32Array> {
    const T = ref(t);
    return T.bits ? widen(T) : new Float32Array(T.data);
  }

  dispose(_t: Tensor | readonly Tensor[]): void {
    // Garbage-collected memory: nothing to release.
  }

  // ── linear algebra ──────────────────────────────────────────────────────
  matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
    const A = ref(a), B = ref(b);
    const bias = opts.bias ? widen(ref(opts.bias)) : undefined;          // [N]
    const { m, k, n } = matmulDims(A.shape, B.shape, opts.transposeB, bias?.length);
    const out = new Float32Array(m * n);                                  // [M, N]
    // A 16-bit B (a weight) is widened inside the kernel, a chunk of rows at a time; a table
    // with a dequantized copy attached (the tied lm_head of a quantized folder) uses the copy.
    const copy = opts.transposeB ? attachedCopy(B) : undefined;
    if (copy) matmulTransposedB(widen(A), copy, out, m, k, n);
    else if (opts.transposeB) matmulTransposedB(widen(A), B.storage, out, m, k, n, B.dtype);
    else matmulPlain(widen(A), widen(B), out, m, k, n);
    if (bias) {
      for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) out[i * n + j] += bias[j];
    }
    return new ReferenceTensor([m, n], out);
  }

  // ── elementwise ─────────────────────────────────────────────────────────
  add(a: Tensor, b: Tensor): Tensor {
    return broadcast(ref(a), ref(b), (x, y) => x + y, 'add');
  }

  mul(a: Tensor, b: Tensor): Tensor {
    return broadcast(ref(a), ref(b), (x, y) => x * y, 'mul');
  }

  scale(a: Tensor, s: number): Tensor {
    return new ReferenceTensor(a.shape, f32Copy(ref(a)).map((x) => x * s));
  }

  unary(op: UnaryOp, x: Tensor): Tensor {
    const f = UNARY[op];
    if (!f) throw new Error(`reference backend: unknown unary op '${op}'`);
    return new ReferenceTensor(x.shape, f32Copy(ref(x)).map(f));
  }

  reduce(op: ReduceOp, x: Tensor): Tensor {
    const X = ref(x), Xd = widen(X), d = lastDim(X);
    const shape = reduceShape(X.shape);
    const out = new Float32Array(sizeOf(shape));                          // [..., 1]
    for (let r = 0; r < out.length; r++) {
      let acc = op === 'max' ? -Infinity : 0;                             // float64 accumulator
      for (let i = r * d; i < (r + 1) * d; i++) acc = op === 'max' ? Math.max(acc, Xd[i]) : acc + Xd[i];
      out[r] = acc;
    }
    return new ReferenceTensor(shape, out);
  }

  gelu(a: Tensor): Tensor {
    return new ReferenceTensor(a.shape, f32Copy(ref(a)).map(
      (x) => 0.5 * x * (1 + Math.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))),
    ));
  }

  // ── normalisation over the last axis ────────────────────────────────────
  layerNorm(x: Tensor, w: Tensor, b: Tensor, eps: number): Tensor {
    const X = ref(x), W = widen(ref(w)), B = widen(ref(b));
    const Xd = widen(X);
    const d = lastDim(X);
    checkVector('layerNorm weight', W.length, d);
    checkVector('layerNorm bias', B.length, d);
    const out = new Float32Array(X.size);
    for (let r = 0; r < X.size / d; r++) {
      const o = r * d;
      let mean = 0;
      for (let i = 0; i < d; i++) mean += Xd[o + i];
      mean /= d;
      let v = 0;
      for (let i = 0; i < d; i++) v += (Xd[o + i] - mean) ** 2;
      const inv = 1 / Math.sqrt(v / d + eps);
      for (let i = 0; i < d; i++) out[o + i] = (Xd[o + i] - mean) * inv * W[i] + B[i];
    }
    return new ReferenceTensor(x.shape, out);
  }

  rmsNorm(x: Tensor, w: Tensor, eps: number): Tensor {
    const X = ref(x), W = widen(ref(w));
    const Xd = widen(X);
    const d = lastDim(X);
    checkVector('rmsNorm weight', W.length, d);
    const out = new Float32Array(X.size);
    for (let r = 0; r < X.size / d; r++) {
      const o = r * d;
      let ms = 0;
      for (let i = 0; i < d; i++) ms += Xd[o + i] ** 2;
      const inv = 1 / Math.sqrt(ms / d + eps);
      for (let i = 0; i < d; i++) out[o + i] = Xd[o + i] * inv * (1 + W[i]);
    }
    return new ReferenceTensor(x.shape, out);
  }

  softmax(x: Tensor): Tensor {
    const X = ref(x);
    const d = lastDim(X);
    const out = new Float32Array(X.size);
    const Xd = widen(X);
    for (let r = 0; r < X.size / d; r++) softmaxRow(Xd, out, r * d, d);
    return new ReferenceTensor(x.shape, out);
  }

  rope(x: Tensor, positions: Int32Array, theta: number): Tensor {
    const X = ref(x), Xd = widen(X);
    const { t, h, d } = ropeDims(X.shape, positions.length);
    const half = d / 2;
    const out = new Float32Array(X.size);
    const { cos, sin } = ropeTable(positions, theta, d);                 // float64, not rounded
    for (let ti = 0; ti < t; ti++) {
      for (let i = 0; i < half; i++) {
        const c = cos[ti * half + i], s = sin[ti * half + i];
        for (let hi = 0; hi < h; hi++) {
          const o = (ti * h + hi) * d;
          const x1 = Xd[o + i], x2 = Xd[o + i + half];
          out[o + i] = x1 * c - x2 * s;                                   // first half
          out[o + i + half] = x2 * c + x1 * s;                            // second half
        }
      }
    }
    return new ReferenceTensor(x.shape, out);
  }

  attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor {
    return referenceAttention(q, k, v, opts);
  }

  // ── indexing and layout ─────────────────────────────────────────────────
  embedding(table: Tensor, ids: Int32Array): Tensor {
    const T = ref(table);
    const { h } = embeddingDims(T.shape, ids);
    const out = new Float32Array(ids.length * h);                         // [T, H]
    ids.forEach((id, i) => {
      // A 16-bit table is widened one gathered row at a time, straight into the output.
      if (T.bits) widenBits(T.bits, T.dtype as HalfDType, id * h, (id + 1) * h, out.subarray(i * h, (i + 1) * h));
      else out.set(T.data.subarray(id * h, (id + 1) * h), i * h);
    });
    return new ReferenceTensor([ids.length, h], out);
  }

  concat(ts: readonly Tensor[], axis: number): Tensor {
    const parts = ts.map(ref);
    const shape = concatShape(parts.map((p) => p.shape), axis);
    const outer = sizeOf(shape.slice(0, axis));
    const inners = parts.map((p) => sizeOf(p.shape.slice(axis)));
    const out = new Float32Array(sizeOf(shape));
    const rowOut = inners.reduce((a, b) => a + b, 0);
    for (let o = 0; o < outer; o++) {
      let off = o * rowOut;
      parts.forEach((p, pi) => {
        copyF32(p, o * inners[pi], (o + 1) * inners[pi], out, off);
        off += inners[pi];
      });
    }
    return new ReferenceTensor(shape, out);
  }

  slice(x: Tensor, axis: number, start: number, end: number): Tensor {
    const X = ref(x);
    const shape = sliceShape(X.shape, axis, start, end);
    const outer = sizeOf(X.shape.slice(0, axis));
    const inner = sizeOf(X.shape.slice(axis + 1));
    const len = end - start;
    const out = new Float32Array(outer * len * inner);
    for (let o = 0; o < outer; o++) {
      const src = (o * X.shape[axis] + start) * inner;
      copyF32(X, src, src + len * inner, out, o * len * inner);
    }
    return new ReferenceTensor(shape, out);
  }

  reshape(x: Tensor, shape: readonly number[]): Tensor {
    const X = ref(x);
    checkReshape(X.shape, shape);
    return X.bits                                                         // shares storage
      ? new ReferenceTensor([...shape], X.bits, X.dtype as HalfDType)
      : new ReferenceTensor([...shape], X.data);
  }

  transpose(x: Tensor, perm: readonly number[]): Tensor {
    const X = ref(x), Xd = widen(X);
    const rank = X.shape.length;
    const shape = transposeShape(X.shape, perm);
    const inStrides = strides(X.shape);
    const outStrides = strides(shape);
    const out = new Float32Array(X.size);
    for (let flat = 0; flat < X.size; flat++) {
      let rem = flat, src = 0;
      for (let d = 0; d < rank; d++) {
        const idx = Math.floor(rem / outStrides[d]);
        rem -= idx * outStrides[d];
        src += idx * inStrides[perm[d]];
      }
      out[flat] = Xd[src];
    }
    return new ReferenceTensor(shape, out);
  }

  writeRows(dst: Tensor, src: Tensor, offset: number): void {
    const D = ref(dst), S = ref(src);
    checkWriteRows(D.shape, S.shape, offset);
    const row = sizeOf(D.shape.slice(1));
    if (!D.bits) { copyF32(S, 0, S.size, D.data, offset * row); return; }
    // A 16-bit destination: same-dtype bits are copied; anything else is rounded to nearest even.
    const bits = S.dtype === D.dtype ? S.bits! : (D.dtype === 'bf16' ? f32ToBf16 : f32ToF16)(widen(S));
    D.bits.set(bits, offset * row);
  }

  // ── vision ──────────────────────────────────────────────────────────────
  patchEmbed(pixels: Tensor, weight: Tensor, bias: Tensor, patch: number): Tensor {
    const X = ref(pixels), W = ref(weight), B = widen(ref(bias));
    const Xd = widen(X);
    const { c, h, w, o, gh, gw } = patchEmbedDims(X.shape, W.shape, B.length, patch);
    const k = c * patch * patch;
    // Gather each patch into a row in (channel, y, x) order, then one matmul with W [O, C·P·P].
    const cols = new Float32Array(gh * gw * k);                           // [N, C·P·P]
    for (let py = 0; py < gh; py++) {
      for (let px = 0; px < gw; px++) {
        const row = (py * gw + px) * k;
        for (let ci = 0; ci < c; ci++) {
          for (let y = 0; y < patch; y++) {
            const src = ci * h * w + (py * patch + y) * w + px * patch;
            cols.set(Xd.subarray(src, src + patch), row + (ci * patch + y) * patch);
          }
        }
      }
    }
    const out = new Float32Array(gh * gw * o);                            // [N, O]
    matmulTransposedB(cols, W.storage, out, gh * gw, k, o, W.dtype);
    for (let n = 0; n < gh * gw; n++) for (let j = 0; j < o; j++) out[n * o + j] += B[j];
    return new ReferenceTensor([gh * gw, o], out);
  }
}

function ref(t: Tensor): ReferenceTensor {
  if (!(t instanceof ReferenceTensor)) throw new Error('tensor does not belong to the reference backend');
  return t;
}

/** A new float32 array with t's values. */
function f32Copy(t: ReferenceTensor): Float32Array {
  return t.bits ? widen(t) : new Float32Array(t.data);
}

/** t's elements [start, end) as float32 into out at offset (16-bit tensors widened on the way). */
function copyF32(t: ReferenceTensor, start: number, end: number, out: Float32Array, offset: number): void {
  if (t.bits) widenBits(t.bits, t.dtype as HalfDType, start, end, out.subarray(offset, offset + end - start));
  else out.set(t.data.subarray(start, end), offset);
}

function lastDim(t: ReferenceTensor): number {
  return t.shape[t.shape.length - 1];
}

function strides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let d = shape.length - 1; d >= 0; d--) { s[d] = acc; acc *= shape[d]; }
  return s;
}

/** b is a's shape or a's trailing dims (repeated over a's leading dims), or one value per row of a. */
function broadcast(
  a: ReferenceTensor, b: ReferenceTensor, f: (x: number, y: number) => number, op: string,
): ReferenceTensor {
  const kind = broadcastKind(a.shape, b.shape);
  if (!kind) throw new Error(`${op}: [${b.shape.join(', ')}] does not broadcast onto [${a.shape.join(', ')}]`);
  const out = new Float32Array(a.size);
  const n = b.size, d = a.size / Math.max(1, n);
  const A = widen(a), B = widen(b);
  if (kind === 'trailing') for (let i = 0; i < a.size; i++) out[i] = f(A[i], B[i % n]);
  else for (let i = 0; i < a.size; i++) out[i] = f(A[i], B[Math.floor(i / d)]);
  return new ReferenceTensor(a.shape, out);
}

const UNARY: Record<UnaryOp, (x: number) => number> = {
  tanh: Math.tanh,
  exp: Math.exp,
  sigmoid: (x) => 1 / (1 + Math.exp(-x)),
  rsqrt: (x) => 1 / Math.sqrt(x),
  reciprocal: (x) => 1 / x,
};

/** Max-subtracted softmax of data[o, o + d) into out; float64 sum. */
export function softmaxRow(data: Float32Array, out: Float32Array, o: number, d: number): void {
  let max = -Infinity;
  for (let i = 0; i < d; i++) if (data[o + i] > max) max = data[o + i];
  let sum = 0;
  for (let i = 0; i < d; i++) {
    const e = Math.exp(data[o + i] - max);
    out[o + i] = e;
    sum += e;
  }
  for (let i = 0; i < d; i++) out[o + i] /= sum;
}
