/**
 * Nothing runs as a different model than its files describe, and non-finite numbers never
 * become an answer. Every broken input is built at test time from the tiny checkpoint.
 */
import { expect } from 'chai';
import fc from 'fast-check';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ReferenceBackend } from '../src/backends/reference/reference-backend.js';
import { createPipeline, createRegistry, startBackend } from '../src/create-pipeline.js';
import { PaliGemmaError } from '../src/interfaces/errors.js';
import type { Tensor, TensorBackend } from '../src/interfaces/tensor-backend.js';
import { loadCheckpoint } from '../src/checkpoint/load-checkpoint.js';
import { firstNonFiniteStored } from '../src/tensor/finite-check.js';
import { HfTokenizer } from '../src/tokenizer/hf-tokenizer.js';
import { PaliGemmaPipeline } from '../src/paligemma-pipeline.js';
import { SiglipImageProcessor } from '../src/image/siglip-image-processor.js';
import { numberToBf16Bits, numberToF16Bits } from '../src/tensor/dtype.js';
import { rawSafetensors, writeSafetensors, type WriterDtype, type WriterTensor } from './support/safetensors-writer.js';
import {
  buildTinyCheckpoint, makeTempDir, makeTestImage, mqaSpec, type TinyCheckpoint,
} from './support/tiny-checkpoint.js';
import { TINY_TOKENIZER, buildTinyTokenizerJson } from './support/tiny-tokenizer.js';

async function rejection(p: Promise<unknown>): Promise<Error> {
  try { await p; } catch (e) { return e as Error; }
  throw new Error('expected a rejection, but it resolved');
}

async function expectUserError(p: Promise<unknown>, code: string, ...parts: string[]): Promise<string> {
  const e = await rejection(p);
  expect(e, `${e?.stack}`).to.be.instanceOf(PaliGemmaError);
  expect((e as PaliGemmaError).code, e.message).to.equal(code);
  for (const part of parts) expect(e.message).to.contain(part);
  expect(e.message).not.to.contain('\n');
  return e.message;
}

const NORM = 'language_model.model.norm.weight';

async function tiny(prefix: string, dtype: WriterDtype = 'F32'): Promise<TinyCheckpoint> {
  return buildTinyCheckpoint(await makeTempDir(prefix), { ...mqaSpec(), dtype });
}

/** Rewrites model.safetensors from the fixture's tensors, changed by `edit`. */
async function rewriteWeights(t: TinyCheckpoint, edit: (w: Record<string, WriterTensor>) => void): Promise<void> {
  const dtype = t.spec.dtype ?? 'F32';
  const w: Record<string, WriterTensor> = {};
  for (const [n, v] of Object.entries(t.weights)) w[n] = { data: new Float32Array(v.data), shape: [...v.shape], dtype };
  edit(w);
  await writeSafetensors(join(t.dir, 'model.safetensors'), w);
}

async function editJson(path: string, edit: (j: Record<string, any>) => void): Promise<void> {
  const j = JSON.parse(await readFile(path, 'utf8'));
  edit(j);
  await writeFile(path, JSON.stringify(j));
}

const image = () => { const { data, width, height } = makeTestImage(16, 16, 3); return { data, width, height, channels: 3 as const }; };

describe('strict loading: the files describe the model that runs', function () {
  this.timeout(30000);
  const backend = new ReferenceBackend();

  it('refuses tensors the architecture would not use, by name (Gemma 2 norms under a Gemma config)', async () => {
    const t = await tiny('pg-unused-');
    const extra = 'language_model.model.layers.0.post_feedforward_layernorm.weight';
    await rewriteWeights(t, (w) => { w[extra] = { data: new Float32Array(64).fill(1), shape: [64] }; });
    const msg = await expectUserError(loadCheckpoint(t.dir, backend), 'unexpected_tensor', extra, 'model.safetensors', '"gemma"', 'gemma2');
    expect(msg).to.contain('1 tensor');
  });

  it('refuses an unknown tensor name, and names how many more there are', async () => {
    const t = await tiny('pg-stray-');
    await rewriteWeights(t, (w) => {
      for (const n of ['stray.a', 'model.other.b', 'vision_tower.vision_model.head.probe', 'language_model.model.layers.7.mlp.up_proj.weight']) {
        w[n] = { data: new Float32Array(2), shape: [2] };
      }
    });
    await expectUserError(loadCheckpoint(t.dir, backend), 'unexpected_tensor', '4 tensor', 'and 1 more');
  });

  it('a gemma2 text config over PaliGemma 1 weights is refused, naming the missing Gemma 2 norm', async () => {
    const t = await tiny('pg-g2cfg-');
    await editJson(join(t.dir, 'config.json'), (j) => { j.text_config.model_type = 'gemma2'; });
    await expectUserError(loadCheckpoint(t.dir, backend), 'missing_tensor', 'pre_feedforward_layernorm');
  });

  it('refuses unknown text and vision model types and non-PaliGemma architectures by name', async () => {
    const t = await tiny('pg-types-');
    const cfg = join(t.dir, 'config.json');
    const original = await readFile(cfg, 'utf8');
    await editJson(cfg, (j) => { j.vision_config.model_type = 'clip_vision_model'; });
    await expectUserError(loadCheckpoint(t.dir, backend), 'unsupported_model', 'vision_config.model_type', 'clip_vision_model');
    await writeFile(cfg, original);
    await editJson(cfg, (j) => { j.architectures = ['LlavaForConditionalGeneration']; });
    await expectUserError(loadCheckpoint(t.dir, backend), 'unsupported_model', 'LlavaForConditionalGeneration');
    await writeFile(cfg, original);
    await editJson(cfg, (j) => { j.text_config.model_type = 'llama'; });
    await expectUserError(createPipeline({ model: t.dir }), 'unsupported_model', 'text_config.model_type', 'llama');
  });

  it('accepts unknown-but-harmless config fields', async () => {
    const t = await tiny('pg-harmless-');
    await editJson(join(t.dir, 'config.json'), (j) => {
      j.some_future_flag = { nested: [1, 2] };
      j.text_config.use_cache = true;
      j.vision_config.attn_implementation = 'sdpa';
      j.dtype = j.torch_dtype;
      delete j.torch_dtype;
    });
    const ck = await loadCheckpoint(t.dir, backend);
    expect(ck.config.torchDtype).to.equal('f32');
    ck.dispose();
  });

  it('image_token_index must be the tokenizer\'s <image> id and not <bos>', async () => {
    const t = await tiny('pg-imgtok-');
    const cfg = join(t.dir, 'config.json');
    await editJson(cfg, (j) => { j.image_token_index = TINY_TOKENIZER.image - 1; });
    await expectUserError(createPipeline({ model: t.dir }), 'model_mismatch', 'image_token_index', `<image> id ${TINY_TOKENIZER.image}`);
    await editJson(cfg, (j) => { j.image_token_index = TINY_TOKENIZER.bos; });
    await expectUserError(createPipeline({ model: t.dir }), 'model_mismatch', 'image_token_index 2', '<bos>');
  });

  it('refuses a tokenizer.json of another model family (WordPiece)', async () => {
    const t = await tiny('pg-wordpiece-');
    const json = buildTinyTokenizerJson() as Record<string, any>;
    json.model = { type: 'WordPiece', unk_token: '<unk>', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab: json.model.vocab };
    await writeFile(join(t.dir, 'tokenizer.json'), JSON.stringify(json));
    await expectUserError(createPipeline({ model: t.dir }), 'model_mismatch', 'tokenizer.json', 'WordPiece', 'BPE');
  });
});

describe('strict loading: non-finite numbers never become an answer', function () {
  this.timeout(60000);
  const backend = new ReferenceBackend();

  for (const dtype of ['F32', 'BF16', 'F16'] as const) {
    it(`the load-time scan names a NaN or Inf weight stored as ${dtype}, with its position`, async () => {
      const t = await tiny(`pg-nan-${dtype}-`, dtype);
      const name = 'language_model.model.layers.1.mlp.up_proj.weight';       // [128, 64]
      await rewriteWeights(t, (w) => { w[name].data[3 * 64 + 5] = NaN; });
      await expectUserError(loadCheckpoint(t.dir, backend), 'non_finite', name, '[3, 5]', 'model.safetensors');
      await rewriteWeights(t, (w) => { w[NORM].data[7] = -Infinity; });
      await expectUserError(loadCheckpoint(t.dir, backend), 'non_finite', NORM, '[7]');
      // Opting out loads it (the decode-time check below still stands guard).
      (await loadCheckpoint(t.dir, backend, { checkFinite: false })).dispose();
    });
  }

  it('a NaN found while a weight is read in place gives its room back and releases every weight loaded before it', async () => {
    const t = await tiny('pg-nan-reserve-', 'BF16');
    const name = 'language_model.model.layers.1.mlp.up_proj.weight';
    await rewriteWeights(t, (w) => { w[name].data[2 * 64 + 9] = NaN; });
    const live = new Set<unknown>();
    let reserved = 0, discarded = 0;
    class Watching extends ReferenceBackend {
      override reserve(shape: readonly number[], dtype?: 'f32' | 'f16' | 'bf16') {
        const room = super.reserve(shape, dtype);
        reserved++;
        return {
          data: room.data,
          commit: () => { const x = room.commit(); live.add(x); return x; },
          discard: () => { discarded++; room.discard(); },
        };
      }
      override dispose(x: Parameters<ReferenceBackend['dispose']>[0]): void {
        for (const one of Array.isArray(x) ? x : [x]) live.delete(one);
        super.dispose(x);
      }
    }
    await expectUserError(loadCheckpoint(t.dir, new Watching()), 'non_finite', name, '[2, 9]');
    expect(reserved, 'weights read in place').to.be.above(1);
    expect(discarded).to.equal(1);
    expect(live.size, 'weights left behind').to.equal(0);
  });

  it('the fast scan finds the same first non-finite element as a plain loop (all dtypes, odd lengths and offsets)', () => {
    const bitsOf = (dtype: 'f16' | 'bf16', b: number) => dtype === 'f16' ? (b & 0x7c00) === 0x7c00 : (b & 0x7f80) === 0x7f80;
    fc.assert(fc.property(
      fc.constantFrom('f32' as const, 'f16' as const, 'bf16' as const), fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 3 }),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 0xffff })), { maxLength: 3 }), fc.integer({ min: 0, max: 2 ** 31 }),
      (dtype, n, offset, hits, seed) => {
        let x = seed;
        const next = () => { x = (x * 1103515245 + 12345) >>> 0; return x; };
        if (dtype === 'f32') {
          const all = new Float32Array(n + offset).map(() => (next() / 2 ** 32 - 0.5) * 1e30);
          const d = all.subarray(offset);
          for (const [i, v] of hits) if (n) d[i % n] = [NaN, Infinity, -Infinity, v][v % 4];
          const want = d.findIndex((v) => !Number.isFinite(v));
          expect(firstNonFiniteStored(d, dtype)).to.equal(want);
        } else {
          const all = new Uint16Array(n + offset).map(() => next() >>> 16);
          const d = all.subarray(offset);
          for (const [i, v] of hits) if (n) d[i % n] = v;
          const want = d.findIndex((b) => bitsOf(dtype, b));
          expect(firstNonFiniteStored(d, dtype)).to.equal(want);
        }
      }), { numRuns: 2000, seed: 14 });
  });

  it('the scan reads 16-bit NaN/Inf bit patterns, not just the value a writer rounds to', async () => {
    // Hand-written bits: a bf16 signalling-NaN payload and an f16 +Inf.
    const t = await tiny('pg-nanbits-');
    for (const [dtype, bits] of [['BF16', 0x7f81], ['F16', 0x7c00]] as const) {
      const header: Record<string, unknown> = {};
      const chunks: Uint8Array[] = [];
      let at = 0;
      for (const [n, v] of Object.entries(t.weights)) {
        const u16 = Uint16Array.from(v.data, (x) => (dtype === 'BF16' ? numberToBf16Bits(x) : numberToF16Bits(x)));
        if (n === NORM) u16[9] = bits;
        header[n] = { dtype, shape: v.shape, data_offsets: [at, at + u16.byteLength] };
        chunks.push(new Uint8Array(u16.buffer));
        at += u16.byteLength;
      }
      const data = new Uint8Array(at);
      let o = 0;
      for (const c of chunks) { data.set(c, o); o += c.length; }
      await writeFile(join(t.dir, 'model.safetensors'), rawSafetensors(header, data));
      await expectUserError(loadCheckpoint(t.dir, backend), 'non_finite', NORM, '[9]');
    }
  });

  it('a NaN weight that loads unchecked fails the call on every backend, naming the backend and the prefill', async function () {
    const t = await tiny('pg-nanrun-');
    await rewriteWeights(t, (w) => { w[NORM].data[3] = NaN; });
    const registry = await createRegistry();
    const ran: string[] = [];
    for (const name of ['reference', 'onnx', 'tfjs', 'webgpu']) {
      let b: TensorBackend;
      try {
        b = await startBackend(registry, name);
      } catch (e) {
        if (name === 'webgpu' && e instanceof PaliGemmaError) continue;          // no adapter on this machine
        throw e;
      }
      const part = registry.get('backend', name);
      const ck = await loadCheckpoint(t.dir, b, { checkFinite: false });
      try {
        const pipe = new PaliGemmaPipeline(
          b, registry.get('attention', part.defaultAttention ?? 'plain').create(),
          registry.get('kvCache', part.defaultKvCache ?? 'contiguous').create(),
          registry.get('sampler', 'greedy').create({}), await HfTokenizer.fromDir(t.dir),
          await SiglipImageProcessor.fromDir(t.dir, 16), ck);
        await expectUserError(pipe.generate(image(), 'caption en', { maxNewTokens: 3 }), 'non_finite', 'prefill', b.engine ?? b.name);
        await expectUserError(pipe.score(image(), 'caption en', 'a cat'), 'non_finite', 'prefill');
        ran.push(name);
      } finally {
        ck.dispose();
        await b.close?.();
      }
    }
    expect(ran).to.include.members(['reference', 'onnx', 'tfjs']);
  });

  it('a logits row that goes non-finite in a later decode step fails there, naming the position', async () => {
    const t = await tiny('pg-nanstep-');
    /** Poisons the logits of the second forward pass (the first decode step). */
    class LateNaN extends ReferenceBackend {
      logitReads = 0;
      override async read(x: Tensor): Promise<Float32Array> {
        const out = await super.read(x);
        if (x.shape[x.shape.length - 1] === TINY_TOKENIZER.vocabSize && ++this.logitReads === 2) out[11] = Infinity;
        return out;
      }
    }
    const b = new LateNaN();
    const pipe = await createPipeline({ model: t.dir, backend: b });
    try {
      const ids = (await pipe.generate(image(), 'caption en', { maxNewTokens: 1 })).tokens;
      expect(ids).to.have.length(1);
      b.logitReads = 0;
      const prompt = pipe.tokenizer.encode('caption en').length;
      const at = 16 + 1 + prompt + 1;                                              // image, <bos>, prompt, "\n"
      await expectUserError(pipe.generate(image(), 'caption en', { maxNewTokens: 4 }), 'non_finite', `decode step at position ${at}`, 'token 11');
    } finally {
      await pipe.close();
    }
  });

  it('preprocessing that would turn pixels into Inf is refused at load', async () => {
    const t = await tiny('pg-std-');
    const pre = join(t.dir, 'preprocessor_config.json');
    const original = await readFile(pre, 'utf8');
    await editJson(pre, (j) => { j.image_std = [0.5, 0, 0.5]; });
    await expectUserError(SiglipImageProcessor.fromDir(t.dir, 16), 'invalid_input', 'image_std');
    await editJson(pre, (j) => { j.image_std = [0.5, 1e-39, 0.5]; });
    await expectUserError(createPipeline({ model: t.dir }), 'invalid_config', 'image_std', 'channel 1', 'overflow');
    await writeFile(pre, original);
    await editJson(pre, (j) => { j.rescale_factor = 1e300; });
    await expectUserError(SiglipImageProcessor.fromDir(t.dir, 16), 'invalid_config', 'rescale_factor', 'overflow');
  });
});
