/** The one `dtype` option: weights held as stored, widened, rounded to 16 bits, or quantized where a backend can. */
import { expect } from 'chai';
import { join } from 'node:path';
import { createPipeline } from '../src/create-pipeline.js';
import { PaliGemmaError } from '../src/interfaces/errors.js';
import type { GenerationResult } from '../src/generation/generation-types.js';
import { planDtype, type ModelDtype } from '../src/checkpoint/model-dtype.js';
import { expectUserError, runCli } from './support/run-cli.js';
import { buildTinyCheckpoint, makeTempDir, makeTestImage, mqaSpec } from './support/tiny-checkpoint.js';

const PROMPT = 'caption en';
const image = makeTestImage(24, 24, 3);

async function run(model: string, dtype: ModelDtype, backend = 'reference'): Promise<GenerationResult> {
  const pipe = await createPipeline({ model, backend, dtype });
  try {
    return await pipe.generate(image, PROMPT, { maxNewTokens: 6, logprobs: 1 });
  } finally {
    await pipe.close();
  }
}

const chosen = (r: GenerationResult) => r.logprobs!.map((s) => s.logprob);

describe('dtype option', function () {
  let f32: string;
  let f16: string;
  let bf16: string;

  before(async function () {
    const dir = await makeTempDir('pg-dtype-');
    // The same seeded weights stored three ways.
    f32 = join(dir, 'f32'); f16 = join(dir, 'f16'); bf16 = join(dir, 'bf16');
    await buildTinyCheckpoint(f32, mqaSpec());
    await buildTinyCheckpoint(f16, { ...mqaSpec(), dtype: 'F16' });
    await buildTinyCheckpoint(bf16, { ...mqaSpec(), dtype: 'BF16' });
  });

  it('fp16 / bf16 round a float32 file at load exactly as a file stored in that dtype holds it', async function () {
    for (const [dtype, stored] of [['fp16', f16], ['bf16', bf16]] as const) {
      const rounded = await run(f32, dtype);
      const file = await run(stored, 'auto');
      expect(rounded.tokens, dtype).to.deep.equal(file.tokens);
      expect(chosen(rounded), dtype).to.deep.equal(chosen(file));
    }
  });

  it('rounding is not a no-op: fp16 / bf16 log-probs differ from the float32 file\'s', async function () {
    const exact = chosen(await run(f32, 'auto'));
    for (const dtype of ['fp16', 'bf16'] as const) {
      const lp = chosen(await run(f32, dtype));
      expect(lp.some((x, i) => x !== exact[i]), dtype).to.equal(true);
    }
  });

  it('fp32 widens a bf16 file exactly (the same log-probs as keeping it 16-bit)', async function () {
    expect(chosen(await run(bf16, 'fp32'))).to.deep.equal(chosen(await run(bf16, 'auto')));
  });

  it('fp16 works on a backend without 16-bit storage (tfjs) and agrees with reference', async function () {
    const ref = await run(f32, 'fp16');
    const tf = await run(f32, 'fp16', 'tfjs');
    expect(tf.tokens).to.deep.equal(ref.tokens);
    chosen(tf).forEach((x, i) => expect(x).to.be.closeTo(chosen(ref)[i], 1e-3));
  });

  it('q8 maps to onnx int8 weights and keeps the greedy tokens of the tiny model', async function () {
    const q = await run(f32, 'q8', 'onnx');
    expect(q.backend).to.match(/int8 weights/);
    expect(q.tokens).to.deep.equal((await run(f32, 'auto')).tokens);
  });

  it('refuses what a backend cannot do, and unknown or contradicting values, by name', async function () {
    expect(() => planDtype('q8', 'reference')).to.throw(PaliGemmaError, /dtype q8 is not available on backend reference: weight quantization runs on onnx/);
    expect(() => planDtype('q4', 'webgpu')).to.throw(PaliGemmaError, /dtype q4 is not available on backend webgpu/);
    expect(() => planDtype('q8', 'onnx', { quantize: 'none' })).to.throw(PaliGemmaError, /quantize=none was given too/);
    let err: unknown;
    try { await createPipeline({ model: f32, dtype: 'fp8' as never }); } catch (e) { err = e; }
    expect(err).to.be.instanceOf(PaliGemmaError);
    expect((err as Error).message).to.match(/unknown dtype "fp8" \(use auto, fp32, fp16, bf16, q8, q4\)/);
  });

  it('CLI: --dtype is validated before anything loads, one line, exit 2', function () {
    expectUserError(runCli(['generate', '--model', f32, '--image', 'x.png', '--prompt', 'p', '--dtype', 'int3']), /--dtype: unknown dtype "int3"/);
    expectUserError(runCli(['generate', '--model', f32, '--image', 'x.png', '--prompt', 'p', '--dtype', 'q4', '--backend', 'tfjs']), /dtype q4 is not available on backend tfjs/);
  });
});
