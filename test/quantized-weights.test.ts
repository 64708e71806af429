/**
 * Weight-only int8/int4 on onnx, end to end on the tiny checkpoints:
 * - `dtype q4` runs and its logits stay within the int4 lossy-weight thresholds against the
 *   reference backend (NMSE computed here in float64); `dtype q8` keeps every greedy token;
 *   the tied lm_head is computed from a quantized copy while the table stays exact;
 * - `paligemma quantize` folders: the codes it writes dequantize (float64, here) to within half a
 *   step of the source weights, loading them gives the same logits as quantizing on load, and a
 *   corrupt or mismatched folder is refused with one line.
 */
import { expect } from 'chai';
import { readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { onnxBackendPlugin } from '../src/backends/onnx/onnx-backend-module.js';
import type { OnnxBackend, OnnxTensor } from '../src/backends/onnx/onnx-backend.js';
import { tiedCopy } from '../src/backends/onnx/tied-weights.js';
import { BUILTIN_PLUGINS } from '../src/builtin-plugins.js';
import { LOSSY_THRESHOLDS } from '../src/conformance/lossy-weights.js';
import { createPipeline } from '../src/create-pipeline.js';
import { PaliGemmaError } from '../src/interfaces/errors.js';
import type { ModelDtype } from '../src/checkpoint/model-dtype.js';
import { promptIds } from '../src/generation/prompt-format.js';
import { quantizeCheckpoint } from '../src/checkpoint/quantize-checkpoint.js';
import { QUANTIZED_WEIGHTS_FILE } from '../src/checkpoint/quantized-format.js';
import { SafetensorsFile } from '../src/checkpoint/safetensors.js';
import { bf16ToF32 } from '../src/tensor/dtype.js';
import { EMBED_TOKENS } from '../src/checkpoint/weight-names.js';
import type { TinySpec } from '../src/tiny-models/tiny-checkpoint.js';
import { buildTinyCheckpoint, gqaSpec, makeTempDir, makeTestImage, mhaSpec, mqaSpec } from './support/tiny-checkpoint.js';
import { greedyRun } from './support/model-compare.js';
import { expectUserError, runCli } from './support/run-cli.js';

const plugins = () => (BUILTIN_PLUGINS.some((p) => p.name === onnxBackendPlugin.name) ? [] : [onnxBackendPlugin]);
const STEPS = 6;
const DEMO = new URL('../examples/demo.png', import.meta.url).pathname;

/** Σ(a-b)² / Σb² in float64. */
function nmse(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let e = 0, s = 0;
  for (let i = 0; i < b.length; i++) { e += (a[i] - b[i]) ** 2; s += b[i] ** 2; }
  return e / s;
}

async function run(model: string, backend: string, dtype?: ModelDtype) {
  const p = await createPipeline({ model, backend, ...(dtype ? { dtype } : {}), plugins: backend === 'onnx' ? plugins() : [] });
  try {
    const { data, width, height } = makeTestImage(40, 40, 3);
    const pixels = await p.imageProcessor.process({ data, width, height, channels: 3 });
    const ids = Int32Array.from(promptIds(p.tokenizer, 'caption en', p.model.config.numImageTokens));
    const r = await greedyRun(p.model, pixels, ids, STEPS);
    const table = (p as unknown as { checkpoint: { weights: Map<string, OnnxTensor> } }).checkpoint.weights.get(EMBED_TOKENS)!;
    const tied = backend === 'onnx' && table.ref.kind === 'storage' ? tiedCopy(table.ref.storage) : undefined;
    return { ...r, engine: p.backend.engine ?? p.backend.name, tiedBits: tied?.q.bits };
  } finally {
    await p.close();
  }
}

describe('weight-only int8/int4 on onnx (tiny checkpoints)', function () {
  const specs: Record<string, () => TinySpec> = { mqaSpec, mhaSpec, gqaSpec };
  const dirs: Record<string, string> = {};
  before(async function () {
    for (const [name, spec] of Object.entries(specs)) {
      dirs[name] = await makeTempDir('pg-quant-');
      await buildTinyCheckpoint(dirs[name], { ...spec(), dtype: 'BF16' });
    }
  });

  it('dtype q4: logits within the int4 lossy thresholds of the reference, tied lm_head quantized', async function () {
    const limit = LOSSY_THRESHOLDS.int4.model.logits;
    for (const [name, dir] of Object.entries(dirs)) {
      const ref = await run(dir, 'reference');
      const q4 = await run(dir, 'onnx', 'q4');
      expect(q4.engine).to.equal('onnx (cpu, int4 weights)');
      expect(q4.tiedBits, `${name}: the lm_head runs on a 4-bit copy of the table`).to.equal(4);
      // Same prompt, same first logits; later steps follow each side's own tokens, so only the
      // agreeing prefix is compared.
      for (let i = 0; i < STEPS && (i === 0 || q4.tokens[i - 1] === ref.tokens[i - 1]); i++) {
        const e = nmse(q4.logits[i], ref.logits[i]);
        expect(e, `${name} step ${i}`).to.be.below(limit);
        expect(e, `${name} step ${i}: int4 must actually round`).to.be.above(0);
      }
    }
  });

  it('dtype q8: the greedy tokens of every tiny checkpoint do not change', async function () {
    for (const [name, dir] of Object.entries(dirs)) {
      const ref = await run(dir, 'reference');
      const q8 = await run(dir, 'onnx', 'q8');
      expect(q8.tiedBits).to.equal(8);
      expect(q8.tokens, name).to.deep.equal(ref.tokens);
      expect(nmse(q8.logits[0], ref.logits[0])).to.be.below(LOSSY_THRESHOLDS.int8.model.logits);
    }
  });

  it('the CLI runs generate --backend onnx --dtype q4', function () {
    const r = runCli(['generate', '--model', dirs.mqaSpec, '--backend', 'onnx', '--dtype', 'q4', '--image', DEMO, '--prompt', 'caption en', '--max-new-tokens', '3', '--json']);
    expect(r.code, r.stderr).to.equal(0);
    expect(JSON.parse(r.stdout).backend).to.match(/int4 weights/);
  });

  describe('paligemma quantize folders', function () {
    for (const bits of [4, 8] as const) {
      it(`int${bits}: codes dequantize to within half a step of the source; loading gives the same logits as quantizing on load`, async function () {
        for (const [name, dir] of Object.entries(dirs)) {
          const out = join(await makeTempDir('pg-quant-out-'), 'q');
          const r = await quantizeCheckpoint({ model: dir, bits, out });
          expect(r.quantized).to.be.above(0);
          // One weight, checked in float64 against the BF16 source.
          const src = await SafetensorsFile.open(join(dir, 'model.safetensors'));
          const qf = await SafetensorsFile.open(join(out, QUANTIZED_WEIGHTS_FILE));
          try {
            const wName = 'language_model.model.layers.0.mlp.down_proj.weight';
            const entry = src.entry(wName);
            const [n, k] = entry.shape;
            const w = bf16ToF32(await src.readStored(wName) as Uint16Array);
            const codes = await qf.readBytes(`${wName}.qweight`);
            const rawScales = await qf.readBytes(`${wName}.scales`);
            const scales = new Float32Array(rawScales.buffer, rawScales.byteOffset, rawScales.byteLength / 4);
            const kb = Math.ceil(k / 32), blob = (32 * bits) / 8, mid = 1 << (bits - 1);
            let worst = 0;
            for (let row = 0; row < n; row++) for (let i = 0; i < k; i++) {
              const b = Math.floor(i / 32), j = i % 32, at = (row * kb + b) * blob;
              const code = bits === 8 ? codes[at + j] : (codes[at + (j >> 1)] >> ((j & 1) * 4)) & 15;
              const s = scales[row * kb + b];
              // Round to nearest: half a step, but for a value at the top code (the block's
              // largest magnitude of the other sign, clamped to 2^(bits-1) - 1 steps): one step.
              const err = Math.abs((code - mid) * s - w[row * k + i]) / Math.abs(s);
              worst = Math.max(worst, code === 2 * mid - 1 ? err - 0.5 : err);
            }
            expect(worst, `${name}: |dequantized - source| in steps`).to.be.at.most(0.5 + 1e-6);
          } finally {
            await src.close();
            await qf.close();
          }
          const onLoad = await run(dir, 'onnx', bits === 4 ? 'q4' : 'q8');
          const stored = await run(out, 'onnx');
          expect(stored.engine).to.equal(`onnx (cpu, int${bits} weights)`);
          expect(stored.tokens).to.deep.equal(onLoad.tokens);
          for (let i = 0; i < STEPS; i++) expect([...stored.logits[i]], `${name} step ${i}`).to.deep.equal([...onLoad.logits[i]]);
          // The same folder with the matching dtype loads too; the other one is refused.
          expect((await run(out, 'onnx', bits === 4 ? 'q4' : 'q8')).tokens).to.deep.equal(onLoad.tokens);
          await expectRefused(() => run(out, 'onnx', bits === 4 ? 'q8' : 'q4'), /weights are int\d, but quantize=int\d was given/);
          await rm(out, { recursive: true, force: true });
        }
      });
    }

    it('streams tensors in parts: quantizing two rows at a time writes the same bytes', async function () {
      for (const bits of [4, 8] as const) {
        const whole = join(await makeTempDir('pg-quant-whole-'), 'q');
        const parts = join(await makeTempDir('pg-quant-parts-'), 'q');
        await quantizeCheckpoint({ model: dirs.gqaSpec, bits, out: whole });
        // 2 rows of the widest source row (K ≤ 128 elements, BF16) per part: many parts per tensor.
        await quantizeCheckpoint({ model: dirs.gqaSpec, bits, out: parts, partBytes: 2 * 128 * 2 });
        const a = await readFile(join(whole, QUANTIZED_WEIGHTS_FILE)), b = await readFile(join(parts, QUANTIZED_WEIGHTS_FILE));
        expect(b.length).to.equal(a.length);
        expect(b.equals(a), `int${bits}: quantized.safetensors differs when streamed in parts`).to.equal(true);
      }
    });

    async function expectRefused(f: () => Promise<unknown>, pattern: RegExp): Promise<void> {
      let err: unknown;
      try { await f(); } catch (e) { err = e; }
      expect(err, `expected a refusal matching ${pattern}`).to.be.instanceOf(PaliGemmaError);
      const msg = (err as Error).message;
      expect(msg).to.match(pattern);
      expect(msg).to.not.include('\n');
    }

    it('a corrupt or mismatched folder is refused with one line naming what is wrong', async function () {
      const base = join(await makeTempDir('pg-quant-bad-'), 'q');
      await quantizeCheckpoint({ model: dirs.gqaSpec, bits: 4, out: base });
      const copy = async (tag: string) => {
        const d = join(await makeTempDir(`pg-quant-${tag}-`), 'q');
        await quantizeCheckpoint({ model: dirs.gqaSpec, bits: 4, out: d });
        return d;
      };
      const editConfig = async (d: string, edit: (j: Record<string, any>) => void) => {
        const j = JSON.parse(await readFile(join(d, 'config.json'), 'utf8'));
        edit(j);
        await writeFile(join(d, 'config.json'), JSON.stringify(j));
      };

      // Truncated codes file.
      let d = await copy('trunc');
      const size = (await readFile(join(d, QUANTIZED_WEIGHTS_FILE))).length;
      await truncate(join(d, QUANTIZED_WEIGHTS_FILE), size - 100);
      await expectRefused(() => run(d, 'onnx'), /quantized\.safetensors/);

      // The marker says int8, the file holds int4 codes.
      d = await copy('bits');
      await editConfig(d, (j) => { j.quantization_config.bits = 8; });
      await expectRefused(() => run(d, 'onnx'), /expected U8 \[.*\] for int8 blocks of 32/);

      // Another tool's quantization, by name.
      d = await copy('method');
      await editConfig(d, (j) => { j.quantization_config.quant_method = 'gptq'; });
      await expectRefused(() => run(d, 'onnx'), /quant_method "gptq" is not supported/);

      // A config of another model (one text layer less) does not match the quantized list.
      d = await copy('model');
      await editConfig(d, (j) => { j.text_config.num_hidden_layers -= 1; });
      await expectRefused(() => run(d, 'onnx'), /does not list the \d+ linear weights of this config/);

      // Codes with no marker: the plain loader sees the linear weights missing.
      d = await copy('marker');
      await editConfig(d, (j) => { delete j.quantization_config; });
      await expectRefused(() => run(d, 'onnx'), /missing tensor/);

      // A backend that cannot hold block-quantized weights says so by name.
      await expectRefused(() => run(base, 'tfjs'), /backend tfjs cannot load/);

      // And the CLI prints it as one error line, exit 2; quantize refuses a non-empty --out.
      expectUserError(runCli(['generate', '--model', base, '--backend', 'tfjs', '--image', DEMO, '--prompt', 'caption en']), /backend tfjs cannot load/);
      expectUserError(runCli(['quantize', '--model', dirs.gqaSpec, '--to', 'int4', '--out', base]), /exists and is not empty/);
      expectUserError(runCli(['quantize', '--model', dirs.gqaSpec, '--to', 'int3', '--out', join(base, 'x')]), /--to 'int3'/);
    });
  });
});
