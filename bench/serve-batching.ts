/**
 * Continuous batching at PaliGemma-3B-224 shapes (--scale-down N narrows them, for a quick check) (default 2 vision + 2 text layers, seeded
 * random weights in memory, onnx): S requests run one at a time (the 1-stream baseline, and each
 * stream's reference tokens), then the same S requests submitted together (batch S). Prints
 * aggregate tokens/s both ways, decode-only and end to end, time to first token per request,
 * and whether every stream's greedy tokens (and, with --logprobs N, their log-probabilities)
 * equal its run alone. Decode throughput is given by wall time and by this process's CPU time
 * (user + system, onnxruntime's threads included): on a shared machine the wall-time ratio
 * swings with other load, the CPU-time one much less.
 *
 *   npx tsx bench/serve-batching.ts [--backend onnx] [--streams 8] [--new-tokens 16] [--logprobs 0] [--text-layers 2] [--vision-layers 2]
 */
import 'reflect-metadata';
import { parseArgs } from 'node:util';
import { createRegistry, startBackend } from '../src/create-pipeline.js';
import { defaultParts } from '../src/bench/run-bench.js';
import { benchConfig, benchPromptIds, elementsOf, fillUniform, weightSpecs } from '../src/bench/paligemma-shapes.js';
import type { Tensor } from '../src/interfaces/tensor-backend.js';
import { PaliGemmaModel } from '../src/model/paligemma-model.js';
import { greedy } from '../src/samplers/greedy-sampler.js';
import { seededRng } from '../src/samplers/rng.js';
import { BatchScheduler, type SampledToken } from '../src/serving/batch-scheduler.js';
import { VisionCache } from '../src/serving/vision-cache.js';

const { values: a } = parseArgs({
  options: {
    backend: { type: 'string', default: 'onnx' },
    streams: { type: 'string', default: '8' },
    'new-tokens': { type: 'string', default: '16' },
    'text-layers': { type: 'string', default: '2' },
    'vision-layers': { type: 'string', default: '2' },
    'scale-down': { type: 'string', default: '1' },
    logprobs: { type: 'string', default: '0' },
  },
});
const S = Number(a.streams), NEW = Number(a['new-tokens']), LOGPROBS = Number(a.logprobs);
const cpuMs = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
const log = (s: string) => process.stderr.write(`${s}\n`);

const registry = await createRegistry();
const backend = await startBackend(registry, a.backend!);
const { attention, kvCacheStore } = defaultParts(registry, a.backend!);
const config = benchConfig({ visionLayers: Number(a['vision-layers']), textLayers: Number(a['text-layers']), scaleDown: Number(a['scale-down']) });
log(`uploading ${config.vision.numLayers}+${config.text.numLayers}-layer PaliGemma-3B weights to ${backend.engine ?? backend.name}…`);
const weights = new Map<string, Tensor>();
weightSpecs(config).forEach((w, i) => {
  weights.set(w.name, backend.upload(fillUniform(new Float32Array(elementsOf(w.shape)), 7919 + i, w.scale, w.offset), w.shape));
});
const model = new PaliGemmaModel({ backend, attention, kvCacheStore }, { config, weights, weightDtype: 'f32' });
const v = config.vision;
// Every request has its own image and prompt: nothing is shared, the vision cache never hits.
const requests = Array.from({ length: S }, (_, i) => ({
  key: `image-${i}`,
  pixels: { data: fillUniform(new Float32Array(3 * v.imageSize ** 2), 1000 + i, 1), shape: [3, v.imageSize, v.imageSize] as [number, number, number] },
  ids: benchPromptIds(config, 8, 2000 + i),
}));

interface Run { tokens: number[]; logprobs: number[]; times: number[]; cpus: number[]; submitted: number; first: number; last: number }

/** Submits the given requests at once to a scheduler with room for `maxBatch`; times each. */
async function runAll(maxBatch: number, which: number[], newTokens = NEW): Promise<{ runs: Run[]; wallMs: number; steps: number; stepRows: number }> {
  const vision = new VisionCache(backend, 1);
  const sched = new BatchScheduler(model, vision, { maxBatch, maxQueue: S, eosId: -1 });   // fixed length: no early stop
  const t0 = performance.now();
  const runs: Run[] = which.map(() => ({ tokens: [], logprobs: [], times: [], cpus: [], submitted: t0, first: 0, last: 0 }));
  await Promise.all(which.map((r, j) => sched.submit({
    imageKey: requests[r].key, pixels: () => requests[r].pixels, ids: requests[r].ids, maxNewTokens: newTokens,
    choices: [{ sampler: greedy(), rng: seededRng(0) }], logprobs: LOGPROBS,
    onToken: (_c: number, t: SampledToken) => {
      const now = performance.now();
      if (runs[j].tokens.length === 0) runs[j].first = now;
      runs[j].last = now;
      runs[j].times.push(now);
      runs[j].cpus.push(cpuMs());
      runs[j].tokens.push(t.token);
      if (t.logprob !== undefined) runs[j].logprobs.push(t.logprob);
    },
    onFinish: () => {},
  })));
  const wallMs = performance.now() - t0;
  vision.clear();
  return { runs, wallMs, steps: sched.stats.steps, stepRows: sched.stats.stepRows };
}

log('warm-up (batch 1 and batch S, 2 tokens)…');
await runAll(1, [0], 2);
await runAll(S, requests.map((_, i) => i), 2);

log(`${S} requests one at a time, ${NEW} tokens each…`);
const alone: Run[] = [];
let aloneWall = 0, aloneDecodeMs = 0, aloneDecodeCpu = 0;
for (let i = 0; i < S; i++) {
  const r = await runAll(1, [i]);
  alone.push(r.runs[0]);
  aloneWall += r.wallMs;
  aloneDecodeMs += r.runs[0].last - r.runs[0].first;
  aloneDecodeCpu += r.runs[0].cpus[NEW - 1] - r.runs[0].cpus[0];
  log(`  request ${i}: first token ${(r.runs[0].first - r.runs[0].submitted).toFixed(0)} ms, ${((r.runs[0].last - r.runs[0].first) / (NEW - 1)).toFixed(0)} ms/token`);
}

log(`${S} requests together (max batch ${S})…`);
const together = await runAll(S, requests.map((_, i) => i));
const same = together.runs.map((r, i) => r.tokens.length === alone[i].tokens.length && r.tokens.every((t, k) => t === alone[i].tokens[k]));
const lpDiff = Math.max(0, ...together.runs.flatMap((r, i) => r.logprobs.map((l, k) => Math.abs(l - alone[i].logprobs[k]))));

// Decode throughput: alone, a stream's tokens after its first over the time they took; together,
// the tokens that came after the last request got its first one (all S in the batch) over that window.
const oneDecodeTps = (S * (NEW - 1)) / (aloneDecodeMs / 1000);
const allIn = Math.max(...together.runs.map((r) => r.first));
const end = Math.max(...together.runs.map((r) => r.last));
const inWindow = together.runs.reduce((n, r) => n + r.times.filter((t) => t > allIn).length, 0);
const manyDecodeTps = inWindow / ((end - allIn) / 1000);
// The same window in CPU time: from the token that completed the batch to the last one.
const allInRun = together.runs.find((r) => r.first === allIn)!;
const lastRun = together.runs.find((r) => r.last === end)!;
const manyDecodeCpu = lastRun.cpus[lastRun.cpus.length - 1] - allInRun.cpus[0];
const oneCpuTps = (S * (NEW - 1)) / (aloneDecodeCpu / 1000), manyCpuTps = inWindow / (manyDecodeCpu / 1000);
const oneE2eTps = (S * NEW) / (aloneWall / 1000);
const manyE2eTps = (S * NEW) / (together.wallMs / 1000);

const ms = (x: number) => `${x.toFixed(0)} ms`;
console.log(`serve batching — ${backend.engine ?? backend.name}, PaliGemma-3B-224 shapes ${config.vision.numLayers}+${config.text.numLayers} layers, ${S} streams × ${NEW} greedy tokens, prompt ${requests[0].ids.length} positions`);
console.log(`  1 stream at a time : decode ${oneDecodeTps.toFixed(2)} tok/s (${ms(aloneDecodeMs / (S * (NEW - 1)))}/token), end to end ${oneE2eTps.toFixed(2)} tok/s`);
console.log(`  ${S} streams at once : decode ${manyDecodeTps.toFixed(2)} tok/s (${ms((end - allIn) / (inWindow / S))}/step of ${S} rows; ${together.steps} steps, mean batch ${(together.stepRows / together.steps).toFixed(2)}), end to end ${manyE2eTps.toFixed(2)} tok/s`);
console.log(`  ratio ${S}:1        : decode ${(manyDecodeTps / oneDecodeTps).toFixed(2)}×, end to end ${(manyE2eTps / oneE2eTps).toFixed(2)}× (prefill of every prompt included)`);
console.log(`  by CPU time        : decode ${oneCpuTps.toFixed(2)} → ${manyCpuTps.toFixed(2)} tok/CPU-s, ratio ${(manyCpuTps / oneCpuTps).toFixed(2)}×`);
console.log(`  TTFT alone         : ${alone.map((r) => ms(r.first - r.submitted)).join(', ')}`);
console.log(`  TTFT together      : ${together.runs.map((r) => ms(r.first - r.submitted)).join(', ')}`);
console.log(`  tokens identical to alone: ${same.filter(Boolean).length}/${S}${LOGPROBS > 0 ? `; max |Δ logprob| ${lpDiff.toExponential(2)}` : ''}`);
backend.dispose([...weights.values()]);
await backend.close?.();
if (!same.every(Boolean)) process.exit(1);
