/// <reference types="@webgpu/types" />
/** Uniform parameters of the recorded dispatches, packed per epoch. */

/** A uniform value: plain numbers are u32, `f32(x)` marks a float. */
export type Param = number | { f: number };
export const f32 = (x: number): { f: number } => ({ f: x });

const UNIFORM_ARENA_BYTES = 64 * 1024;

/**
 * Uniform parameters of one epoch, packed into a few big uniform buffers at aligned offsets and
 * written with one writeBuffer each just before the submit.
 */
export class UniformArena {
  private readonly buffers: Array<{ gpu: GPUBuffer; data: Uint8Array }> = [];
  private current = 0;
  private offset = 0;

  constructor(private readonly device: GPUDevice, private readonly usage: number, private readonly align: number) {}

  alloc(params: readonly Param[]): { buffer: GPUBuffer; offset: number; size: number } {
    const size = Math.max(16, Math.ceil((params.length * 4) / 16) * 16);
    if (this.offset + size > UNIFORM_ARENA_BYTES) { this.current++; this.offset = 0; }
    if (this.current === this.buffers.length) {
      this.buffers.push({
        gpu: this.device.createBuffer({ size: UNIFORM_ARENA_BYTES, usage: this.usage, label: 'uniforms' }),
        data: new Uint8Array(UNIFORM_ARENA_BYTES),
      });
    }
    const slot = this.buffers[this.current];
    const view = new DataView(slot.data.buffer, this.offset, size);
    params.forEach((p, i) => {
      if (typeof p === 'number') view.setUint32(i * 4, p >>> 0, true);
      else view.setFloat32(i * 4, p.f, true);
    });
    const out = { buffer: slot.gpu, offset: this.offset, size };
    this.offset += Math.ceil(size / this.align) * this.align;
    return out;
  }

  /** Writes this epoch's parameters; call right before submitting. */
  upload(queue: GPUQueue): void {
    for (let i = 0; i <= this.current && i < this.buffers.length; i++) {
      const used = i < this.current ? UNIFORM_ARENA_BYTES : this.offset;
      if (used > 0) queue.writeBuffer(this.buffers[i].gpu, 0, this.buffers[i].data, 0, used);
    }
    this.current = 0;
    this.offset = 0;
  }

  destroy(): void {
    for (const b of this.buffers) b.gpu.destroy();
    this.buffers.length = 0;
  }
}
