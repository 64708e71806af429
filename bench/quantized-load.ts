/**
 * What a `paligemma quantize` folder saves at start-up: loading it on onnx against loading the
 * 16-bit checkpoint and quantizing its weights (the work `--dtype q4` / `q8` does on first use:
 * every linear weight, plus the tied lm_head's copy of the embedding table), interleaved, in one
 * process, at PaliGemma-3B-224 shapes.
 *
 *   npx tsx bench/quantized-load.ts [--bits 4|8] [--vision-layers N] [--text-layers N] [--rounds N]
 *
 * It writes the bench's random weights as a BF16 checkpoint, times `paligemma quantize` on it
 * once, then alternates (a) loadCheckpoint(BF16) + quantize every weight the way the backend
 * does on first use, and (b) loadCheckpoint(quantized folder). Prints each and (a) ÷ (b).
 */
import 'reflect-metadata';
import { rm } from 'node:fs/promises';

import { parseArgs } from 'node:util';
import { OnnxBackend, type OnnxTensor } from '../src/backends/onnx/onnx-backend.js';
import { quantizeStorageNBits } from '../src/backends/onnx/matmul-nbits.js';
import { tiedQuantized } from '../src/backends/onnx/tied-weights.js';
import { writeBenchCheckpoint } from '../src/bench/bench-checkpoint.js';
import { benchConfig } from '../src/bench/paligemma-shapes.js';
import { loadCheckpoint } from '../src/checkpoint/load-checkpoint.js';
import { quantizeCheckpoint } from '../src/checkpoint/quantize-checkpoint.js';
import { quantizedNames } from '../src/checkpoint/quantized-format.js';
import { EMBED_TOKENS, LM_HEAD } from '../src/checkpoint/weight-names.js';

const { values: args } = parseArgs({
  options: {
    bits: { type: 'string', default: '4' },
    'vision-layers': { type: 'string', default: '2' },
    'text-layers': { type: 'string', default: '2' },
    'scale-down': { type: 'string', default: '1' },
    rounds: { type: 'string', default: '2' },
  },
});
const bits = Number(args.bits) as 4 | 8;
if (bits !== 4 && bits !== 8) throw new Error('--bits must be 4 or 8');
const config = benchConfig({ visionLayers: Number(args['vision-layers']), textLayers: Number(args['text-layers']), scaleDown: Number(args['scale-down']) });
const quantize = bits === 4 ? 'int4' : 'int8';

const ckpt = await writeBenchCheckpoint(config, 'bf16', 1);
const out = `${ckpt.dir}-int${bits}`;
try {
  let t = performance.now();
  const q = await quantizeCheckpoint({ model: ckpt.dir, bits, out });
  const quantizeMs = performance.now() - t;
  console.log(`BF16 checkpoint ${(ckpt.fileBytes / 1e9).toFixed(2)} GB (${config.vision.numLayers} + ${config.text.numLayers} layers); ` +
    `paligemma quantize --to ${quantize}: ${(quantizeMs / 1000).toFixed(1)} s, folder ${(q.outBytes / 1e9).toFixed(2)} GB`);

  const names = quantizedNames(config);
  const onLoad = async (): Promise<number> => {
    const b = new OnnxBackend({ quantize });
    await b.init();
    const t0 = performance.now();
    const loaded = await loadCheckpoint(ckpt.dir, b);
    for (const n of names) {
      const w = loaded.weights.get(n) as OnnxTensor | undefined;
      const table = loaded.weights.get(EMBED_TOKENS) as OnnxTensor;
      if (n === LM_HEAD && !w) { if (table.ref.kind === 'storage') tiedQuantized(table.ref.storage, bits); continue; }
      if (w?.ref.kind === 'storage') quantizeStorageNBits(w.ref.storage, bits);
    }
    const ms = performance.now() - t0;
    loaded.dispose();
    await b.close();
    return ms;
  };
  const stored = async (): Promise<number> => {
    const b = new OnnxBackend();
    await b.init();
    const t0 = performance.now();
    const loaded = await loadCheckpoint(out, b);
    const ms = performance.now() - t0;
    if (b.engine !== `onnx (cpu, ${quantize} weights)`) throw new Error(`loaded as ${b.engine}`);
    loaded.dispose();
    await b.close();
    return ms;
  };
  console.log(`${'round'.padEnd(7)}${'BF16 load + quantize ms'.padStart(26)}${'quantized folder load ms'.padStart(27)}${'ratio'.padStart(9)}`);
  for (let r = 0; r < Number(args.rounds); r++) {
    const a = await onLoad();
    const b = await stored();
    console.log(`${String(r + 1).padEnd(7)}${a.toFixed(0).padStart(26)}${b.toFixed(0).padStart(27)}${`${(a / b).toFixed(2)}×`.padStart(9)}`);
  }
} finally {
  await ckpt.remove();
  await rm(out, { recursive: true, force: true });
}

