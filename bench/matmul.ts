/**
 * The reference backend's transposed-B matmul: the JS kernel (the definition) against the wasm
 * SIMD kernel on 1 thread and on all threads, at PaliGemma-3B shapes. Prints GFLOP/s and the
 * ratios, all measured in this run, and checks that the results are bit-identical.
 *
 *   npx tsx bench/matmul.ts            # default shapes
 *   npx tsx bench/matmul.ts 256x1152x4304 1x2048x16384
 *
 * Runs are interleaved (JS, wasm 1 thread, wasm N threads, JS, …) so load from other processes
 * hits every engine alike; each figure is the median of the runs (best in brackets).
 */
import { availableParallelism } from 'node:os';
import { matmulTransposedBJs } from '../src/backends/reference/matmul.js';
import { WasmMatmul } from '../src/backends/reference/wasm-matmul.js';
import { fillUniform } from '../src/bench/paligemma-shapes.js';

const DEFAULT_SHAPES = [
  '256x1152x4304',   // SigLIP MLP fc1 (256 patches)
  '256x4304x1152',   // SigLIP MLP fc2
  '266x2048x16384',  // Gemma MLP gate/up at prefill (266-token prompt)
  '1x2048x16384',    // the same at decode (one row)
];

interface Engine { name: string; run: (a: Float32Array, b: Float32Array, out: Float32Array, m: number, k: number, n: number) => void }

const threads = availableParallelism();
const single = new WasmMatmul({ threads: 1 });
const multi = new WasmMatmul({ threads });
const engines: Engine[] = [
  { name: 'js', run: matmulTransposedBJs },
  { name: 'wasm×1', run: (...x) => single.matmulTransposedB(...x) },
  { name: `wasm×${threads}`, run: (...x) => multi.matmulTransposedB(...x) },
];

const median = (xs: number[]) => [...xs].sort((p, q) => p - q)[xs.length >> 1];

console.log(`reference matmul, out[M,N] = a[M,K]·b[N,K]ᵀ  (node ${process.version}, ${threads} threads available)`);
console.log(`${'M×K×N'.padEnd(16)}${engines.map((e) => `${e.name} GFLOP/s`.padStart(22)).join('')}   ratios to js   bits`);
for (const spec of process.argv.slice(2).length ? process.argv.slice(2) : DEFAULT_SHAPES) {
  const [m, k, n] = spec.split('x').map(Number);
  const a = fillUniform(new Float32Array(m * k), 1, 1), b = fillUniform(new Float32Array(n * k), 2, 1);
  const outs = engines.map(() => new Float32Array(m * n));
  const flops = 2 * m * n * k;
  const reps = Math.max(3, Math.min(15, Math.round(2e10 / flops)));
  const times: number[][] = engines.map(() => []);
  for (let r = 0; r < reps; r++) {
    engines.forEach((e, i) => {
      const t = performance.now();
      e.run(a, b, outs[i], m, k, n);
      times[i].push(performance.now() - t);
    });
  }
  const rate = (ms: number) => flops / ms / 1e6;
  const cells = times.map((ts) => `${rate(median(ts)).toFixed(2)} [${rate(Math.min(...ts)).toFixed(2)}]`.padStart(22));
  const ratios = times.slice(1).map((ts) => `${(median(times[0]) / median(ts)).toFixed(1)}×`).join(' ');
  const same = outs.every((o) => o.every((x, i) => Object.is(x, outs[0][i])));
  console.log(`${spec.padEnd(16)}${cells.join('')}   ${ratios.padEnd(13)}  ${same ? 'identical' : 'DIFFER'}`);
}
single.close();
multi.close();
