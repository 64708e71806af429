/**
 * Blocked float32 matrix multiply for the reference backend. Written for clarity first, but
 * blocked so a 3B-shaped layer finishes in seconds rather than minutes: a 4×4 register tile
 * of dot products, with the K loop split into cache-sized panels.
 *
 * The transposed-B product (every Linear layer) has a fast path: a WebAssembly SIMD kernel on
 * several threads (wasm-matmul.ts) that performs the very same float64 arithmetic in the same
 * order, so its results are bit-identical to the JS kernel below. The JS kernel stays as the
 * definition and the fallback (no SharedArrayBuffer / wasm SIMD, or PALIGEMMA_MATMUL=js).
 *
 * B (the weight) may be f16/bf16 bits: both kernels widen it a chunk of rows at a time into a
 * float32 scratch and then run the float32 arithmetic unchanged, so the result is bit-identical
 * to multiplying by the widened float32 weight, and the weight is never widened whole.
 */
import type { DType } from '../../interfaces/tensor-backend.js';
import { widenBits, type HalfDType } from './reference-tensor.js';
import { K_PANEL } from './wasm-gemm.js';
import { WasmMatmul } from './wasm-matmul.js';

export type MatmulEngine = 'auto' | 'js' | 'wasm';

export interface MatmulSettings {
  /** 'auto' (default): wasm when it loads and the product is not tiny; 'js': always the JS kernel; 'wasm': always wasm. */
  engine: MatmulEngine;
  /** Threads for the wasm kernel, the caller's included (default: the machine's parallelism, at most 8). */
  threads?: number;
}

/** Below this many multiply-adds ('auto'), copying into wasm memory is not worth it. */
const WASM_MIN_MACS = 1 << 14;
/** Rows longer than this would not fit the kernel's 2 GiB memory (never the case in practice). */
const WASM_MAX_K = 1 << 24;
/** Bytes of widened 16-bit B rows the JS kernel converts at a time (stays in cache). */
const JS_B_CHUNK_BYTES = 256 << 10;

let settings: MatmulSettings = settingsFromEnv();
let wasm: WasmMatmul | undefined;
let wasmError: string | undefined;

function settingsFromEnv(): MatmulSettings {
  const env = typeof process === 'undefined' ? {} : process.env;
  const engine = env.PALIGEMMA_MATMUL === 'js' || env.PALIGEMMA_MATMUL === 'wasm' ? env.PALIGEMMA_MATMUL : 'auto';
  const threads = Number(env.PALIGEMMA_MATMUL_THREADS);
  return { engine, threads: Number.isInteger(threads) && threads > 0 ? threads : undefined };
}

/**
 * Chooses the engine behind matmulTransposedB (process-wide). Also settable with the
 * environment variables PALIGEMMA_MATMUL=auto|js|wasm and PALIGEMMA_MATMUL_THREADS=n.
 */
export function configureMatmul(next: Partial<MatmulSettings>): void {
  const threads = 'threads' in next ? next.threads : settings.threads;
  if (wasm && threads !== settings.threads) { wasm.close(); wasm = undefined; }
  settings = { engine: next.engine ?? settings.engine, threads };
  wasmError = undefined;
}

/** What matmulTransposedB runs on now (for larger products), in a word and in words. */
export function matmulEngineInfo(): { engine: 'wasm' | 'js'; threads: number; detail: string } {
  const w = settings.engine === 'js' ? undefined : wasmEngine();
  if (w) return { engine: 'wasm', threads: w.threads, detail: `wasm SIMD float64-accumulating kernel, ${w.threads} thread(s)` };
  return { engine: 'js', threads: 1, detail: settings.engine === 'js' ? 'JS kernel (chosen)' : `JS kernel (wasm unavailable: ${wasmError})` };
}

function wasmEngine(): WasmMatmul | undefined {
  if (!wasm && wasmError === undefined) {
    try {
      wasm = new WasmMatmul({ threads: settings.threads });
    } catch (e) {
      wasmError = (e as Error).message;
    }
  }
  if (!wasm && settings.engine === 'wasm') throw new Error(`the wasm matmul kernel cannot run here: ${wasmError}`);
  return wasm;
}

/**
 * out[M, N] = a[M, K] · b[N, K]ᵀ (b in PyTorch Linear layout); the fast path when it runs here.
 * b is float32, or f16/bf16 bits when bDtype says so.
 */
export function matmulTransposedB(
  a: Float32Array, b: Float32Array | Uint16Array, out: Float32Array, m: number, k: number, n: number,
  bDtype: DType = 'f32',
): void {
  checkB(b, bDtype);
  if (k <= WASM_MAX_K && (settings.engine === 'wasm' || (settings.engine === 'auto' && m * n * k >= WASM_MIN_MACS))) {
    const w = wasmEngine();
    if (w) { w.matmulTransposedB(a, b, out, m, k, n, bDtype); return; }
  }
  matmulTransposedBJs(a, b, out, m, k, n, bDtype);
}

function checkB(b: Float32Array | Uint16Array, bDtype: DType): void {
  if ((bDtype === 'f32') !== (b instanceof Float32Array)) throw new Error(`matmul: B is ${b.constructor.name} but its dtype is ${bDtype}`);
}

/**
 * The definition: out[M, N] = a[M, K] · b[N, K]ᵀ. Each output is a float64 sum over one
 * K_PANEL-long panel at a time, added to the float32 output at the end of each panel.
 * A 16-bit b is widened a chunk of rows at a time; each output's arithmetic does not depend
 * on which columns share a chunk, so the result equals that of the widened float32 b.
 */
export function matmulTransposedBJs(
  a: Float32Array, b: Float32Array | Uint16Array, out: Float32Array, m: number, k: number, n: number,
  bDtype: DType = 'f32',
): void {
  checkB(b, bDtype);
  out.fill(0, 0, m * n);
  if (b instanceof Float32Array) { kernelTransposedB(a, b, 0, out, m, k, n, 0, n); return; }
  let cols = Math.max(4, Math.floor(JS_B_CHUNK_BYTES / (4 * Math.max(1, k))));
  cols = Math.min(n, cols - (cols % 4));
  const scratch = new Float32Array(cols * k);
  for (let j0 = 0; j0 < n; j0 += cols) {
    const j1 = Math.min(n, j0 + cols);
    widenBits(b, bDtype as HalfDType, j0 * k, j1 * k, scratch.subarray(0, (j1 - j0) * k));
    kernelTransposedB(a, scratch, j0, out, m, k, n, j0, j1);
  }
}

/** Adds a · bᵀ into out's columns [j0, j1); row j of b starts at (j - bRow0) · k. */
function kernelTransposedB(
  a: Float32Array, b: Float32Array, bRow0: number, out: Float32Array, m: number, k: number, n: number,
  jStart: number, jEnd: number,
): void {
  for (let k0 = 0; k0 < k; k0 += K_PANEL) {
    const k1 = Math.min(k, k0 + K_PANEL);
    let i = 0;
    for (; i + 4 <= m; i += 4) {
      const a0 = i * k, a1 = a0 + k, a2 = a1 + k, a3 = a2 + k;
      let j = jStart;
      for (; j + 4 <= jEnd; j += 4) {
        const b0 = (j - bRow0) * k, b1 = b0 + k, b2 = b1 + k, b3 = b2 + k;
        let c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
        let c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
        for (let p = k0; p < k1; p++) {
          const x0 = a[a0 + p], x1 = a[a1 + p], x2 = a[a2 + p], x3 = a[a3 + p];
          const y0 = b[b0 + p], y1 = b[b1 + p], y2 = b[b2 + p], y3 = b[b3 + p];
          c00 += x0 * y0; c01 += x0 * y1; c02 += x0 * y2; c03 += x0 * y3;
          c10 += x1 * y0; c11 += x1 * y1; c12 += x1 * y2; c13 += x1 * y3;
          c20 += x2 * y0; c21 += x2 * y1; c22 += x2 * y2; c23 += x2 * y3;
          c30 += x3 * y0; c31 += x3 * y1; c32 += x3 * y2; c33 += x3 * y3;
        }
        const o0 = i * n + j, o1 = o0 + n, o2 = o1 + n, o3 = o2 + n;
        out[o0] += c00; out[o0 + 1] += c01; out[o0 + 2] += c02; out[o0 + 3] += c03;
        out[o1] += c10; out[o1 + 1] += c11; out[o1 + 2] += c12; out[o1 + 3] += c13;
        out[o2] += c20; out[o2 + 1] += c21; out[o2 + 2] += c22; out[o2 + 3] += c23;
        out[o3] += c30; out[o3 + 1] += c31; out[o3 + 2] += c32; out[o3 + 3] += c33;
      }
      for (; j < jEnd; j++) {
        const bj = (j - bRow0) * k;
        let c0 = 0, c1 = 0, c2 = 0, c3 = 0;
        for (let p = k0; p < k1; p++) {
          const y = b[bj + p];
          c0 += a[a0 + p] * y; c1 += a[a1 + p] * y; c2 += a[a2 + p] * y; c3 += a[a3 + p] * y;
        }
        out[i * n + j] += c0; out[(i + 1) * n + j] += c1;
        out[(i + 2) * n + j] += c2; out[(i + 3) * n + j] += c3;
      }
    }
    // Leftover rows (m not a multiple of 4): one row against four columns at a time.
    for (; i < m; i++) {
      const ai = i * k;
      let j = jStart;
      for (; j + 4 <= jEnd; j += 4) {
        const b0 = (j - bRow0) * k, b1 = b0 + k, b2 = b1 + k, b3 = b2 + k;
        let c0 = 0, c1 = 0, c2 = 0, c3 = 0;
        for (let p = k0; p < k1; p++) {
          const x = a[ai + p];
          c0 += x * b[b0 + p]; c1 += x * b[b1 + p]; c2 += x * b[b2 + p]; c3 += x * b[b3 + p];
        }
        const o = i * n + j;
        out[o] += c0; out[o + 1] += c1; out[o + 2] += c2; out[o + 3] += c3;
      }
      for (; j < jEnd; j++) {
        const bj = (j - bRow0) * k;
        let c = 0;
        for (let p = k0; p < k1; p++) c += a[ai + p] * b[bj + p];
        out[i * n + j] += c;
      }
    }
  }
}

/** out[M, N] = a[M, K] · b[K, N]. Row-by-row axpy keeps both inner reads contiguous. */
export function matmulPlain(
  a: Float32Array, b: Float32Array, out: Float32Array, m: number, k: number, n: number,
): void {
  out.fill(0);
  for (let i = 0; i < m; i++) {
    const oi = i * n;
    for (let p = 0; p < k; p++) {
      const x = a[i * k + p];
      if (x === 0) continue;
      const bp = p * n;
      for (let j = 0; j < n; j++) out[oi + j] += x * b[bp + j];
    }
  }
}
