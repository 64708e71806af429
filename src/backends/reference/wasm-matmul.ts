/**
 * Fast path of the reference backend's transposed-B matmul: the WebAssembly SIMD kernel of
 * wasm-gemm.ts on the calling thread plus helper threads sharing one memory (wasm-threads.ts).
 * The call stays synchronous. Results are bit-identical to matmulTransposedBJs (wasm-gemm.ts
 * explains why).
 *
 * One call: copy rows of A into the shared memory and pack them to float64 (once); then, chunk
 * by chunk of B's rows: copy the chunk in, zero the C block, let every thread compute its own
 * range of whole micro-panels of output columns, and copy the C block out. A 16-bit B (f16/bf16
 * weights) is copied in as bits; each thread first widens the rows it reads to float32 in wasm
 * (bf16 by a SIMD byte shuffle, f16 through a table), so the weight is never widened whole.
 *
 * With one row of A (decode) the copy of B into the shared memory costs about as much as the
 * arithmetic and both are bound by memory bandwidth; a second thread then adds little.
 *
 * Chunks keep the shared memory small whatever the operands' size: rows of A (float32 staged +
 * float64 packed, 96 MiB by default), rows of B (4 MiB, so a chunk stays in the last-level
 * cache while it is used) and the C block (16 MiB). The memory grows to the largest chunk seen
 * and is then reused; it is never returned (WebAssembly memories cannot shrink).
 */
import type { DType } from '../../interfaces/tensor-backend.js';
import { f16ToF32 } from '../../tensor/dtype.js';
import { buildGemmModule, F16_TABLE_ADDRESS, DEFAULT_GEMM_SHAPE, packedABytes, workspaceBytes, type GemmShape } from './wasm-gemm.js';
import { align64, WasmThreadPool, type WasmCall } from './wasm-threads.js';

/** Addresses are passed as i32: keep the memory below 2 GiB. */
const MAX_PAGES = 32767;
/** The first bytes of the memory: float32 bit patterns of every f16 bit pattern (written on first f16 use). */
const F16_TABLE_BYTES = 65536 * 4;

export interface WasmMatmulOptions {
  /** Threads in all, the caller's included (default: the machine's parallelism, at most 8). */
  threads?: number;
  shape?: GemmShape;
  /** Below this many multiply-adds the caller's thread does it all (waking a helper costs ~20 µs). */
  minThreadedMacs?: number;
  /** Budgets in bytes: A (staged + packed), a chunk of B, a block of C. */
  stageBytes?: { a: number; b: number; c: number };
}

export class WasmMatmul {
  private readonly shape: GemmShape;
  private readonly minThreadedMacs: number;
  private readonly stage: { a: number; b: number; c: number };
  private readonly pool: WasmThreadPool;
  private readonly packA: (a: number, lda: number, m: number, k: number, dst: number) => void;
  private f32: Float32Array<ArrayBufferLike> = new Float32Array(0);
  private u16: Uint16Array<ArrayBufferLike> = new Uint16Array(0);
  private f16TableWritten = false;

  constructor(options: WasmMatmulOptions = {}) {
    this.shape = options.shape ?? DEFAULT_GEMM_SHAPE;
    this.minThreadedMacs = options.minThreadedMacs ?? 1 << 21;
    this.stage = options.stageBytes ?? { a: 96 << 20, b: 4 << 20, c: 16 << 20 };
    const bytes = buildGemmModule(this.shape, { initialPages: 1, maximumPages: MAX_PAGES, shared: true });
    this.pool = new WasmThreadPool(bytes, ['gemm', 'gemmBf16', 'gemmF16'], { threads: options.threads, maximumPages: MAX_PAGES });
    this.packA = this.pool.exports.packA as WasmMatmul['packA'];
  }

  get threads(): number {
    return this.pool.threads;
  }

  /** out[M, N] = a[M, K] · b[N, K]ᵀ, bit-identical to matmulTransposedBJs; b may be f16/bf16 bits. */
  matmulTransposedB(
    a: Float32Array, b: Float32Array | Uint16Array, out: Float32Array, m: number, k: number, n: number,
    bDtype: DType = 'f32',
  ): void {
    if ((bDtype === 'f32') !== (b instanceof Float32Array)) throw new Error(`matmul: B is ${b.constructor.name} but its dtype is ${bDtype}`);
    if (a.length < m * k || b.length < n * k || out.length < m * n) throw new Error('matmul: an operand is smaller than its shape');
    if (m === 0 || n === 0) return;
    if (k === 0) { out.fill(0, 0, m * n); return; }
    const nr = this.shape.nr;
    const rowsA = Math.max(1, Math.min(m, Math.floor(this.stage.a / (k * 12))));
    for (let i0 = 0; i0 < m; i0 += rowsA) {
      const mc = Math.min(rowsA, m - i0);
      // Columns per chunk: B rows and the C block within their budgets, whole micro-panels.
      let cols = Math.min(n, Math.floor(this.stage.b / (k * 4)), Math.floor(this.stage.c / (mc * 4)));
      cols = Math.max(nr, cols - (cols % nr));
      const ldc = Math.ceil(Math.min(cols, n) / nr) * nr;
      const threads = mc * n * k >= this.minThreadedMacs ? this.pool.threads : 1;
      // Memory: f16 table | A float32 | A packed float64 | B chunk | C block | one workspace per
      // thread | B chunk as 16-bit bits (16-bit B only).
      const ws = align64(workspaceBytes(this.shape));
      const aOff = F16_TABLE_ADDRESS + F16_TABLE_BYTES;
      const apOff = aOff + align64(mc * k * 4);
      const bOff = apOff + align64(packedABytes(mc, k));
      const cOff = bOff + align64(ldc * k * 4);
      const wsOff = cOff + align64(mc * ldc * 4);
      const b16Off = wsOff + threads * ws;
      this.ensure(b16Off + (bDtype === 'f32' ? 0 : align64(ldc * k * 2)));
      if (bDtype === 'f16' && !this.f16TableWritten) {
        f16ToF32(Uint16Array.from({ length: 65536 }, (_, h) => h), this.f32.subarray(F16_TABLE_ADDRESS / 4, F16_TABLE_ADDRESS / 4 + 65536));
        this.f16TableWritten = true;
      }
      const f32 = this.f32;
      f32.set(a.subarray(i0 * k, (i0 + mc) * k), aOff / 4);
      this.packA(aOff, k * 4, mc, k, apOff);
      for (let j0 = 0; j0 < n; j0 += cols) {
        const nv = Math.min(cols, n - j0);
        if (b instanceof Float32Array) f32.set(b.subarray(j0 * k, (j0 + nv) * k), bOff / 4);
        else this.u16.set(b.subarray(j0 * k, (j0 + nv) * k), b16Off / 2);
        f32.fill(0, cOff / 4, cOff / 4 + mc * ldc);
        // Split the chunk's micro-panels evenly between the threads.
        const panels = Math.ceil(nv / nr);
        const parts = Math.min(threads, panels);
        const calls: WasmCall[] = [];
        for (let t = 0; t < parts; t++) {
          const j0t = Math.floor((panels * t) / parts) * nr, j1t = Math.floor((panels * (t + 1)) / parts) * nr;
          const args = [apOff, mc, k, bOff, j0t, j1t, nv, cOff, ldc, wsOff + t * ws];
          if (bDtype === 'f32') { calls.push({ fn: 'gemm', args }); continue; }
          // This call reads B rows [j0t, min(j1t, nv)): it widens exactly those first.
          const rows = Math.max(0, Math.min(j1t, nv) - j0t);
          calls.push({ fn: bDtype === 'bf16' ? 'gemmBf16' : 'gemmF16', args: [b16Off + j0t * k * 2, rows * k, ...args] });
        }
        this.pool.run(calls);
        for (let i = 0; i < mc; i++) {
          const src = cOff / 4 + i * ldc;
          out.set(f32.subarray(src, src + nv), (i0 + i) * n + j0);
        }
      }
    }
  }

  /** Stops the helper threads. */
  close(): void {
    this.pool.close();
  }

  private ensure(bytes: number): void {
    if (bytes > MAX_PAGES * 65536) throw new Error(`matmul needs ${bytes} bytes of wasm memory`);
    this.pool.ensure(bytes);
    ({ f32: this.f32, u16: this.u16 } = this.pool.views());
  }
}
