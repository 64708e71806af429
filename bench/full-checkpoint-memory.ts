/**
 * Peak memory of `paligemma generate` on a full-size PaliGemma-3B-224 checkpoint, against the
 * checkpoint's size on disk.
 *
 *   npx tsx bench/full-checkpoint-memory.ts [--dir DIR] [--dtype BF16|F16] [--backends reference,onnx]
 *                                           [--new-tokens N] [--backend-option KEY=VALUE]...
 *
 * First it writes the checkpoint into DIR (default: a folder in the OS temp dir, reused on later
 * runs): real PaliGemma-3B-224 shapes (27 SigLIP layers, 18 Gemma layers, vocabulary 257216,
 * lm_head tied), seeded random weights stored as BF16 (or F16), in the Hugging Face layout
 * Google publishes (three safetensors shards and model.safetensors.index.json, config.json,
 * preprocessor_config.json). The tokenizer is the small test one (its `<image>` id is written
 * as image_token_index); the model still has all 257216 rows. Each tensor is written in chunks,
 * so the writer never holds the model.
 *
 * Then, for each backend, it runs the real command in a child process,
 *   node bin/paligemma.js generate --model DIR --image examples/demo.png --prompt "caption en" --json …
 * and reads the child's peak resident set (getrusage's maxrss, loading included) as it exits.
 * It prints one line per backend and, with --json, one object per backend.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { mkdir, open, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { benchConfig, elementsOf, fillUniform, weightSpecs } from '../src/bench/paligemma-shapes.js';
import { f32ToBf16, f32ToF16 } from '../src/tensor/dtype.js';
import { tinyConfigJson, tinyPreprocessorJson, type TinySpec } from '../src/tiny-models/tiny-checkpoint.js';
import { TINY_TOKENIZER, buildTinyTokenizerConfig, buildTinyTokenizerJson } from '../src/tiny-models/tiny-tokenizer.js';

const ROOT = resolve(import.meta.dirname, '..');
/** Google's paligemma-3b folders hold three shards. */
const SHARDS = 3;
/** Elements drawn and converted per write. */
const CHUNK = 1 << 24;
const MARKER = '.complete';

const { values: args } = parseArgs({
  options: {
    dir: { type: 'string' },
    dtype: { type: 'string', default: 'BF16' },
    backends: { type: 'string', default: 'reference,onnx' },
    'new-tokens': { type: 'string', default: '2' },
    'backend-option': { type: 'string', multiple: true, default: [] },
    json: { type: 'boolean', default: false },
    // For the smoke test: fewer layers and narrower widths (see benchConfig).
    'vision-layers': { type: 'string', default: '27' },
    'text-layers': { type: 'string', default: '18' },
    'scale-down': { type: 'string', default: '1' },
  },
});
const dtypeArg = args.dtype!.toUpperCase();
if (dtypeArg !== 'BF16' && dtypeArg !== 'F16') throw new Error(`--dtype must be BF16 or F16, got ${args.dtype}`);
const dtype: 'BF16' | 'F16' = dtypeArg;
const shapeTag = args['scale-down'] === '1' && args['vision-layers'] === '27' && args['text-layers'] === '18'
  ? '' : `-${args['vision-layers']}x${args['text-layers']}-div${args['scale-down']}`;
const dir = resolve(args.dir ?? join(tmpdir(), `paligemma-3b-random-${dtype.toLowerCase()}${shapeTag}`));

// ── the checkpoint ───────────────────────────────────────────────────────────

const config = benchConfig({
  visionLayers: Number(args['vision-layers']), textLayers: Number(args['text-layers']), scaleDown: Number(args['scale-down']),
});

/** The config's sizes in the form the test-checkpoint writers take. */
function checkpointSpec(): TinySpec {
  const v = config.vision, t = config.text;
  return {
    dtype,
    vision: { hiddenSize: v.hiddenSize, intermediateSize: v.intermediateSize, numLayers: v.numLayers, numHeads: v.numHeads, patchSize: v.patchSize, imageSize: v.imageSize },
    text: { hiddenSize: t.hiddenSize, intermediateSize: t.intermediateSize, numLayers: t.numLayers, numHeads: t.numHeads, numKvHeads: t.numKvHeads, headDim: t.headDim },
  };
}

/** config.json as Google's paligemma-3b-pt-224 has it, with our tokenizer's `<image>` id. */
function configJson(): Record<string, unknown> {
  const json = tinyConfigJson(checkpointSpec());
  (json.text_config as Record<string, unknown>).vocab_size = config.text.vocabSize;
  json.image_token_index = TINY_TOKENIZER.image;
  return json;
}

async function writeCheckpoint(): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const specs = weightSpecs(config);
  const bytesOf = (shape: number[]) => elementsOf(shape) * 2;
  const total = specs.reduce((a, w) => a + bytesOf(w.shape), 0);
  // Shards split by bytes, tensors kept whole and in order.
  const split: Array<typeof specs> = Array.from({ length: SHARDS }, () => []);
  let acc = 0;
  for (const w of specs) {
    split[Math.min(SHARDS - 1, Math.floor((acc * SHARDS) / total))].push(w);
    acc += bytesOf(w.shape);
  }
  // A narrow model's embedding can outweigh the rest: drop shards left empty.
  const shards = split.filter((part) => part.length > 0);
  const weightMap: Record<string, string> = {};
  const started = performance.now();
  let seed = 1;
  for (const [i, part] of shards.entries()) {
    const file = `model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`;
    const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
    let offset = 0;
    for (const w of part) {
      header[w.name] = { dtype, shape: w.shape, data_offsets: [offset, offset + bytesOf(w.shape)] };
      offset += bytesOf(w.shape);
      weightMap[w.name] = file;
    }
    let text = JSON.stringify(header);
    while ((8 + text.length) % 8 !== 0) text += ' ';
    const fh = await open(join(dir, file), 'w');
    try {
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(text.length));
      await fh.write(len);
      await fh.write(Buffer.from(text, 'utf8'));
      const chunk = new Float32Array(CHUNK);
      for (const w of part) {
        for (let at = 0, n = elementsOf(w.shape); at < n; at += CHUNK) {
          const values = fillUniform(chunk.subarray(0, Math.min(CHUNK, n - at)), seed++, w.scale, w.offset);
          const bits = dtype === 'BF16' ? f32ToBf16(values) : f32ToF16(values);
          await fh.write(new Uint8Array(bits.buffer, bits.byteOffset, bits.byteLength));
        }
      }
    } finally {
      await fh.close();
    }
    process.stderr.write(`wrote ${file} (${(performance.now() - started) / 1000 | 0} s)\n`);
  }
  await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2));
  await writeFile(join(dir, 'config.json'), JSON.stringify(configJson(), null, 2));
  await writeFile(join(dir, 'preprocessor_config.json'), JSON.stringify(tinyPreprocessorJson(checkpointSpec()), null, 2));
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(buildTinyTokenizerJson()));
  await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify(buildTinyTokenizerConfig(), null, 2));
  await writeFile(join(dir, MARKER), '');
}

async function checkpointBytes(): Promise<number> {
  return (await readdir(dir)).filter((f) => f.endsWith('.safetensors')).reduce((a, f) => a + statSync(join(dir, f)).size, 0);
}

// ── the runs ─────────────────────────────────────────────────────────────────

/** Prints the process's peak resident set (KiB) to stderr as it exits; loaded with --import. */
const PEAK_RSS_HOOK = `data:text/javascript,process.on('exit',()=>process.stderr.write('peak-rss-kib '+process.resourceUsage().maxRSS+'\\n'))`;

interface RunResult {
  backend: string;
  engine?: string;
  fileBytes: number;
  peakRssBytes: number;
  ratio: number;
  timings?: Record<string, number>;
  /** The generated token ids: every backend should give the same ones. */
  tokens?: number[];
}

function runGenerate(backend: string, fileBytes: number): RunResult {
  const options = (args['backend-option'] ?? []).flatMap((o) => ['--backend-option', o]);
  const r = spawnSync(process.execPath, [
    '--import', PEAK_RSS_HOOK, join(ROOT, 'bin/paligemma.js'), 'generate', '--model', dir, '--backend', backend, ...options,
    '--image', join(ROOT, 'examples/demo.png'), '--prompt', 'caption en', '--max-new-tokens', args['new-tokens']!, '--json',
  ], { encoding: 'utf8', maxBuffer: 64 << 20 });
  const peak = /peak-rss-kib (\d+)/.exec(r.stderr);
  if (r.status !== 0 || !peak) throw new Error(`generate on ${backend} failed (exit ${r.status}): ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
  const out = JSON.parse(r.stdout) as { backend?: string; timings?: Record<string, number>; tokens?: number[] };
  const peakRssBytes = Number(peak[1]) * 1024;
  return { backend, engine: out.backend, fileBytes, peakRssBytes, ratio: peakRssBytes / fileBytes, timings: out.timings, tokens: out.tokens };
}

if (!existsSync(join(dir, MARKER))) {
  process.stderr.write(`writing a full-size ${dtype} PaliGemma-3B-224 checkpoint into ${dir}\n`);
  await writeCheckpoint();
}
const fileBytes = await checkpointBytes();
const gb = (b: number) => (b / 1e9).toFixed(2);
for (const backend of args.backends!.split(',').filter(Boolean)) {
  const r = runGenerate(backend, fileBytes);
  if (args.json) console.log(JSON.stringify(r));
  else {
    const t = r.timings ? ` · ${Object.entries(r.timings).map(([k, v]) => `${k} ${Math.round(v)}`).join(', ')}` : '';
    console.log(`${r.engine ?? backend}: peak RSS ${gb(r.peakRssBytes)} GB for a ${gb(fileBytes)} GB ${dtype} checkpoint = ${r.ratio.toFixed(2)}×${t} · tokens ${r.tokens?.join(' ')}`);
  }
}
