/**
 * The webgpu backend's fused attention: one online-softmax kernel (shaders.ts) per call, with
 * visibility evaluated per key from the mask uniforms (the rule of src/attention/attention-mask.ts).
 */
import type { AttentionOptions } from '../../interfaces/attention-kernel.js';
import { attentionDims } from '../../tensor/op-shapes.js';
import type { GpuMemory } from './gpu-memory.js';
import { withF32 } from './half-storage.js';
import { ATTN_BLOCK, MASK_KIND, attentionShader } from './shaders.js';
import { f32, type Param } from './uniform-arena.js';
import type { WebGpuTensor } from './webgpu-tensor.js';

/** q [Tq, Hq, D], k/v [Tk, Hkv, D] → [Tq, Hq, D]; see AttentionKernel. */
export function recordAttention(mem: GpuMemory, Q0: WebGpuTensor, K0: WebGpuTensor, V0: WebGpuTensor, opts: AttentionOptions): WebGpuTensor {
  const { tq, hq, d, hkv, kvLength } = attentionDims(Q0.shape, K0.shape, V0.shape, opts.kvLength);
  const queryOffset = opts.queryOffset ?? 0;
  if (tq > 65535 || hq > 65535) throw new Error(`attention: at most 65535 query rows and heads per call, got ${tq} × ${hq}`);
  const out = mem.allocate([tq, hq, d]);
  if (out.size === 0) return out;
  const mask = opts.mask;
  const params: Param[] = [
    tq, hq, hkv, d,
    kvLength, queryOffset, MASK_KIND[mask.kind], mask.kind === 'prefixLm' ? mask.prefixLength : 0,
    opts.slidingWindow ?? 0, f32(opts.scale), f32(opts.softCap ?? 0),
  ];
  const dims = Math.max(1, Math.ceil(d / ATTN_BLOCK));
  withF32(mem, [Q0, K0, V0], ([Q, K, V]) => mem.rec.dispatch(`attention:${dims}`, () => attentionShader(dims), params,
    [Q.buffer, K.buffer, V.buffer, out.buffer], [hq, tq, 1]));
  return out;
}
