/**
 * `paligemma quantize` folders on the reference backend:
 * - its logits equal those of the reference backend on a plain float32 twin checkpoint whose
 *   linear weights hold the values the codes stand for, decoded here in float64 from the
 *   folder's bytes (the tied lm_head becomes an explicit lm_head holding its dequantized codes,
 *   the table stays the source's for the gather);
 * - a backend that ignores the attached lm_head copy fails that comparison;
 * - onnx and reference on the same folder agree within the lossy-weight thresholds (onnx's
 *   MatMulNBits also quantizes activations, so not exactly);
 * - the backend reports lossyWeights and its engine, so conformance judges it as lossy.
 */
import { expect } from 'chai';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { onnxBackendPlugin } from '../src/backends/onnx/onnx-backend-module.js';
import { ReferenceBackend } from '../src/backends/reference/reference-backend.js';
import { BUILTIN_PLUGINS } from '../src/builtin-plugins.js';
import { LOSSY_THRESHOLDS } from '../src/conformance/lossy-weights.js';
import { createPipeline } from '../src/create-pipeline.js';
import type { BlockQuantizedWeight, Tensor, TensorBackend } from '../src/interfaces/tensor-backend.js';
import { promptIds } from '../src/generation/prompt-format.js';
import { quantizeCheckpoint } from '../src/checkpoint/quantize-checkpoint.js';
import { QUANTIZED_WEIGHTS_FILE } from '../src/checkpoint/quantized-format.js';
import { SafetensorsFile } from '../src/checkpoint/safetensors.js';
import { LM_HEAD } from '../src/checkpoint/weight-names.js';
import { encodeSafetensors, type WriterTensor } from '../src/tiny-models/safetensors-writer.js';
import { buildTinyCheckpoint, gqaSpec, makeTempDir, makeTestImage, mqaSpec, type TinyCheckpoint } from './support/tiny-checkpoint.js';
import { greedyRun } from './support/model-compare.js';

const STEPS = 4;
const plugins = () => (BUILTIN_PLUGINS.some((p) => p.name === onnxBackendPlugin.name) ? [] : [onnxBackendPlugin]);

/** Σ(a-b)² / Σb² in float64. */
function nmse(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let e = 0, s = 0;
  for (let i = 0; i < b.length; i++) { e += (a[i] - b[i]) ** 2; s += b[i] ** 2; }
  return e / s;
}

async function run(model: string, backend: string | TensorBackend) {
  const p = await createPipeline({ model, backend, plugins: backend === 'onnx' ? plugins() : [] });
  try {
    const { data, width, height } = makeTestImage(40, 40, 5);
    const pixels = await p.imageProcessor.process({ data, width, height, channels: 3 });
    const ids = Int32Array.from(promptIds(p.tokenizer, 'caption en', p.model.config.numImageTokens));
    const r = await greedyRun(p.model, pixels, ids, STEPS);
    return { ...r, engine: p.backend.engine, lossy: p.backend.lossyWeights };
  } finally {
    await p.close();
  }
}

/**
 * A float32 checkpoint holding what a quantized folder stands for: every quantized weight
 * decoded here, in float64, from the folder's codes and scales ((code - 2^(bits-1)) · scale,
 * rounded once to float32 as it is stored); every other tensor as the source holds it (same
 * values, same dtype).
 */
async function dequantizedTwin(source: TinyCheckpoint, folder: string): Promise<string> {
  const config = JSON.parse(await readFile(join(folder, 'config.json'), 'utf8'));
  const { bits, block_size: bs, quantized } = config.quantization_config as { bits: number; block_size: number; quantized: string[] };
  delete config.quantization_config;
  const qf = await SafetensorsFile.open(join(folder, QUANTIZED_WEIGHTS_FILE));
  const tensors: Record<string, WriterTensor> = {};
  try {
    // In the source's dtype: the Gemma embedding normalizer is rounded to the table's dtype.
    for (const [name, w] of Object.entries(source.weights)) tensors[name] = { data: w.data, shape: w.shape, dtype: source.spec.dtype };
    for (const name of quantized) {
      const [n, kb, blob] = qf.entry(`${name}.qweight`).shape;
      const k = name === LM_HEAD ? source.weights['language_model.model.embed_tokens.weight'].shape[1] : source.weights[name].shape[1];
      expect(kb).to.equal(Math.ceil(k / bs));
      const codes = await qf.readBytes(`${name}.qweight`);
      const raw = await qf.readBytes(`${name}.scales`);
      const scales = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
      const out = new Float32Array(n * k);
      const mid = 2 ** (bits - 1);
      for (let r = 0; r < n; r++) for (let i = 0; i < k; i++) {
        const b = Math.floor(i / bs), j = i % bs, at = (r * kb + b) * blob;
        const code = bits === 8 ? codes[at + j] : j % 2 === 0 ? codes[at + j / 2] % 16 : Math.floor(codes[at + (j - 1) / 2] / 16);
        out[r * k + i] = (code - mid) * scales[r * kb + b];
      }
      tensors[name] = { data: out, shape: [n, k] };
    }
  } finally {
    await qf.close();
  }
  const dir = await makeTempDir('pg-quant-twin-');
  await writeFile(join(dir, 'model.safetensors'), encodeSafetensors(tensors, { format: 'pt' }));
  await writeFile(join(dir, 'config.json'), JSON.stringify(config));
  for (const f of ['preprocessor_config.json', 'tokenizer.json', 'tokenizer_config.json']) await copyFile(join(source.dir, f), join(dir, f));
  return dir;
}

/** The reference backend with one plausible bug: the tied lm_head's quantized copy is dropped. */
class IgnoresAttachedCopy extends ReferenceBackend {
  override attachBlockQuantized(_table: Tensor, _q: BlockQuantizedWeight): void { /* forgotten */ }
}

describe('paligemma quantize folders on the reference backend', function () {
  const cases: Array<{ name: string; ckpt: TinyCheckpoint; bits: 4 | 8; folder: string; twin: string }> = [];
  before(async function () {
    for (const [name, spec] of [['mqa', mqaSpec], ['gqa', gqaSpec]] as const) {
      const dir = await makeTempDir('pg-quant-ref-');
      const ckpt = await buildTinyCheckpoint(dir, { ...spec(), dtype: 'BF16' });
      for (const bits of [4, 8] as const) {
        const folder = join(await makeTempDir('pg-quant-ref-out-'), 'q');
        await quantizeCheckpoint({ model: dir, bits, out: folder });
        cases.push({ name: `${name} int${bits}`, ckpt, bits, folder, twin: await dequantizedTwin(ckpt, folder) });
      }
    }
  });

  it('gives the logits of a float32 checkpoint holding the dequantized weights (decoded in float64 here)', async function () {
    for (const c of cases) {
      const q = await run(c.folder, 'reference');
      const twin = await run(c.twin, 'reference');
      expect(q.lossy, c.name).to.equal(`int${c.bits}`);
      expect(q.engine, c.name).to.equal(`reference (TypeScript, float32, int${c.bits} weights)`);
      expect(twin.lossy, c.name).to.equal(undefined);
      expect(q.tokens, c.name).to.deep.equal(twin.tokens);
      expect([...q.vision], `${c.name} vision`).to.deep.equal([...twin.vision]);
      for (let i = 0; i < STEPS; i++) expect([...q.logits[i]], `${c.name} step ${i}`).to.deep.equal([...twin.logits[i]]);
    }
  });

  it('fails that comparison when the attached lm_head copy is ignored', async function () {
    const c = cases[0];
    const broken = await run(c.folder, new IgnoresAttachedCopy());
    const twin = await run(c.twin, 'reference');
    // The prompt's logits now come from the table itself: far off the twin's, not rounding.
    expect(nmse(broken.logits[0], twin.logits[0])).to.be.above(1e-4);
    expect([...broken.vision]).to.deep.equal([...twin.vision]);
  });

  it('onnx and reference on the same folder agree within the lossy-weight thresholds', async function () {
    for (const c of cases) {
      const ref = await run(c.folder, 'reference');
      const onnx = await run(c.folder, 'onnx');
      expect(onnx.lossy).to.equal(ref.lossy);
      const limits = LOSSY_THRESHOLDS[`int${c.bits}` as const].model;
      expect(nmse(onnx.vision, ref.vision), `${c.name} vision`).to.be.below(limits.vision);
      for (let i = 0; i < STEPS && (i === 0 || onnx.tokens[i - 1] === ref.tokens[i - 1]); i++) {
        expect(nmse(onnx.logits[i], ref.logits[i]), `${c.name} step ${i}`).to.be.below(limits.logits);
      }
      if (c.bits === 8) expect(onnx.tokens, c.name).to.deep.equal(ref.tokens);
    }
  });
});
