/**
 * What bounds the onnx backend's decode: onnxruntime-node's one-row Gemm (the node the backend
 * records for x[1, K] · W[N, K]ᵀ) at the matrix shapes of a PaliGemma-3B decode step, as GB/s of
 * weight read, against the bench's read-bandwidth probe (a WebAssembly SIMD sum on every thread)
 * measured in the same round. `paligemma bench`'s decode floor divides by that probe, so the
 * ratio here is the best decode can do against its floor with onnxruntime's CPU Gemm.
 *
 *   npx tsx bench/decode-gemv.ts                  # default shapes, 3 rounds
 *   npx tsx bench/decode-gemv.ts --rounds 5 2048x16384
 *   (--min-mib N: weight bytes per shape, default 512; --probe-mib N: the probe's buffer, 1024)
 *
 * A shape is NxK (W is [N, K], as stored). Each is timed on enough distinct copies of W to pass
 * 512 MiB, so every run reads from memory rather than cache, as a decode step does (it reads each
 * weight once). Rounds interleave every shape and the probe, so load from other processes hits
 * them alike; a figure is the median of 5 runs within its round.
 */
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import * as ortModule from 'onnxruntime-node';
import { encodeModel, ONNX_FLOAT, type ProtoNode, type ProtoValueInfo } from '../src/backends/onnx/onnx-proto.js';
import { measureReadBandwidth } from '../src/bench/machine-probe.js';
import { parseNumber, reportAndExit } from '../src/cli/cli-errors.js';
import { PaliGemmaError } from '../src/interfaces/errors.js';
import { fillUniform } from '../src/bench/paligemma-shapes.js';

const ort = ((ortModule as { default?: typeof ortModule }).default ?? ortModule) as typeof ortModule;

const DEFAULT_SHAPES = [
  '2048x2048',     // q and o projections
  '256x2048',      // k and v projections (one KV head)
  '16384x2048',    // MLP gate and up
  '2048x16384',    // MLP down
  '257216x2048',   // lm_head (the tied embedding table)
];

const { values, positionals } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    'min-mib': { type: 'string', default: '512' },     // weight bytes per shape (copies of W)
    'probe-mib': { type: 'string', default: '1024' },  // the probe's buffer, as in `paligemma bench`
  },
  allowPositionals: true,
});
const positiveInt = (flag: string, v: string | undefined): number =>
  parseNumber(flag, v, (x) => Number.isInteger(x) && x > 0, 'a positive integer')!;

/** An NxK spec as [N, K] (W is [N, K], as stored). */
function parseShape(spec: string): [number, number] {
  const [n, k] = spec.split('x').map(Number);
  if (!(Number.isInteger(n) && Number.isInteger(k) && n > 0 && k > 0)) {
    throw new PaliGemmaError(`shape '${spec}' is not NxK (two positive integers)`);
  }
  return [n, k];
}

function parseOptions() {
  try {
    return {
      rounds: positiveInt('--rounds', values.rounds),
      minBytes: positiveInt('--min-mib', values['min-mib']) * 2 ** 20,
      probeMib: positiveInt('--probe-mib', values['probe-mib']),
      shapes: (positionals.length ? positionals : DEFAULT_SHAPES).map(parseShape),
    };
  } catch (e) {
    return reportAndExit(e, false);
  }
}
const { rounds, minBytes, probeMib, shapes } = parseOptions();

interface Case { spec: string; bytes: number; run: () => Promise<unknown> }

/** One session: `copies` independent Gemm nodes, y_c [1, N] = x [1, K] · W_c [N, K]ᵀ. */
async function gemmCase(n: number, k: number): Promise<Case> {
  const copies = Math.max(1, Math.ceil(minBytes / (n * k * 4)));
  const nodes: ProtoNode[] = [];
  const inputs: ProtoValueInfo[] = [{ name: 'x', elemType: ONNX_FLOAT, dims: [1, k] }];
  const outputs: ProtoValueInfo[] = [];
  const feeds: Record<string, ortModule.Tensor> = { x: new ort.Tensor('float32', fillUniform(new Float32Array(k), 1, 1), [1, k]) };
  for (let c = 0; c < copies; c++) {
    inputs.push({ name: `w${c}`, elemType: ONNX_FLOAT, dims: [n, k] });
    outputs.push({ name: `y${c}`, elemType: ONNX_FLOAT, dims: [1, n] });
    nodes.push({ opType: 'Gemm', inputs: ['x', `w${c}`], outputs: [`y${c}`], attributes: { transB: { kind: 'int', value: 1 } } });
    feeds[`w${c}`] = new ort.Tensor('float32', fillUniform(new Float32Array(n * k), 10 + c, 1), [n, k]);
  }
  const model = encodeModel({ irVersion: 8, opset: 13, nodes, initializers: [], inputs, outputs });
  const session = await ort.InferenceSession.create(model, { executionProviders: ['cpu'], logSeverityLevel: 3 });
  await session.run(feeds);                                                       // warm-up
  return { spec: `${n}x${k}`, bytes: copies * n * k * 4, run: () => session.run(feeds) };
}

const median = (xs: number[]) => [...xs].sort((p, q) => p - q)[xs.length >> 1];

const cases: Case[] = [];
for (const [n, k] of shapes) cases.push(await gemmCase(n, k));
console.log(`onnxruntime-node ${ort.env.versions.node}: one-row Gemm (transB) read rate against the read-bandwidth probe, ${availableParallelism()} threads available`);
console.log(`${'round'.padEnd(7)}${cases.map((c) => `${c.spec} GB/s`.padStart(20)).join('')}${'probe GB/s'.padStart(14)}   Gemm ÷ probe`);
for (let r = 0; r < rounds; r++) {
  const rates: number[] = [];
  for (const c of cases) {
    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t = performance.now();
      await c.run();
      times.push(performance.now() - t);
    }
    rates.push(c.bytes / median(times) / 1e6);
  }
  const probe = measureReadBandwidth(probeMib).value;
  const ratios = rates.map((x) => (x / probe).toFixed(2)).join(' ');
  console.log(`${String(r + 1).padEnd(7)}${rates.map((x) => x.toFixed(1).padStart(20)).join('')}${probe.toFixed(1).padStart(14)}   ${ratios}`);
}
