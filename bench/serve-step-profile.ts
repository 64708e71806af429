/**
 * Cost of one batched decode step by batch size, at PaliGemma-3B-224 shapes (2+2 layers, seeded
 * random weights, onnx by default): one prompt is prefilled, forked into B sequences, and
 * stepped together; each step's wall time is split into the backend's own run time and the rest
 * (graph building, reading logits, JS). Steps of B = 1 and B = max alternate, so the machine's
 * load hits both alike; the ratio B·t(1)/t(B) is the throughput gain of batching that step.
 *
 *   npx tsx bench/serve-step-profile.ts [--backend onnx] [--batch 8] [--steps 6] [--scale-down 1]
 */
import 'reflect-metadata';
import { parseArgs } from 'node:util';
import { createRegistry, startBackend } from '../src/create-pipeline.js';
import { defaultParts } from '../src/bench/run-bench.js';
import { benchConfig, benchPromptIds, elementsOf, fillUniform, weightSpecs } from '../src/bench/paligemma-shapes.js';
import type { Tensor } from '../src/interfaces/tensor-backend.js';
import { PaliGemmaModel } from '../src/model/paligemma-model.js';
import type { Sequence } from '../src/model/model-sequence.js';

const { values: a } = parseArgs({
  options: {
    backend: { type: 'string', default: 'onnx' },
    batch: { type: 'string', default: '8' },
    steps: { type: 'string', default: '6' },
    'scale-down': { type: 'string', default: '1' },
  },
});
const B = Number(a.batch), STEPS = Number(a.steps);
const log = (s: string) => process.stderr.write(`${s}\n`);

const registry = await createRegistry();
const backend = await startBackend(registry, a.backend!);
const { attention, kvCacheStore } = defaultParts(registry, a.backend!);
const config = benchConfig({ visionLayers: 2, textLayers: 2, scaleDown: Number(a['scale-down']) });
log('uploading weights…');
const weights = new Map<string, Tensor>();
weightSpecs(config).forEach((w, i) => {
  weights.set(w.name, backend.upload(fillUniform(new Float32Array(elementsOf(w.shape)), 7919 + i, w.scale, w.offset), w.shape));
});
const model = new PaliGemmaModel({ backend, attention, kvCacheStore }, { config, weights, weightDtype: 'f32' });
const v = config.vision;
const pixels = { data: fillUniform(new Float32Array(3 * v.imageSize ** 2), 1000, 1), shape: [3, v.imageSize, v.imageSize] as [number, number, number] };
const ids = benchPromptIds(config, 8, 2000);
log('prefill…');
const root = await model.begin(pixels, ids, { capacity: ids.length + 2 * STEPS + 4 });
const one = root.fork();
const many: Sequence[] = Array.from({ length: B }, () => root.fork());
const stats = (backend as unknown as { stats?: { runMs: number; runs: number } }).stats;

async function timeStep(group: Sequence[]): Promise<{ wall: number; run: number }> {
  const run0 = stats?.runMs ?? 0;
  const t0 = performance.now();
  await model.stepBatch(group, Int32Array.from(group, (_, i) => 100 + i));
  return { wall: performance.now() - t0, run: (stats?.runMs ?? 0) - run0 };
}

log('warm-up…');
await timeStep([one]);
await timeStep(many);
const t1: { wall: number; run: number }[] = [], tb: typeof t1 = [];
for (let s = 0; s < STEPS - 1; s++) {
  t1.push(await timeStep([one]));
  tb.push(await timeStep(many));
}
const med = (xs: number[]) => xs.slice().sort((x, y) => x - y)[xs.length >> 1];
const w1 = med(t1.map((t) => t.wall)), wb = med(tb.map((t) => t.wall));
const r1 = med(t1.map((t) => t.run)), rb = med(tb.map((t) => t.run));
console.log(`decode step — ${backend.engine ?? backend.name}, PaliGemma-3B-224 shapes 2+2 layers, median of ${t1.length} alternating steps`);
console.log(`  batch 1 : ${w1.toFixed(0)} ms (backend run ${r1.toFixed(0)} ms, rest ${(w1 - r1).toFixed(0)} ms)`);
console.log(`  batch ${B} : ${wb.toFixed(0)} ms (backend run ${rb.toFixed(0)} ms, rest ${(wb - rb).toFixed(0)} ms)`);
console.log(`  step cost ratio t(${B})/t(1) ${(wb / w1).toFixed(2)}; tokens/s gain ${(B * w1 / wb).toFixed(2)}×`);
for (const s of [root, one, ...many]) s.dispose();
backend.dispose([...weights.values()]);
await backend.close?.();
