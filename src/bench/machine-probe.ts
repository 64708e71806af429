/**
 * What this machine can do at best, measured in the bench's own process so its floors compare
 * like with like: a float32 matmul rate (GFLOP/s) and a memory read bandwidth (GB/s).
 *
 * - Matmul peak: onnxruntime-node's CPU MatMul (a tuned multi-threaded sgemm) on n×n·n×n when the
 *   package loads, else the benchmarked backend's own matmul. Best of a few runs after a warm-up.
 * - Read bandwidth: every thread sums its share of a large float32 buffer with WebAssembly SIMD
 *   (4 independent f32x4 accumulators, 64 bytes per step), so the loads, not the adds, limit it;
 *   best of a few passes. Falls back to a single-threaded JS sum where shared wasm memory is
 *   unavailable (that one is compute-bound and understates the bandwidth; its label says so).
 */
import { availableParallelism } from 'node:os';
import { encodeModule, FnBuilder } from '../backends/reference/wasm-encoder.js';
import { WASM_PAGE, WasmThreadPool } from '../backends/reference/wasm-threads.js';
import { encodeModel, ONNX_FLOAT } from '../backends/onnx/onnx-proto.js';
import type { TensorBackend } from '../interfaces/tensor-backend.js';
import { fillUniform } from './paligemma-shapes.js';

export interface ProbeResult {
  value: number;
  /** How it was measured, in words. */
  method: string;
}

const best = (xs: number[]) => Math.min(...xs);

/** GFLOP/s of an n×n·n×n float32 matmul on the best engine found. */
export async function measureMatmulPeak(n: number, backend: TensorBackend, reps = 5): Promise<ProbeResult> {
  const flops = 2 * n * n * n;
  const a = fillUniform(new Float32Array(n * n), 11, 1), b = fillUniform(new Float32Array(n * n), 12, 1);
  const ort = await loadOrtQuietly();
  if (ort) {
    try {
      const model = encodeModel({
        irVersion: 8, opset: 13,
        nodes: [{ opType: 'MatMul', inputs: ['A', 'B'], outputs: ['C'] }],
        initializers: [],
        inputs: [{ name: 'A', elemType: ONNX_FLOAT, dims: [n, n] }, { name: 'B', elemType: ONNX_FLOAT, dims: [n, n] }],
        outputs: [{ name: 'C', elemType: ONNX_FLOAT, dims: [n, n] }],
      });
      const session = await ort.InferenceSession.create(model, { executionProviders: ['cpu'], graphOptimizationLevel: 'all' });
      const feeds = { A: new ort.Tensor('float32', a, [n, n]), B: new ort.Tensor('float32', b, [n, n]) };
      await session.run(feeds);                                                   // warm-up
      const times: number[] = [];
      for (let r = 0; r < reps; r++) {
        const t = performance.now();
        await session.run(feeds);
        times.push(performance.now() - t);
      }
      await session.release();
      return { value: flops / best(times) / 1e6, method: `onnxruntime-node CPU MatMul ${n}³ float32, best of ${reps}` };
    } catch {
      // fall through to the backend's own matmul
    }
  }
  const A = backend.upload(a, [n, n]), B = backend.upload(b, [n, n]);
  const run = async () => {
    const t = performance.now();
    const C = backend.matmul(A, B, { transposeB: true });
    await backend.read(C);
    const ms = performance.now() - t;
    backend.dispose(C);
    return ms;
  };
  await run();
  const times: number[] = [];
  for (let r = 0; r < Math.min(reps, 3); r++) times.push(await run());
  backend.dispose([A, B]);
  return { value: flops / best(times) / 1e6, method: `${backend.engine ?? backend.name} matmul ${n}³ (onnxruntime-node not available), best of ${Math.min(reps, 3)}` };
}

type Ort = typeof import('onnxruntime-node');

async function loadOrtQuietly(): Promise<Ort | undefined> {
  try {
    const m = await import('onnxruntime-node');
    return ((m as { default?: Ort }).default?.InferenceSession ? (m as { default: Ort }).default : m) as Ort;
  } catch {
    return undefined;
  }
}

/** GB/s (10⁹ bytes) of reading `mib` MiB once, all threads together. */
export function measureReadBandwidth(mib: number, reps = 5): ProbeResult {
  const bytes = Math.max(1, Math.floor(mib)) * (1 << 20);
  const threads = Math.min(8, availableParallelism());
  let pool: WasmThreadPool | undefined;
  try {
    const pages = Math.ceil((bytes + 64) / WASM_PAGE);
    pool = new WasmThreadPool(sumModule(), ['sum'], { threads, initialPages: pages, maximumPages: pages });
    new Float32Array(pool.memory.buffer, 64, bytes / 4).fill(1);                // touch every page first
    const share = Math.floor(bytes / threads / 64) * 64;
    const calls = Array.from({ length: threads }, (_, t) => ({
      fn: 'sum', args: [64 + t * share, 64 + (t === threads - 1 ? bytes : (t + 1) * share), t * 4],
    }));
    pool.run(calls);                                                             // warm-up (starts the threads)
    const times: number[] = [];
    for (let r = 0; r < reps; r++) {
      const t = performance.now();
      pool.run(calls);
      times.push(performance.now() - t);
    }
    return { value: bytes / best(times) / 1e6, method: `wasm SIMD sum of ${mib} MiB on ${threads} thread(s), best of ${reps}` };
  } catch {
    const data = new Float32Array(bytes / 4).fill(1);
    const times: number[] = [];
    for (let r = 0; r < reps; r++) {
      const t = performance.now();
      jsSum(data);
      times.push(performance.now() - t);
    }
    return { value: bytes / best(times) / 1e6, method: `JS sum of ${mib} MiB on one thread (compute-bound: a lower bound), best of ${reps}` };
  } finally {
    pool?.close();
  }
}

function jsSum(x: Float32Array): number {
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  let i = 0;
  for (; i + 4 <= x.length; i += 4) { s0 += x[i]; s1 += x[i + 1]; s2 += x[i + 2]; s3 += x[i + 3]; }
  for (; i < x.length; i++) s0 += x[i];
  return s0 + s1 + s2 + s3;
}

/** sum(start, end, out): float32 sum of bytes [start, end) (a multiple of 64 long) stored at out. */
function sumModule(): Uint8Array {
  const f = new FnBuilder([['start', 'i32'], ['end', 'i32'], ['out', 'i32']]);
  for (let i = 0; i < 4; i++) f.local(`s${i}`, 'v128').v128Zero().set(`s${i}`);
  f.forRange('p', () => f.get('start'), () => f.get('end'), 64, () => {
    for (let i = 0; i < 4; i++) f.get(`s${i}`).get('p').simdMem('v128Load', i * 16).simd('f32x4Add').set(`s${i}`);
  });
  // Keep the result observable: out = lane 0 of (s0 + s1 + s2 + s3).
  f.get('out').get('s0').get('s1').simd('f32x4Add').get('s2').simd('f32x4Add').get('s3').simd('f32x4Add');
  f.f32x4ExtractLane(0).mem('f32Store');
  return encodeModule({ memory: { initialPages: 1, maximumPages: 65536, shared: true }, functions: [{ fn: f, export: 'sum' }] });
}
