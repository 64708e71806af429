/**
 * 16-bit storage on the webgpu backend. f16/bf16 tensors stay packed two per u32 word; an op
 * that cannot read them packed gets a temporary f32 copy made by a widening kernel (exact, so
 * results are those of widening on the host). With f16 weights, an uploaded f32 weight is
 * narrowed to packed f16 on its first use as one.
 */
import { flatGrid } from './dispatch-grid.js';
import type { GpuMemory } from './gpu-memory.js';
import { packF16Shader, widenShader } from './shaders.js';
import { storageBytes, type WebGpuTensor } from './webgpu-tensor.js';

/**
 * x itself when it is stored as f32, else a temporary f32 copy widened on the device, pushed
 * to `temps`. The caller disposes `temps` once its op is recorded: the buffers go back to the
 * pool in this epoch, where later dispatches (ordered after this op) may reuse them.
 */
export function asF32(mem: GpuMemory, x: WebGpuTensor, temps: WebGpuTensor[]): WebGpuTensor {
  const kind = x.dtype;
  if (kind === 'f32') return x;
  const out = mem.allocate(x.shape);
  const n = x.size;
  if (n > 0) mem.rec.dispatch(`widen:${kind}`, () => widenShader(kind), [n], [x.buffer, out.buffer], flatGrid(n));
  temps.push(out);
  return out;
}

/**
 * Records an op on f32 views of `xs`: each 16-bit tensor is widened into a temporary (asF32)
 * and the temporaries are disposed once `record` has recorded the op, also when it throws.
 */
export function withF32<R>(mem: GpuMemory, xs: readonly WebGpuTensor[], record: (f32: WebGpuTensor[]) => R): R {
  const temps: WebGpuTensor[] = [];
  try {
    return record(xs.map((x) => asF32(mem, x, temps)));
  } finally {
    mem.release(temps);
  }
}

/**
 * Narrows an uploaded, never-written f32 tensor (GpuStorage.narrowable) to packed f16 on the
 * device, in place: the pack kernel is recorded now, the storage object, which every reshape
 * alias shares, takes the packed buffer and dtype, and the f32 buffer is destroyed (after the
 * submit that runs the pack, if it is still pending). Everything recorded later reads the f16
 * storage; everything recorded earlier read the f32 buffer.
 */
export function narrowToF16(mem: GpuMemory, x: WebGpuTensor): void {
  const s = x.storage;
  if (!s.narrowable || s.dtype !== 'f32') return;
  s.narrowable = false;
  const n = x.size, words = Math.ceil(n / 2);
  const bytes = storageBytes(n, 'f16');
  const { record } = mem.rec.pool.acquire(bytes);
  if (words > 0) mem.rec.dispatch('pack:f16', () => packF16Shader, [n, words], [s.buffer, record], flatGrid(words));
  mem.rec.pool.destroy(s.buffer, mem.rec.epoch);
  mem.liveBytes += bytes - s.bytes;
  s.buffer = record;
  s.bytes = bytes;
  s.dtype = 'f16';
}
