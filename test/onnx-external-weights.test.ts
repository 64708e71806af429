/**
 * Quantized weights past the onnx backend's embedding budget (`embeddedWeightBytes`) go to
 * onnxruntime as in-memory external data instead of model initializers, so a model whose codes
 * exceed protobuf's 2 GiB limit (full-size int8: ≈ 2.6 GB in the decode graph) still loads:
 * - compileGraph embeds initializers in order while they fit and refers to the rest, and the
 *   session computes what the all-embedded model computes;
 * - whole tiny models give the same logits with every weight external, with a split, and all
 *   embedded (a quantized folder and quantize-on-load).
 */
import { expect } from 'chai';
import { join } from 'node:path';
import { loadOrt } from '../src/backends/onnx/onnx-runtime.js';
import { compileGraph, DataLeaf } from '../src/backends/onnx/onnx-graph.js';
import { matMulNBits, nbitsWeight } from '../src/backends/onnx/matmul-nbits.js';
import { ONNX_IR_VERSION, ONNX_OPSET } from '../src/backends/onnx/onnx-backend.js';
import { onnxBackendPlugin } from '../src/backends/onnx/onnx-backend-module.js';
import { BUILTIN_PLUGINS } from '../src/builtin-plugins.js';
import { createPipeline } from '../src/create-pipeline.js';
import type { ModelDtype } from '../src/checkpoint/model-dtype.js';
import { promptIds } from '../src/generation/prompt-format.js';
import { quantizeCheckpoint } from '../src/checkpoint/quantize-checkpoint.js';
import { quantizeBlockwise } from '../src/tensor/block-quantization.js';
import { buildTinyCheckpoint, makeTempDir, makeTestImage, mqaSpec } from './support/tiny-checkpoint.js';
import { greedyRun } from './support/model-compare.js';
import { rand } from './support/seeded-values.js';

const plugins = () => (BUILTIN_PLUGINS.some((p) => p.name === onnxBackendPlugin.name) ? [] : [onnxBackendPlugin]);

describe('onnx: quantized weights as external data past the embedding budget', function () {
  it('compileGraph embeds initializers while they fit, refers to the rest, and the session computes the same', async function () {
    const ort = await loadOrt();
    const k = 64, n = 48;
    const weight = (rows: number, seed: number) => {
      const w = rand(rows * k, seed, 0.5);
      return nbitsWeight(quantizeBlockwise(rows, k, (r, o) => o.set(w.subarray(r * k, (r + 1) * k)), { bits: 8 }));
    };
    // x [3, K] · w0ᵀ [K, K] · w1ᵀ [K, N]: two weights, four initializers (codes and scales).
    const x = new DataLeaf(rand(3 * k, 9, 1), [3, k], 'float32');
    const w0 = weight(k, 3), w1 = weight(n, 4);
    const out = matMulNBits(matMulNBits(x, w0, 4), w1, 4);
    const codes0 = w0.q.data.byteLength;
    const all = compileGraph([out], ONNX_OPSET, ONNX_IR_VERSION);
    const split = compileGraph([out], ONNX_OPSET, ONNX_IR_VERSION, codes0 + w0.q.scales.byteLength);
    const none = compileGraph([out], ONNX_OPSET, ONNX_IR_VERSION, 0);
    expect(all.externalData).to.have.length(0);
    expect(split.externalData.length).to.be.within(1, 3);
    expect(none.externalData).to.have.length(4);                          // codes and scales of both
    expect(split.key).to.equal(all.key);
    const sizes = [all, split, none].map((g) => g.model().byteLength);
    expect(sizes[1]).to.be.below(sizes[0]);
    expect(sizes[2]).to.be.below(sizes[1]);
    const results: Float32Array[] = [];
    for (const g of [all, split, none]) {
      const s = await ort.InferenceSession.create(g.model(), { logSeverityLevel: 3, ...(g.externalData.length ? { externalData: g.externalData } : {}) });
      const feeds = Object.fromEntries(g.feeds.map((f) => [f.name, new ort.Tensor('float32', (f.leaf as DataLeaf).data as Float32Array, [...f.leaf.shape])]));
      results.push((await s.run(feeds))[g.outputNames[0]].data as Float32Array);
      await s.release();
    }
    expect(results[0].some((v) => v !== 0)).to.equal(true);
    expect([...results[1]]).to.deep.equal([...results[0]]);
    expect([...results[2]]).to.deep.equal([...results[0]]);
    // Without the external data the model cannot load: the references are real.
    let err: unknown;
    try { await ort.InferenceSession.create(none.model(), { logSeverityLevel: 4 }); } catch (e) { err = e; }
    expect(err, 'a model with external references and no data must not load').to.be.instanceOf(Error);
  });

  it('tiny models give the same logits with every weight external, with a split, and all embedded', async function () {
    this.timeout(120_000);
    const dir = await makeTempDir('pg-ext-');
    await buildTinyCheckpoint(dir, { ...mqaSpec(), dtype: 'BF16' });
    const folder = join(await makeTempDir('pg-ext-q-'), 'q');
    await quantizeCheckpoint({ model: dir, bits: 8, out: folder });
    const run = async (model: string, embeddedWeightBytes?: number, dtype?: ModelDtype) => {
      const p = await createPipeline({
        model, backend: 'onnx', plugins: plugins(), ...(dtype ? { dtype } : {}),
        backendOptions: embeddedWeightBytes === undefined ? {} : { embeddedWeightBytes },
      });
      try {
        const { data, width, height } = makeTestImage(40, 40, 2);
        const pixels = await p.imageProcessor.process({ data, width, height, channels: 3 });
        const ids = Int32Array.from(promptIds(p.tokenizer, 'caption en', p.model.config.numImageTokens));
        return await greedyRun(p.model, pixels, ids, 3);
      } finally {
        await p.close();
      }
    };
    for (const [model, dtype] of [[folder, undefined], [dir, 'q8']] as const) {
      const embedded = await run(model, undefined, dtype);
      for (const budget of [0, 20_000]) {
        const ext = await run(model, budget, dtype);
        expect(ext.tokens, `budget ${budget}`).to.deep.equal(embedded.tokens);
        for (let i = 0; i < 3; i++) expect([...ext.logits[i]], `budget ${budget} step ${i}`).to.deep.equal([...embedded.logits[i]]);
      }
    }
  });

  it('refuses a budget that is not a byte count within the protobuf limit', async function () {
    const { OnnxBackend } = await import('../src/backends/onnx/onnx-backend.js');
    expect(() => new OnnxBackend({ embeddedWeightBytes: -1 })).to.throw(/embeddedWeightBytes/);
    expect(() => new OnnxBackend({ embeddedWeightBytes: 2 ** 32 })).to.throw(/embeddedWeightBytes/);
  });
});
