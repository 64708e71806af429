/**
 * Deliberately broken backends (they keep the reference backend's own name; the registry name
 * says which one runs), each one plausible bug away from the reference backend, so the
 * conformance tests can show that the kit fails them and names the op and case. Also a partial
 * backend that declares or throws "not supported" for some ops.
 */
import type { AttentionKernel, AttentionOptions } from '../../src/interfaces/attention-kernel.js';
import { AttentionKernelContribution, BackendContribution } from '../../src/interfaces/contributions.js';
import type { DType, MatmulOptions, OpName, Tensor, TensorBackend } from '../../src/interfaces/tensor-backend.js';
import { ReferenceAttentionKernel } from '../../src/backends/reference/reference-attention-kernel.js';
import { ReferenceBackend } from '../../src/backends/reference/reference-backend.js';
import { ReferenceTensor } from '../../src/backends/reference/reference-tensor.js';
import { definePlugin } from '../../src/plugin/define-plugin.js';

const data = (t: Tensor): Float32Array => (t as ReferenceTensor).data;

/** Softmax without subtracting the row max, in float32 as a GPU shader would: exp overflows past ~88. */
export class NaiveSoftmaxBackend extends ReferenceBackend {
  override softmax(x: Tensor): Tensor {
    const X = data(x), d = x.shape[x.shape.length - 1];
    const out = new Float32Array(X.length);
    for (let o = 0; o < X.length; o += d) {
      let sum = 0;
      for (let i = 0; i < d; i++) { out[o + i] = Math.fround(Math.exp(X[o + i])); sum = Math.fround(sum + out[o + i]); }
      for (let i = 0; i < d; i++) out[o + i] = Math.fround(out[o + i] / sum);
    }
    return new ReferenceTensor(x.shape, out);
  }
}

/** RoPE on interleaved pairs (2i, 2i+1) instead of rotate-half pairs (i, i + D/2). */
export class InterleavedRopeBackend extends ReferenceBackend {
  override rope(x: Tensor, positions: Int32Array, theta: number): Tensor {
    const X = data(x), [t, h, d] = x.shape;
    const out = new Float32Array(X.length);
    for (let ti = 0; ti < t; ti++) {
      for (let i = 0; i < d / 2; i++) {
        const angle = positions[ti] * Math.pow(theta, (-2 * i) / d);
        const c = Math.cos(angle), s = Math.sin(angle);
        for (let hi = 0; hi < h; hi++) {
          const o = (ti * h + hi) * d, x1 = X[o + 2 * i], x2 = X[o + 2 * i + 1];
          out[o + 2 * i] = x1 * c - x2 * s;
          out[o + 2 * i + 1] = x2 * c + x1 * s;
        }
      }
    }
    return new ReferenceTensor(x.shape, out);
  }
}

/** A 4-row tiled matmul that forgets the remainder: the last row stays zero when M % 4 ≠ 0. */
export class RowDroppingMatmulBackend extends ReferenceBackend {
  override matmul(a: Tensor, b: Tensor, opts?: MatmulOptions): Tensor {
    const out = super.matmul(a, b, opts);
    const [m, n] = out.shape;
    if (m % 4 !== 0) data(out).fill(0, (m - 1) * n);
    return out;
  }
}

/** Runs the reference kernel one query head at a time with kv head h % kvHeads (should be h // group). */
export class ModuloGqaKernel implements AttentionKernel {
  readonly name = 'gqa-modulo';
  private readonly inner = new ReferenceAttentionKernel();
  attend(b: TensorBackend, q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor {
    const hq = q.shape[1], hkv = k.shape[1];
    const heads = Array.from({ length: hq }, (_, h) => this.inner.attend(b,
      b.slice(q, 1, h, h + 1), b.slice(k, 1, h % hkv, h % hkv + 1), b.slice(v, 1, h % hkv, h % hkv + 1), opts));
    return b.concat(heads, 1);
  }
}

/** Always causal when several queries come at once: prefix-LM and bidirectional prefill are wrong. */
export class AlwaysCausalKernel implements AttentionKernel {
  readonly name = 'always-causal';
  private readonly inner = new ReferenceAttentionKernel();
  attend(b: TensorBackend, q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor {
    return this.inner.attend(b, q, k, v, q.shape[0] > 1 ? { ...opts, mask: { kind: 'causal' } } : opts);
  }
}

/** Gemma 2 bug: ignores the attention logit soft-cap. */
export class NoSoftCapKernel implements AttentionKernel {
  readonly name = 'no-softcap';
  private readonly inner = new ReferenceAttentionKernel();
  attend(b: TensorBackend, q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor {
    const { softCap: _, ...rest } = opts;
    return this.inner.attend(b, q, k, v, rest);
  }
}

/** Gemma 2 bug: an off-by-one window (i − w ≤ j instead of i − w < j). */
export class WideWindowKernel implements AttentionKernel {
  readonly name = 'wide-window';
  private readonly inner = new ReferenceAttentionKernel();
  attend(b: TensorBackend, q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor {
    return this.inner.attend(b, q, k, v, opts.slidingWindow === undefined ? opts : { ...opts, slidingWindow: opts.slidingWindow + 1 });
  }
}

/**
 * Gemma 2 bug: the window also cuts the bidirectional prefix (rows of the prefix lose prefix keys
 * more than w − 1 behind them), i.e. the window applied before the prefix rule. Rows inside the
 * prefix run as bidirectional attention over keys (q − w, P); the others as the right rule.
 */
export class WindowOverPrefixKernel implements AttentionKernel {
  readonly name = 'window-over-prefix';
  private readonly inner = new ReferenceAttentionKernel();
  attend(b: TensorBackend, q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor {
    const w = opts.slidingWindow, m = opts.mask;
    if (w === undefined || m.kind !== 'prefixLm') return this.inner.attend(b, q, k, v, opts);
    const off = opts.queryOffset ?? 0;
    const rows = Array.from({ length: q.shape[0] }, (_, i) => {
      const qi = b.slice(q, 0, i, i + 1);                                  // [1, Hq, D]
      const at = off + i;
      if (at >= m.prefixLength) return this.inner.attend(b, qi, k, v, { ...opts, queryOffset: at });
      const lo = Math.max(0, at - w + 1);
      const ki = b.slice(k, 0, lo, m.prefixLength), vi = b.slice(v, 0, lo, m.prefixLength);
      const { slidingWindow: _w, ...rest } = opts;
      return this.inner.attend(b, qi, ki, vi, { ...rest, mask: { kind: 'bidirectional' }, queryOffset: 0, kvLength: m.prefixLength - lo });
    });
    return b.concat(rows, 0);
  }
}

/** Declares rope unsupported, and throws "not supported" from gelu while claiming it. */
export class PartialBackend extends ReferenceBackend {
  override supports(op: OpName, dtype: DType = 'f32'): boolean {
    return op !== 'rope' && super.supports(op, dtype);
  }
  override rope(): Tensor {
    throw new Error('rope is not supported by the partial backend');
  }
  override gelu(): Tensor {
    throw new Error('gelu is not supported by the partial backend');
  }
}

/** Every broken backend above, registered as a user's plugin would register them. */
export const brokenBackendsPlugin = definePlugin('broken-backends', ({ bind }) => {
  const backends: Array<[string, () => TensorBackend, string, string?]> = [
    ['broken-softmax', () => new NaiveSoftmaxBackend(), 'softmax without max subtraction, float32'],
    ['broken-rope', () => new InterleavedRopeBackend(), 'interleaved instead of rotate-half RoPE'],
    ['broken-matmul', () => new RowDroppingMatmulBackend(), 'matmul drops the last row when M % 4 ≠ 0'],
    ['broken-gqa', () => new ReferenceBackend(), 'reference ops, attention picks kv head h % kvHeads', 'gqa-modulo'],
    ['broken-mask', () => new ReferenceBackend(), 'reference ops, attention is causal in every prefill', 'always-causal'],
    ['partial', () => new PartialBackend(), 'no rope; gelu throws not supported'],
    ['broken-softcap', () => new ReferenceBackend(), 'reference ops, attention ignores the soft-cap', 'no-softcap'],
    ['broken-window', () => new ReferenceBackend(), 'reference ops, attention window one key too wide', 'wide-window'],
    ['broken-prefix-window', () => new ReferenceBackend(), 'reference ops, attention window cuts the prefix', 'window-over-prefix'],
  ];
  for (const [name, create, description, defaultAttention] of backends) {
    bind(BackendContribution).toConstantValue({ name, description, create, defaultAttention: defaultAttention ?? 'reference' });
  }
  bind(AttentionKernelContribution).toConstantValue({
    name: 'gqa-modulo', description: 'broken: kv head h % kvHeads', create: () => new ModuloGqaKernel(),
  });
  bind(AttentionKernelContribution).toConstantValue({
    name: 'always-causal', description: 'broken: causal mask in every prefill', create: () => new AlwaysCausalKernel(),
  });
  for (const kernel of [NoSoftCapKernel, WideWindowKernel, WindowOverPrefixKernel]) {
    const k = new kernel();
    bind(AttentionKernelContribution).toConstantValue({ name: k.name, description: `broken: ${k.name}`, create: () => new kernel() });
  }
});

export default brokenBackendsPlugin;
