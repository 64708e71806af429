/**
 * Past protobuf's 2 GiB: one onnx graph whose int8 codes exceed what an ONNX model can embed
 * (full-size PaliGemma-3B int8: the 18 text layers and the lm_head, ≈ 2.6 GB, in one decode
 * graph). Three chained MatMulNBits of [D, D] int8 weights (D = 28672 by default: 3 × 0.82 GB of
 * codes) run as one session with the default embedding budget (the weights past it go to
 * onnxruntime as in-memory external data), and the result is compared with the same chain run
 * as three one-weight sessions that each embed their weight. Prints the bytes, the times and
 * whether the two outputs are identical.
 *
 *   npx tsx bench/onnx-external-weights.ts [--dim 28672] [--weights 3]
 */
import { parseArgs } from 'node:util';
import { compileGraph, DataLeaf, type GraphNode } from '../src/backends/onnx/onnx-graph.js';
import { matMulNBits, nbitsWeight, MAX_EMBEDDED_BYTES, type NBitsWeight } from '../src/backends/onnx/matmul-nbits.js';
import { ONNX_IR_VERSION, ONNX_OPSET } from '../src/backends/onnx/onnx-backend.js';
import { loadOrt } from '../src/backends/onnx/onnx-runtime.js';

const { values: args } = parseArgs({ options: { dim: { type: 'string', default: '28672' }, weights: { type: 'string', default: '3' } } });
const d = Number(args.dim), count = Number(args.weights);
const ort = await loadOrt();

/** Seeded int8 codes around the middle code and small scales, so the chain stays finite. */
function weight(seed: number): NBitsWeight {
  const kBlocks = d / 32;
  const data = new Uint8Array(d * d);
  let s = seed * 2654435761 >>> 0 || 1;
  const words = new Uint32Array(data.buffer);
  for (let i = 0; i < words.length; i++) { s ^= s << 13; s ^= s >>> 17; s ^= s << 5; words[i] = s >>> 0; }
  const scales = new Float32Array(d * kBlocks).fill(1 / (128 * Math.sqrt(d)));
  return nbitsWeight({ bits: 8, blockSize: 32, n: d, k: d, kBlocks, data, scales });
}

let t = performance.now();
const ws = Array.from({ length: count }, (_, i) => weight(i + 1));
const codeBytes = ws.reduce((a, w) => a + w.q.data.byteLength + w.q.scales.byteLength, 0);
console.log(`${count} int8 weights [${d}, ${d}]: ${(codeBytes / 2 ** 30).toFixed(2)} GiB of codes and scales (embedding budget ${(MAX_EMBEDDED_BYTES / 2 ** 30).toFixed(2)} GiB); made in ${((performance.now() - t) / 1000).toFixed(1)} s`);
const x = new DataLeaf(Float32Array.from({ length: d }, (_, i) => Math.sin(i)), [1, d], 'float32');

async function run(out: GraphNode, input: DataLeaf): Promise<{ y: Float32Array; createMs: number; runMs: number; external: number }> {
  const g = compileGraph([out], ONNX_OPSET, ONNX_IR_VERSION, MAX_EMBEDDED_BYTES);
  const t0 = performance.now();
  const s = await ort.InferenceSession.create(g.model(), { logSeverityLevel: 3, ...(g.externalData.length ? { externalData: g.externalData } : {}) });
  const t1 = performance.now();
  const r = await s.run({ [g.feeds[0].name]: new ort.Tensor('float32', input.data as Float32Array, [...input.shape]) });
  const t2 = performance.now();
  await s.release();
  return { y: r[g.outputNames[0]].data as Float32Array, createMs: t1 - t0, runMs: t2 - t1, external: g.externalData.length };
}

let chain: GraphNode | DataLeaf = x;
for (const w of ws) chain = matMulNBits(chain, w, 4);
const one = await run(chain as GraphNode, x);
console.log(`one session: ${one.external} initializers external, created in ${(one.createMs / 1000).toFixed(1)} s, one run ${one.runMs.toFixed(0)} ms`);
let y = x;
for (const [i, w] of ws.entries()) {
  const r = await run(matMulNBits(y, w, 4), y);
  if (r.external) throw new Error('a single weight should embed');
  y = new DataLeaf(r.y, [1, d], 'float32');
  console.log(`weight ${i}: embedded session, created in ${(r.createMs / 1000).toFixed(1)} s`);
}
const same = one.y.every((v, i) => v === (y.data as Float32Array)[i]);
const finite = one.y.every((v) => Number.isFinite(v));
console.log(`outputs identical: ${same}; finite: ${finite}; first values ${[...one.y.slice(0, 3)].map((v) => v.toFixed(4)).join(', ')}`);
if (!same || !finite) process.exitCode = 1;
