/**
 * Where the onnx backend keeps 16-bit weights: their bits (IEEE half or bfloat16, as the
 * checkpoint holds them) in WebAssembly shared memories, the only copy kept. Few-row products
 * read them straight from there (gemv16-kernel.ts, on the calling thread plus one helper thread
 * per extra core); everything else gets float32 values widened from them on demand, a chunk or
 * a few rows at a time (`widen`, `gather`), since onnxruntime-node refuses inputs whose memory
 * is a SharedArrayBuffer.
 *
 * Memory: each shared memory holds at most MEMORY_BYTES (addresses stay below 2³¹); a weight
 * goes to the first memory with room, a new memory is made when none has. Each memory starts
 * with SCRATCH_BYTES for x and y of one call. Space is never reused: weights live as long as
 * the backend (WebAssembly memories cannot shrink), and `close` drops them all.
 */
import { bf16ToF32, f16ToF32 } from '../../tensor/dtype.js';
import {
  buildGemv16Module, GEMV16_EXPORTS, GEMV16_MAX_ROWS, gemvExport, type Half, pairOrder, PRESCALE, PRESCALE_LIMIT, widenExport,
} from './gemv16-kernel.js';
import { align64, WASM_PAGE, WasmThreadPool, type WasmCall } from '../reference/wasm-threads.js';

/** Pages of one memory: just under 2 GiB, so that every byte offset is a positive i32. */
const MEMORY_PAGES = 32767;
const MEMORY_BYTES = MEMORY_PAGES * WASM_PAGE;
/** x and y of one call (y is computed in column chunks that fit). */
const SCRATCH_BYTES = 8 << 20;
/** Below this many multiply-adds one thread does it all (waking a helper costs ~20 µs). */
const MIN_THREADED_MACS = 1 << 18;
/** Least a memory grows by at once. */
const GROW_BYTES = 64 << 20;

/** A weight's place: which memory, at which byte offset, in which format. */
export interface Placed16 {
  readonly memory: number;
  readonly offset: number;
  readonly format: Half;
  /** Elements. */
  readonly length: number;
}

interface Memory16 {
  pool: WasmThreadPool;
  /** Bytes handed out so far (scratch first). */
  used: number;
  hasSpecial: (src: number, bytes: number) => number;
}

export class HalfMemory {
  private readonly memories: Memory16[] = [];
  private module: Uint8Array | undefined;

  constructor(private readonly threads?: number) {}

  /**
   * Copies 16-bit bits into a shared memory and returns the copy (a view that stays valid) and
   * its place; undefined when the weight is too big for one memory or is f16 holding ±Infinity
   * or NaN (the caller keeps its own).
   */
  place(bits: Uint16Array, format: Half): { view: Uint16Array; placed: Placed16 } | undefined {
    const room = this.reserve(bits.length, format);
    if (!room) return undefined;
    room.view.set(bits);
    return this.settle(room) ? room : undefined;
  }

  /**
   * Room for `length` elements in a shared memory, for the caller to fill in place (a loader
   * reading a file straight into it, so the weight is not held twice on the way); `settle`
   * then accepts it. Undefined when it fits no memory.
   */
  reserve(length: number, format: Half): { view: Uint16Array; placed: Placed16 } | undefined {
    const bytes = align64(length * 2);
    if (bytes > MEMORY_BYTES - SCRATCH_BYTES) return undefined;           // fits no memory
    let index = this.memories.findIndex((m) => m.used + bytes <= MEMORY_BYTES);
    if (index < 0) index = this.memories.push(this.newMemory()) - 1;
    const mem = this.memories[index];
    const offset = mem.used;
    mem.used += bytes;
    this.ensure(mem, mem.used);
    const view = new Uint16Array(mem.pool.memory.buffer, offset, length) as Uint16Array;
    return { view, placed: { memory: index, offset, format, length } };
  }

  /**
   * Whether a filled reservation can be read by the kernels: bfloat16 widening is exact for
   * every value, f16's only for finite halves, so an f16 weight holding ±Infinity or NaN is
   * refused (false; the caller keeps a copy of its own). A refused or `release`d room is given
   * back when it is the latest one.
   */
  settle(room: { view: Uint16Array; placed: Placed16 }): boolean {
    const { placed, view } = room;
    if (placed.format !== 'f16') return true;
    const mem = this.memories[placed.memory];
    const whole = placed.length & ~7;
    let special = whole > 0 && mem.hasSpecial(placed.offset, whole * 2) !== 0;
    for (let i = whole; i < placed.length && !special; i++) special = (view[i] & 0x7c00) === 0x7c00;
    if (special) this.release(placed);
    return !special;
  }

  /** Gives a reservation back (only the latest one's room can be reused). */
  release(placed: Placed16): void {
    const mem = this.memories[placed.memory];
    if (mem.used === placed.offset + align64(placed.length * 2)) mem.used = placed.offset;
  }

  /**
   * out[m, n] = x[m, k] · W[n, k]ᵀ for a placed weight W (k a multiple of 8). Rows of x go
   * GEMV16_MAX_ROWS at a time; each pass reads W once.
   */
  multiply(w: Placed16, x: Float32Array, m: number, k: number, n: number, out: Float32Array): void {
    if (k % 8 !== 0) throw new Error(`gemv16: k = ${k} is not a multiple of 8`);
    if (n * k > w.length) throw new Error('gemv16: the weight is smaller than its shape');
    if (x.length < m * k || out.length < m * n) throw new Error('gemv16: an operand is smaller than its shape');
    const mem = this.memories[w.memory];
    const { f32 } = mem.pool.views();
    const xBytes = GEMV16_MAX_ROWS * k * 4;
    if (xBytes + GEMV16_MAX_ROWS * 4 > SCRATCH_BYTES) throw new Error(`gemv16: k = ${k} is too long`);
    const xOff = 0, yOff = align64(xBytes);
    for (let r0 = 0; r0 < m; r0 += GEMV16_MAX_ROWS) {
      const rows = Math.min(GEMV16_MAX_ROWS, m - r0);
      const xs = x.subarray(r0 * k, (r0 + rows) * k);
      // f16: x times 2¹¹² saves the kernel that multiply per weight (exact: a power of two),
      // where x is small enough not to overflow; NaN in x takes the other kernel, which is fine.
      const prescaled = w.format === 'f16' && xs.every((v) => Math.abs(v) < PRESCALE_LIMIT);
      pairOrder(xs, f32.subarray(xOff / 4, xOff / 4 + rows * k), prescaled ? PRESCALE : 1);
      const cols = Math.max(1, Math.min(n, Math.floor((SCRATCH_BYTES - yOff) / (rows * 4))));
      const fn = gemvExport(w.format, rows, prescaled);
      for (let n0 = 0; n0 < n; n0 += cols) {
        const nc = Math.min(cols, n - n0);
        const parts = rows * nc * k >= MIN_THREADED_MACS ? Math.min(mem.pool.threads, nc) : 1;
        const calls: WasmCall[] = [];
        for (let t = 0; t < parts; t++) {
          const a = n0 + Math.floor((nc * t) / parts), b = n0 + Math.floor((nc * (t + 1)) / parts);
          // y address shifted back by n0 columns, so that column n lands at yOff + (r·nc + n − n0)·4
          calls.push({ fn, args: [w.offset, k, xOff, yOff - n0 * 4, nc, a, b] });
        }
        mem.pool.run(calls);
        for (let r = 0; r < rows; r++) {
          const src = yOff / 4 + r * nc;
          out.set(f32.subarray(src, src + nc), (r0 + r) * n + n0);
        }
      }
    }
  }

  /**
   * Float32 values of elements [first, first + count) of a placed weight into `out` (any
   * memory), through the scratch area in chunks, both threads widening.
   */
  widen(w: Placed16, first: number, count: number, out: Float32Array, at = 0): void {
    if (first < 0 || first + count > w.length) throw new Error('halfMemory.widen: range outside the weight');
    const mem = this.memories[w.memory];
    const { f32, u16 } = mem.pool.views();
    const chunk = (SCRATCH_BYTES / 4) & ~7;                                 // elements per pass
    for (let c0 = 0; c0 < count; c0 += chunk) {
      const len = Math.min(chunk, count - c0);
      const whole = len & ~7;
      const src = w.offset + (first + c0) * 2;
      if (whole > 0) {
        const parts = whole >= 1 << 16 ? mem.pool.threads : 1;
        const calls: WasmCall[] = [];
        for (let t = 0; t < parts; t++) {
          const a = Math.floor((whole / 8) * t / parts) * 8, b = Math.floor((whole / 8) * (t + 1) / parts) * 8;
          calls.push({ fn: widenExport(w.format), args: [src + a * 2, a * 4, b - a] });
        }
        mem.pool.run(calls);
        out.set(f32.subarray(0, whole), at + c0);
      }
      if (whole < len) {
        // The last (fewer than eight) values, in JS.
        const tail = u16.subarray(src / 2 + whole, src / 2 + len);
        out.set(w.format === 'f16' ? f16ToF32(tail) : bf16ToF32(tail), at + c0 + whole);
      }
    }
  }

  /** Rows `ids` of a placed [rows, h] table as float32 [ids.length, h]. */
  gather(w: Placed16, ids: Int32Array, h: number): Float32Array {
    const out = new Float32Array(ids.length * h);
    ids.forEach((id, t) => this.widen(w, id * h, h, out, t * h));
    return out;
  }

  close(): void {
    for (const m of this.memories) m.pool.close();
    this.memories.length = 0;
  }

  private newMemory(): Memory16 {
    this.module ??= buildGemv16Module(MEMORY_PAGES);
    const pool = new WasmThreadPool(this.module, GEMV16_EXPORTS, { threads: this.threads, maximumPages: MEMORY_PAGES });
    const mem: Memory16 = {
      pool, used: SCRATCH_BYTES,
      hasSpecial: pool.exports.hasSpecial16 as Memory16['hasSpecial'],
    };
    this.ensure(mem, SCRATCH_BYTES);
    return mem;
  }

  private ensure(mem: Memory16, bytes: number): void {
    // Grow in steps of at least GROW_BYTES: one grow per weight would be thousands of them.
    const have = mem.pool.memory.buffer.byteLength;
    if (bytes > have) mem.pool.ensure(Math.min(MEMORY_BYTES, Math.max(bytes, have + GROW_BYTES)));
  }
}
