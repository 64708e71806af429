/**
 * `paligemma bench`: PaliGemma-3B or PaliGemma 2 3B shapes at 224, 448 or 896 px and a chosen depth, random weights built in memory,
 * on any registered backend. Times the three phases of a request and sets them against floors
 * computed from this machine's matmul peak and memory bandwidth, measured in the same process.
 *
 * One run (after `warmup` untimed runs with 2 decode steps, which let compiling backends build
 * their graphs):
 *   vision  — pixels → image rows (SigLIP + projector), read back;
 *   prefill — prompt embedding + decoder over the whole prompt → last row's logits;
 *   decode  — `newTokens` greedy steps, each one token → logits; per token.
 * Each reported time is the median over `repeats` runs.
 */
import type { BackendOptions } from '../interfaces/contributions.js';
import type { AttentionKernel } from '../interfaces/attention-kernel.js';
import type { KVCacheStore } from '../interfaces/kv-cache-store.js';
import type { PartRegistry } from '../plugin/part-registry.js';
import type { DType, Tensor, TensorBackend } from '../interfaces/tensor-backend.js';
import { loadCheckpoint } from '../checkpoint/load-checkpoint.js';
import { type BenchWeights, writeBenchCheckpoint } from './bench-checkpoint.js';
import { createRegistry, startBackend } from '../create-pipeline.js';
import type { PaliGemmaConfig } from '../model/config-types.js';
import { PaliGemmaModel } from '../model/paligemma-model.js';
import { highWaterMb, resetHighWater } from './rss-high-water.js';
import { measureMatmulPeak, measureReadBandwidth, type ProbeResult } from './machine-probe.js';
import {
  benchConfig, benchModelName, benchPromptIds, elementsOf, fillUniform, phaseCosts, weightSpecs, type BenchModel, type PhaseCosts,
} from './paligemma-shapes.js';

export interface BenchOptions {
  backend: string;
  /** Passed to the backend's factory (e.g. { device: 'cuda', quantize: 'int8' }). */
  backendOptions?: BackendOptions;
  /** Shorthand for backendOptions.device (wins over it). */
  device?: string;
  plugins?: readonly string[];
  visionLayers: number;
  textLayers: number;
  /** 'paligemma' (default, PaliGemma-3B) or 'paligemma2' (PaliGemma 2 3B: Gemma 2 2B decoder). */
  model?: BenchModel;
  /** Input side in pixels (default 224): 448 → 1024 image tokens, 896 → 4096. */
  imageSize?: number;
  newTokens: number;
  repeats: number;
  warmup: number;
  /** Text tokens of the prompt besides <bos> and "\n" (8 → 266 positions with 256 image tokens). */
  promptTokens?: number;
  /** 1 = real widths; larger divides them (tests). */
  scaleDown?: number;
  /** Side of the square matmul timed for the peak. */
  peakSize?: number;
  /** MiB summed for the read bandwidth. */
  bandwidthMib?: number;
  seed?: number;
  /**
   * Store the random weights as a checkpoint in this dtype and load them through the real
   * loading path (bench-checkpoint.ts). Absent: float32 arrays uploaded directly.
   */
  weights?: BenchWeights;
  /** Progress lines (stderr in the CLI). */
  log?: (line: string) => void;
}

/** The JSON `paligemma bench --json` prints. Times in ms, sizes in MiB (peakRssMb) and bytes. */
export interface BenchResult {
  backend: string;
  visionMs: number;
  prefillMs: number;
  decodeMsPerToken: number;
  /** Image to first token: vision, prompt embedding and prefill, as one span. */
  ttftMs: number;
  /** How the weights were stored: f32, bf16 or f16 from a checkpoint, or 'f32 (memory)' without --weights. */
  weights: string;
  peakRssMb: number;
  weightBytes: number;
  peakGflops: number;
  readGBps: number;
  floors: { visionMs: number; prefillMs: number; decodeMsPerToken: number };
  /** How it was measured; not needed to read the numbers above. */
  detail: {
    engine: string;
    /** Milliseconds to load the checkpoint (0 for in-memory weights), and its weight bytes. */
    loadMs: number;
    fileBytes: number;
    peakMethod: string;
    readMethod: string;
    visionLayers: number;
    textLayers: number;
    /** e.g. "PaliGemma 2 3B-896". */
    model: string;
    imageSize: number;
    numImageTokens: number;
    scaleDown: number;
    promptLength: number;
    newTokens: number;
    repeats: number;
    warmup: number;
    visionGflop: number;
    prefillGflop: number;
    decodeMbPerToken: number;
    params: number;
    runs: RunTimes[];
  };
}

export interface RunTimes {
  visionMs: number;
  prefillMs: number;
  ttftMs: number;
  decodeMsPerToken: number;
  rssMb: number;
  /** Resident MiB when the run began (weights and runtime; rss-high-water.ts). */
  startRssMb: number;
  /** Peak resident MiB during vision, and during prompt embedding + prefill (each phase's own high-water on Linux). */
  visionPeakRssMb: number;
  prefillPeakRssMb: number;
}

/** The attention kernel and KV-cache store a backend runs with by default (its own, else plain / contiguous). */
export function defaultParts(registry: PartRegistry, backend: string): { attention: AttentionKernel; kvCacheStore: KVCacheStore } {
  const contribution = registry.get('backend', backend);
  return {
    attention: registry.get('attention', contribution.defaultAttention ?? 'plain').create(),
    kvCacheStore: registry.get('kvCache', contribution.defaultKvCache ?? 'contiguous').create(),
  };
}

export async function runBench(o: BenchOptions): Promise<BenchResult> {
  const log = o.log ?? (() => {});
  const registry = await createRegistry(o.plugins ?? []);
  const options: BackendOptions = { ...o.backendOptions, ...(o.device ? { device: o.device } : {}) };
  const backend = await startBackend(registry, o.backend, options);
  try {
    const { attention, kvCacheStore } = defaultParts(registry, o.backend);
    const config = benchConfig({ visionLayers: o.visionLayers, textLayers: o.textLayers, model: o.model, imageSize: o.imageSize, scaleDown: o.scaleDown });
    const seed = o.seed ?? 1;

    let weights: Map<string, Tensor>, weightDtype: DType = 'f32', loadMs = 0, fileBytes = 0;
    if (o.weights) {
      log(`writing ${describeDepth(config)} random weights as a ${o.weights} checkpoint…`);
      const ckpt = await writeBenchCheckpoint(config, o.weights, seed);
      try {
        log(`loading it on ${backend.engine ?? backend.name}…`);
        const t0 = performance.now();
        const loaded = await loadCheckpoint(ckpt.dir, backend);
        loadMs = performance.now() - t0;
        fileBytes = ckpt.fileBytes;
        ({ weights, weightDtype } = loaded);
        if (!sameBenchConfig(loaded.config, config)) {
          loaded.dispose();
          throw new Error('bench: the written checkpoint does not read back as the bench config');
        }
      } finally {
        await ckpt.remove();
      }
    } else {
      log(`building ${describeDepth(config)} random weights on ${backend.engine ?? backend.name}…`);
      weights = uploadWeights(backend, config, seed);
    }
    const model = new PaliGemmaModel({ backend, attention, kvCacheStore }, { config, weights, weightDtype });
    const v = config.vision;
    const pixels = { data: fillUniform(new Float32Array(3 * v.imageSize ** 2), seed + 1000, 1), shape: [3, v.imageSize, v.imageSize] as [number, number, number] };
    const ids = benchPromptIds(config, o.promptTokens ?? 8, seed + 2000);

    for (let i = 0; i < o.warmup; i++) {
      log(`warm-up ${i + 1}/${o.warmup}…`);
      await runOnce(model, pixels, ids, Math.min(2, o.newTokens));
    }
    const runs: RunTimes[] = [];
    for (let i = 0; i < o.repeats; i++) {
      log(`run ${i + 1}/${o.repeats}…`);
      runs.push(await runOnce(model, pixels, ids, o.newTokens));
    }
    backend.dispose([...weights.values()]);
    weights.clear();

    log('measuring the machine: matmul peak and read bandwidth…');
    const peak = await measureMatmulPeak(o.peakSize ?? 2048, backend);
    const read = measureReadBandwidth(o.bandwidthMib ?? 1024);
    const costs = phaseCosts(config, ids.length, o.newTokens);
    return assemble(o, backend, config, costs, runs, peak, read, ids.length, { loadMs, fileBytes });
  } finally {
    await backend.close?.();
  }
}

/** The loaded config equals the bench's, but for what a file adds (its dtype, the text model type). */
function sameBenchConfig(loaded: PaliGemmaConfig, want: PaliGemmaConfig): boolean {
  const plain = (c: PaliGemmaConfig) => JSON.stringify({ ...c, torchDtype: undefined, text: { ...c.text, modelType: undefined } });
  return plain(loaded) === plain(want);
}

function describeDepth(c: PaliGemmaConfig): string {
  return `${c.vision.numLayers} vision + ${c.text.numLayers} text layer(s)`;
}

/** Uploads every weight, one at a time so only one host copy is alive at once. */
function uploadWeights(backend: TensorBackend, config: PaliGemmaConfig, seed: number): Map<string, Tensor> {
  const map = new Map<string, Tensor>();
  weightSpecs(config).forEach((w, i) => {
    const data = fillUniform(new Float32Array(elementsOf(w.shape)), seed * 7919 + i, w.scale, w.offset);
    map.set(w.name, backend.upload(data, w.shape));
  });
  return map;
}

async function runOnce(model: PaliGemmaModel, pixels: { data: Float32Array; shape: [number, number, number] }, ids: Int32Array, newTokens: number): Promise<RunTimes> {
  const b = model.backend;
  let rss = rssMb();
  const startRssMb = rss;
  resetHighWater();
  let t = performance.now();
  const start = t;
  const rows = model.imageRows(pixels);
  await b.read(rows);
  const visionMs = performance.now() - t;
  rss = Math.max(rss, rssMb());
  const visionPeakRssMb = highWaterMb();
  resetHighWater();

  t = performance.now();
  const session = await model.begin(rows, ids, { capacity: ids.length + newTokens + 1 });
  let logits = session.logits;
  const prefillMs = performance.now() - t;
  const ttftMs = performance.now() - start;
  b.dispose(rows);
  rss = Math.max(rss, rssMb());
  const prefillPeakRssMb = highWaterMb();

  let decodeMs = 0;
  for (let i = 0; i < newTokens; i++) {
    const token = argmax(logits);
    t = performance.now();
    logits = await session.step(token);
    decodeMs += performance.now() - t;
  }
  session.dispose();
  rss = Math.max(rss, rssMb(), maxRssMb());
  return { visionMs, prefillMs, ttftMs, decodeMsPerToken: newTokens > 0 ? decodeMs / newTokens : 0, rssMb: rss,
    startRssMb, visionPeakRssMb, prefillPeakRssMb };
}

function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

const rssMb = () => process.memoryUsage.rss() / 2 ** 20;
/** The process's peak resident set so far (the OS's high-water mark). */
const maxRssMb = () => process.resourceUsage().maxRSS / 1024;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

function assemble(o: BenchOptions, backend: TensorBackend, config: PaliGemmaConfig, costs: PhaseCosts,
  runs: RunTimes[], peak: ProbeResult, read: ProbeResult, promptLength: number,
  load: { loadMs: number; fileBytes: number }): BenchResult {
  const params = costs.weightBytes / 4;
  return {
    backend: backend.name,
    visionMs: median(runs.map((r) => r.visionMs)),
    prefillMs: median(runs.map((r) => r.prefillMs)),
    decodeMsPerToken: median(runs.map((r) => r.decodeMsPerToken)),
    ttftMs: median(runs.map((r) => r.ttftMs)),
    weights: o.weights ?? 'f32 (memory)',
    peakRssMb: median(runs.map((r) => r.rssMb)),
    weightBytes: costs.weightBytes,
    peakGflops: peak.value,
    readGBps: read.value,
    floors: {
      visionMs: costs.visionFlops / peak.value / 1e6,
      prefillMs: costs.prefillFlops / peak.value / 1e6,
      decodeMsPerToken: costs.decodeBytesPerToken / read.value / 1e6,
    },
    detail: {
      engine: backend.engine ?? backend.name,
      ...load,
      peakMethod: peak.method,
      readMethod: read.method,
      visionLayers: config.vision.numLayers,
      textLayers: config.text.numLayers,
      model: benchModelName(config).name,
      imageSize: config.vision.imageSize,
      numImageTokens: config.numImageTokens,
      scaleDown: o.scaleDown ?? 1,
      promptLength,
      newTokens: o.newTokens,
      repeats: o.repeats,
      warmup: o.warmup,
      visionGflop: costs.visionFlops / 1e9,
      prefillGflop: costs.prefillFlops / 1e9,
      decodeMbPerToken: costs.decodeBytesPerToken / 1e6,
      params,
      runs,
    },
  };
}

/** The human-readable report. */
export function formatBench(r: BenchResult): string {
  const d = r.detail;
  const f = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x >= 1 ? x.toFixed(2) : x.toPrecision(2));
  const row = (name: string, ms: number, floor: number, basis: string) =>
    `  ${name.padEnd(18)}${f(ms).padStart(10)}${f(floor).padStart(10)}${`${(ms / floor).toFixed(1)}×`.padStart(9)}   ${basis}`;
  const scale = d.scaleDown === 1 ? `${d.model} shapes` : `${d.model} shapes ÷ ${d.scaleDown} (test size)`;
  const full = d.model.startsWith('PaliGemma 2') ? '27 + 26' : '27 + 18';
  const phasePeaks = d.runs.length ? d.runs[0] : undefined;
  return [
    `paligemma bench — backend ${r.backend} (${d.engine})`,
    `  model: ${scale}, ${d.numImageTokens} image tokens, ${d.visionLayers} vision + ${d.textLayers} text layers (of ${full}), ` +
      `${(d.params / 1e6).toFixed(0)}M params, ${(r.weightBytes / 1e9).toFixed(2)} GB float32 weights`,
    `  weights: ${r.weights}${d.fileBytes ? `, ${(d.fileBytes / 1e9).toFixed(2)} GB checkpoint loaded in ${f(d.loadMs)} ms` : ''}`,
    `  request: ${d.promptLength}-token prompt, ${d.newTokens} greedy tokens; median of ${d.repeats} run(s) after ${d.warmup} warm-up`,
    '',
    `  ${'phase'.padEnd(18)}${'measured'.padStart(10)}${'floor'.padStart(10)}${'×floor'.padStart(9)}   floor =`,
    row('vision (ms)', r.visionMs, r.floors.visionMs, `${f(d.visionGflop)} GFLOP ÷ ${f(r.peakGflops)} GFLOP/s`),
    row('prefill (ms)', r.prefillMs, r.floors.prefillMs, `${f(d.prefillGflop)} GFLOP ÷ ${f(r.peakGflops)} GFLOP/s`),
    row('decode (ms/token)', r.decodeMsPerToken, r.floors.decodeMsPerToken, `${f(d.decodeMbPerToken)} MB read per step ÷ ${f(r.readGBps)} GB/s`),
    `  ${'first token (ms)'.padEnd(18)}${f(r.ttftMs).padStart(10)}   image to first token`,
    `  ${'peak RSS (MiB)'.padEnd(18)}${f(r.peakRssMb).padStart(10)}` +
      (phasePeaks ? `   first run: ${f(phasePeaks.startRssMb)} at start, peak in vision ${f(phasePeaks.visionPeakRssMb)}, in prefill ${f(phasePeaks.prefillPeakRssMb)}` : ''),
    '',
    `  machine, measured in this run:`,
    `    matmul peak     ${f(r.peakGflops)} GFLOP/s  (${d.peakMethod})`,
    `    read bandwidth  ${f(r.readGBps)} GB/s  (${d.readMethod})`,
    '',
  ].join('\n');
}
