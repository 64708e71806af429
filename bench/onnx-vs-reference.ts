/**
 * ONNX Runtime backend vs the reference backend on the same random-weight PaliGemma models:
 * the tiny MQA test checkpoint (written to a temp folder and loaded through createPipeline) and
 * a larger model built in memory. Vision tower, prefill and per-token decode, with the ratios
 * measured in the same run. Run: `npx tsx bench/onnx-vs-reference.ts` (`--quick`: tiny only).
 *
 * Timings (median of the timed repetitions, after one untimed warm-up run on each backend):
 * - vision:  pixels → vision tower output read back;
 * - prefill: image rows + prompt embedding materialised first, then prefill → last logits;
 * - decode:  one greedy step → logits, per token.
 * `onnx build` is the time spent creating ONNX sessions during the warm-up (once per shape).
 * The larger model also runs with `quantize: 'int8'` (weight-only int8, DynamicQuantizeMatMul).
 */
import { AttendKernel } from '../src/attention/plain-attention-kernel.js';
import { OnnxBackend } from '../src/backends/onnx/onnx-backend.js';
import { onnxBackendPlugin } from '../src/backends/onnx/onnx-backend-module.js';
import { BUILTIN_PLUGINS } from '../src/builtin-plugins.js';
import { createPipeline } from '../src/create-pipeline.js';
import type { PixelValues } from '../src/interfaces/image-processor.js';
import { ReferenceAttentionKernel } from '../src/backends/reference/reference-attention-kernel.js';
import { ReferenceBackend } from '../src/backends/reference/reference-backend.js';
import type { Tensor, TensorBackend } from '../src/interfaces/tensor-backend.js';
import { ContiguousKvCacheStore } from '../src/kv-cache/contiguous-kv-cache.js';
import type { PaliGemmaConfig } from '../src/model/config-types.js';
import { PaliGemmaModel } from '../src/model/paligemma-model.js';
import { promptIds } from '../src/generation/prompt-format.js';
import { modelConfig, randomWeights, type ModelShape, type RandomTensor } from '../src/tiny-models/random-weights.js';
import { buildTinyCheckpoint, makeTempDir, makeTestImage, mqaSpec, mulberry32 } from '../src/tiny-models/tiny-checkpoint.js';

interface ModelSpec extends ModelShape {
  label: string;
  promptText: number;
  decodeSteps: number;
  reps: { reference: number; onnx: number };
}

const TINY = { label: 'tiny MQA test checkpoint (mqaSpec, loaded from safetensors)', decodeSteps: 16, reps: { reference: 5, onnx: 5 } };

const LARGER: ModelSpec = {
  label: 'larger (vision 512×4 @ 64 patches, text 1024×4 MQA hd 128, inter 4096, vocab 16384)',
  vision: { hidden: 512, inter: 2048, layers: 4, heads: 8, patch: 16, image: 128 },
  text: { hidden: 1024, inter: 4096, layers: 4, heads: 8, kvHeads: 1, headDim: 128, vocab: 16384 },
  promptText: 8, decodeSteps: 8, reps: { reference: 2, onnx: 3 },
};

// ── random model in memory ──────────────────────────────────────────────────
const rng = mulberry32;

function randn(n: number, seed: number, scale: number): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (r() * 2 - 1) * scale;
  return out;
}

type Weights = Map<string, RandomTensor>;

function paramCount(ws: Weights): number {
  let n = 0;
  for (const w of ws.values()) n += w.data.length;
  return n;
}

// ── timing ──────────────────────────────────────────────────────────────────
interface Timings { vision: number; prefill: number; decode: number; build?: number; tokens: number[] }

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

interface Workload { pixels: PixelValues; ids: Int32Array; decodeSteps: number }

async function runOnce(m: PaliGemmaModel, w: Workload): Promise<Timings> {
  const b = m.backend;
  let t = performance.now();
  const features = m.visionFeatures(w.pixels);
  await b.read(features);
  b.dispose(features);
  const vision = performance.now() - t;

  const rows = m.imageRows(w.pixels);
  await b.read(rows);                                          // materialise: prefill timing excludes vision
  t = performance.now();
  const s = await m.begin(rows, w.ids, { capacity: w.ids.length + w.decodeSteps });
  let logits = s.logits;
  const prefill = performance.now() - t;
  b.dispose(rows);

  const tokens = [argmax(logits)];
  const steps: number[] = [];
  for (let i = 1; i < w.decodeSteps; i++) {
    t = performance.now();
    logits = await s.step(tokens[tokens.length - 1]);
    steps.push(performance.now() - t);
    tokens.push(argmax(logits));
  }
  s.dispose();
  return { vision, prefill, decode: median(steps), tokens };
}

/** One warm-up run (JIT for the reference, session builds for onnx), then the median of `reps` timed runs. */
async function measure(m: PaliGemmaModel, w: Workload, reps: number): Promise<Timings> {
  const b = m.backend;
  let build: number | undefined;
  if (b instanceof OnnxBackend) b.stats.compileMs = 0;
  await runOnce(m, w);
  if (b instanceof OnnxBackend) build = b.stats.compileMs;
  const runs: Timings[] = [];
  for (let i = 0; i < reps; i++) runs.push(await runOnce(m, w));
  return {
    vision: median(runs.map((r) => r.vision)), prefill: median(runs.map((r) => r.prefill)),
    decode: median(runs.map((r) => r.decode)), build, tokens: runs[0].tokens,
  };
}

function inMemoryModel(b: TensorBackend, spec: ModelSpec, weights: Weights): PaliGemmaModel {
  const map = new Map<string, Tensor>();
  for (const [name, w] of weights) map.set(name, b.upload(w.data, w.shape));
  const attention = b instanceof OnnxBackend ? new AttendKernel('onnx') : new ReferenceAttentionKernel();
  return new PaliGemmaModel({ backend: b, attention, kvCacheStore: new ContiguousKvCacheStore() },
    { config: modelConfig(spec), weights: map, weightDtype: 'f32' });
}

const fmt = (ms: number) => (ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(2)).padStart(8);

function printTable(label: string, detail: string, ref: Timings, got: Timings, sessions: number, int8?: Timings): void {
  console.log(`\n${label}\n  ${detail}`);
  console.log(`  ${'phase'.padEnd(18)}${'reference'.padStart(10)}${'onnx'.padStart(10)}${int8 ? 'onnx int8'.padStart(10) : ''}   ratio (reference / onnx)${int8 ? ', (onnx / onnx int8)' : ''}`);
  for (const [name, k] of [['vision (ms)', 'vision'], ['prefill (ms)', 'prefill'], ['decode (ms/token)', 'decode']] as const) {
    const r = ref[k], o = got[k];
    const q = int8 ? `  ${fmt(int8[k])}` : '';
    console.log(`  ${name.padEnd(18)}${fmt(r)}  ${fmt(o)}${q}   ${(r / o).toFixed(1)}×${int8 ? `, ${(o / int8[k]).toFixed(2)}×` : ''}`);
  }
  if (int8) {
    const agree = int8.tokens.findIndex((t, i) => t !== ref.tokens[i]);
    console.log(`  onnx int8 (weight-only, per-channel): greedy tokens agree with reference for ${agree < 0 ? int8.tokens.length : agree}/${int8.tokens.length} steps`);
  }
  const same = ref.tokens.join(',') === got.tokens.join(',');
  console.log(`  onnx sessions built: ${sessions} (${(got.build ?? 0).toFixed(0)} ms, in the warm-up); greedy tokens ${same ? 'identical' : 'DIFFER'}`);
}

async function tinyCheckpoint(): Promise<void> {
  const dir = await makeTempDir('pg-bench-onnx-');
  await buildTinyCheckpoint(dir, { ...mqaSpec(), dtype: 'F32' });
  const plugins = BUILTIN_PLUGINS.some((p) => p.name === onnxBackendPlugin.name) ? [] : [onnxBackendPlugin];
  const ref = await createPipeline({ model: dir });
  const mine = await createPipeline({ model: dir, backend: 'onnx', plugins });
  const { data, width, height } = makeTestImage(40, 40, 3);
  const pixels = await ref.imageProcessor.process({ data, width, height, channels: 3 });
  const ids = Int32Array.from(promptIds(ref.tokenizer, 'caption en', ref.model.config.numImageTokens));
  const w = { pixels, ids, decodeSteps: TINY.decodeSteps };
  const onnx = mine.backend as OnnxBackend;
  const r = await measure(ref.model, w, TINY.reps.reference);
  const o = await measure(mine.model, w, TINY.reps.onnx);
  const t = mine.model.config.text;
  printTable(TINY.label, `text ${t.hiddenSize}×${t.numLayers}, prompt ${ids.length} tokens, ${TINY.decodeSteps} generated`,
    r, o, onnx.stats.sessionsCreated);
  await ref.close();
  await mine.close();
}

async function largerModel(onnx: OnnxBackend): Promise<void> {
  const spec = LARGER;
  const cfg = modelConfig(spec);
  const weights = randomWeights(cfg, 1);
  const w = {
    pixels: { data: randn(3 * spec.vision.image ** 2, 99, 1), shape: [3, spec.vision.image, spec.vision.image] as [number, number, number] },
    ids: Int32Array.from([...new Array(cfg.numImageTokens).fill(cfg.imageTokenIndex), 2, ...Array.from({ length: spec.promptText - 1 }, (_, i) => 3 + i)]),
    decodeSteps: spec.decodeSteps,
  };
  const ref = new ReferenceBackend();
  const r = await measure(inMemoryModel(ref, spec, weights), w, spec.reps.reference);
  const before = onnx.stats.sessionsCreated;
  const m = inMemoryModel(onnx, spec, weights);
  const o = await measure(m, w, spec.reps.onnx);
  const built = onnx.stats.sessionsCreated - before;
  const quant = new OnnxBackend({ device: 'cpu', quantize: 'int8' });
  await quant.init();
  const q = await measure(inMemoryModel(quant, spec, weights), w, spec.reps.onnx);
  await quant.close();
  printTable(spec.label, `${(paramCount(weights) / 1e6).toFixed(1)}M params, prompt ${w.ids.length} tokens, ${spec.decodeSteps} generated`,
    r, o, built, q);
}

async function main(): Promise<void> {
  const t0 = performance.now();
  const onnx = new OnnxBackend({ device: 'cpu' });
  await onnx.init();
  console.log(`onnx-vs-reference  (node ${process.version}, ${onnx.engine}; medians after a warm-up run)`);
  await tinyCheckpoint();
  if (!process.argv.includes('--quick')) await largerModel(onnx);
  await onnx.close();
  console.log(`\n(total ${((performance.now() - t0) / 1000).toFixed(0)} s)`);
}

await main();
