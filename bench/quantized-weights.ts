/**
 * float32 against 16-bit and quantized weights on the onnx backend, in one session, at
 * PaliGemma-3B-224 shapes (2 + 2 layers by default), every figure a ratio to float32 measured
 * in the same run.
 *
 *   npx tsx bench/quantized-weights.ts [--configs f32,bf16,int8,int4] [--rounds N] [--new-tokens N]
 *                                      [--rss] [--vision-layers N] [--text-layers N]
 *
 * Configurations (each loaded from a checkpoint written like `paligemma bench --weights`):
 *   f32   float32 checkpoint                       (the baseline)
 *   bf16  BF16 checkpoint, the 16-bit path (no quantization asked)
 *   f16   F16 checkpoint, the 16-bit path
 *   int8  BF16 checkpoint, quantize=int8 (MatMulNBits, 8 bits, blocks of 32, accuracy_level 4)
 *   int4  BF16 checkpoint, quantize=int4
 *
 * Timing: all configurations are loaded into one process, each on its own onnx backend, and
 * run interleaved — each round runs image → first token on every configuration in turn, then
 * the decode steps one step per configuration at a time — so load from other processes on a
 * shared machine hits them alike. Reported: medians over rounds of time to first token and of
 * ms per decoded token, and their ratios to f32.
 *
 * Memory (`--rss`): peak RSS needs one process per configuration, so each is also run as a
 * `paligemma bench --backend onnx --json` child (1 run, 2 tokens) and its peak resident set is
 * set against the checkpoint's weight bytes.
 */
import { AttendKernel } from '../src/attention/plain-attention-kernel.js';
import 'reflect-metadata';
import { spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { OnnxBackend, type OnnxBackendOptions } from '../src/backends/onnx/onnx-backend.js';
import { type BenchWeights, writeBenchCheckpoint } from '../src/bench/bench-checkpoint.js';
import { benchConfig, benchPromptIds, fillUniform } from '../src/bench/paligemma-shapes.js';
import { ContiguousKvCacheStore } from '../src/kv-cache/contiguous-kv-cache.js';
import { loadCheckpoint } from '../src/checkpoint/load-checkpoint.js';
import { PaliGemmaModel } from '../src/model/paligemma-model.js';

const ROOT = resolve(import.meta.dirname, '..');

const CONFIGS: Record<string, { weights: BenchWeights; options: OnnxBackendOptions; cli: string[] }> = {
  f32: { weights: 'f32', options: {}, cli: [] },
  bf16: { weights: 'bf16', options: {}, cli: [] },
  f16: { weights: 'f16', options: {}, cli: [] },
  // The 16-bit path before gemv16: every product widens its weight with a Cast in onnxruntime.
  'bf16-cast': { weights: 'bf16', options: { halfGemvRows: 0 }, cli: ['--backend-option', 'halfGemvRows=0'] },
  // onnxruntime's pool threads not spinning after a run (they would compete with gemv16's).
  'bf16-nospin': { weights: 'bf16', options: { sessionOptions: { extra: { session: { intra_op: { allow_spinning: '0' } } } } }, cli: [] },
  int8: { weights: 'bf16', options: { quantize: 'int8' }, cli: ['--backend-option', 'quantize=int8'] },
  int4: { weights: 'bf16', options: { quantize: 'int4' }, cli: ['--backend-option', 'quantize=int4'] },
};

const { values: args } = parseArgs({
  options: {
    configs: { type: 'string', default: 'f32,bf16,int8,int4' },
    rounds: { type: 'string', default: '3' },
    'new-tokens': { type: 'string', default: '8' },
    rss: { type: 'boolean', default: false },
    'vision-layers': { type: 'string', default: '2' },
    'text-layers': { type: 'string', default: '2' },
    'scale-down': { type: 'string', default: '1' },   // smoke runs only
  },
});
const names = args.configs!.split(',').filter(Boolean);
for (const n of names) if (!CONFIGS[n]) throw new Error(`unknown config '${n}' (use ${Object.keys(CONFIGS).join(', ')})`);
if (!names.includes('f32')) names.unshift('f32');   // the baseline of every ratio
const rounds = Number(args.rounds), newTokens = Number(args['new-tokens']);
const config = benchConfig({ visionLayers: Number(args['vision-layers']), textLayers: Number(args['text-layers']), scaleDown: Number(args['scale-down']) });
const log = (s: string) => process.stderr.write(`${s}\n`);
const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };

interface Loaded { name: string; backend: OnnxBackend; model: PaliGemmaModel; loadMs: number; fileBytes: number; ttft: number[]; decode: number[] }

// ── load every configuration ───────────────────────────────────────────────
const files = new Map<BenchWeights, Awaited<ReturnType<typeof writeBenchCheckpoint>>>();
const loaded: Loaded[] = [];
try {
  for (const name of names) {
    const c = CONFIGS[name];
    if (!files.has(c.weights)) {
      log(`writing the ${c.weights} checkpoint…`);
      files.set(c.weights, await writeBenchCheckpoint(config, c.weights, 1));
    }
    const file = files.get(c.weights)!;
    const backend = new OnnxBackend(c.options);
    await backend.init();
    log(`loading ${name}…`);
    const t0 = performance.now();
    const ckpt = await loadCheckpoint(file.dir, backend);
    const loadMs = performance.now() - t0;
    const model = new PaliGemmaModel({ backend, attention: new AttendKernel('onnx'), kvCacheStore: new ContiguousKvCacheStore() },
      { config, weights: ckpt.weights, weightDtype: ckpt.weightDtype });
    loaded.push({ name, backend, model, loadMs, fileBytes: file.fileBytes, ttft: [], decode: [] });
  }
} finally {
  for (const f of files.values()) await f.remove();
}

const v = config.vision;
const pixels = { data: fillUniform(new Float32Array(3 * v.imageSize ** 2), 1001, 1), shape: [3, v.imageSize, v.imageSize] as [number, number, number] };
const ids = benchPromptIds(config, 8, 2001);
const argmax = (x: Float32Array) => { let b = 0; for (let i = 1; i < x.length; i++) if (x[i] > x[b]) b = i; return b; };

/** Image → first logits; returns the open sequence and its logits. */
async function firstToken(l: Loaded) {
  const t0 = performance.now();
  const session = await l.model.begin(pixels, ids, { capacity: ids.length + newTokens + 1 });
  const ms = performance.now() - t0;
  return { session, logits: session.logits, ms };
}

// Warm-up: builds every session (and quantizes on first use), untimed.
for (const l of loaded) {
  log(`warm-up ${l.name}…`);
  const w = await firstToken(l);
  await w.session.step(argmax(w.logits));
  await w.session.step(0);
  w.session.dispose();
}

for (let r = 0; r < rounds; r++) {
  log(`round ${r + 1}/${rounds}…`);
  const open = [];
  for (const l of loaded) {
    const f = await firstToken(l);
    l.ttft.push(f.ms);
    open.push({ l, session: f.session, logits: f.logits, ms: 0 });
  }
  for (let i = 0; i < newTokens; i++) {
    for (const o of open) {
      const t0 = performance.now();
      o.logits = await o.session.step(argmax(o.logits));
      o.ms += performance.now() - t0;
    }
  }
  for (const o of open) { o.l.decode.push(o.ms / newTokens); o.session.dispose(); }
}
for (const l of loaded) await l.backend.close();

// ── peak RSS, one child per configuration ──────────────────────────────────
const rss = new Map<string, number>();
if (args.rss) {
  for (const name of names) {
    log(`peak RSS of ${name} (child process)…`);
    const c = CONFIGS[name];
    const r = spawnSync(process.execPath, [
      join(ROOT, 'bin/paligemma.js'), 'bench', '--backend', 'onnx', '--json', '--weights', c.weights, ...c.cli,
      '--new-tokens', '2', '--repeats', '1', '--warmup', '0',
      '--vision-layers', args['vision-layers']!, '--text-layers', args['text-layers']!, '--scale-down', args['scale-down']!,
    ], { encoding: 'utf8', maxBuffer: 64 << 20 });
    if (r.status !== 0) throw new Error(`bench ${name} failed (exit ${r.status}): ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
    rss.set(name, (JSON.parse(r.stdout.trim().split('\n').pop()!) as { peakRssMb: number }).peakRssMb);
  }
}

// ── report ─────────────────────────────────────────────────────────────────
const base = loaded[0];
const f = (x: number, d = 0) => x.toFixed(d);
console.log(`onnx, PaliGemma-3B-224 shapes, ${config.vision.numLayers} + ${config.text.numLayers} layers, ${ids.length}-token prompt, ` +
  `${newTokens} decode steps; medians of ${rounds} interleaved rounds; ratios against f32 of this run`);
console.log(`  ${'config'.padEnd(7)}${'TTFT ms'.padStart(10)}${'f32÷this'.padStart(10)}${'decode ms/tok'.padStart(15)}${'f32÷this'.padStart(10)}` +
  `${'load s'.padStart(9)}${args.rss ? `${'peak RSS MiB'.padStart(14)}${'÷ file'.padStart(8)}` : ''}   engine`);
for (const l of loaded) {
  const t = median(l.ttft), d = median(l.decode);
  const rssCols = args.rss ? `${f(rss.get(l.name)!).padStart(14)}${`${((rss.get(l.name)! * 2 ** 20) / l.fileBytes).toFixed(2)}×`.padStart(8)}` : '';
  console.log(`  ${l.name.padEnd(7)}${f(t).padStart(10)}${`${(median(base.ttft) / t).toFixed(2)}×`.padStart(10)}` +
    `${f(d, 1).padStart(15)}${`${(median(base.decode) / d).toFixed(2)}×`.padStart(10)}${f(l.loadMs / 1000, 1).padStart(9)}${rssCols}   ${l.backend.engine}`);
}
console.log(`  per round (TTFT ms / decode ms per token): ${loaded.map((l) => `${l.name} ${l.ttft.map((x, i) => `${f(x)}/${f(l.decode[i], 1)}`).join(' ')}`).join(' · ')}`);
