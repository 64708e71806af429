/**
 * Checkpoint loading: dtype conversions, the safetensors reader, config.json defaults, weight
 * names, and whole tiny checkpoints loaded onto the reference backend — including every way a
 * user's folder can be broken.
 */
import { expect } from 'chai';
import { readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { ReferenceBackend } from '../src/backends/reference/reference-backend.js';
import { PaliGemmaError } from '../src/interfaces/errors.js';
import type { DType, OpName, Tensor } from '../src/interfaces/tensor-backend.js';
import { parseConfig } from '../src/checkpoint/config.js';
import {
  bf16BitsToNumber, bf16ToF32, f16BitsToNumber, f16ToF32, f32ToBf16, f32ToF16, numberToBf16Bits, numberToF16Bits,
} from '../src/tensor/dtype.js';
import { loadCheckpoint, type LoadProgress, type LoadedCheckpoint } from '../src/checkpoint/load-checkpoint.js';
import { SafetensorsFile } from '../src/checkpoint/safetensors.js';
import { canonicalName, expectedShapes, newerName } from '../src/checkpoint/weight-names.js';
import { encodeSafetensors, rawSafetensors, writeSafetensors, type WriterTensor } from './support/safetensors-writer.js';
import {
  buildTinyCheckpoint, gqaSpec, makeTempDir, mhaSpec, mqaSpec, type TinyCheckpoint, type TinySpec,
} from './support/tiny-checkpoint.js';
import { TINY_TOKENIZER } from './support/tiny-tokenizer.js';
import { expectUserError, rejection } from './support/rejections.js';

// ── helpers ─────────────────────────────────────────────────────────────────

function expectSyncUserError(fn: () => unknown, ...parts: string[]): string {
  let caught: unknown;
  try { fn(); } catch (e) { caught = e; }
  expect(caught, 'expected a PaliGemmaError').to.be.instanceOf(PaliGemmaError);
  const msg = (caught as Error).message;
  for (const part of parts) expect(msg).to.contain(part);
  expect(msg).not.to.contain('\n');
  return msg;
}

async function readAll(backend: ReferenceBackend, ck: LoadedCheckpoint): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const [name, t] of ck.weights) out.set(name, await backend.read(t));
  return out;
}

function bitsEqual(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length), y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

/** Loaded weights equal the fixture's (already rounded) values, bit for bit, with the same shapes. */
async function expectMatchesFixture(backend: ReferenceBackend, ck: LoadedCheckpoint, tiny: TinyCheckpoint): Promise<void> {
  const names = Object.keys(tiny.weights).filter((n) => n !== 'language_model.lm_head.weight' || ck.weights.has(n));
  expect([...ck.weights.keys()].sort()).to.deep.equal(names.sort());
  for (const name of names) {
    const t = ck.weights.get(name)!;
    expect([...t.shape], name).to.deep.equal(tiny.weights[name].shape);
    expect(bitsEqual(await backend.read(t), tiny.weights[name].data), name).to.equal(true);
  }
}

/** f16 value of a bit pattern, computed from the definition (no shared code with dtype.ts). */
function f16FromDefinition(h: number): number {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  if (e === 0x1f) return m ? NaN : s * Infinity;
  if (e === 0) return s * m * 2 ** -24;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** The published google/paligemma-3b-mix-224 config.json. */
const MIX_224_CONFIG = {
  _name_or_path: 'final-bf16-mix-224',
  architectures: ['PaliGemmaForConditionalGeneration'],
  bos_token_id: 2,
  eos_token_id: 1,
  hidden_size: 2048,
  ignore_index: -100,
  image_token_index: 257152,
  model_type: 'paligemma',
  pad_token_id: 0,
  projection_dim: 2048,
  text_config: {
    hidden_size: 2048,
    intermediate_size: 16384,
    model_type: 'gemma',
    num_attention_heads: 8,
    num_hidden_layers: 18,
    num_image_tokens: 256,
    num_key_value_heads: 1,
    torch_dtype: 'float32',
    vocab_size: 257216,
  },
  torch_dtype: 'float32',
  transformers_version: '4.41.0.dev0',
  vision_config: {
    hidden_size: 1152,
    intermediate_size: 4304,
    model_type: 'siglip_vision_model',
    num_attention_heads: 16,
    num_hidden_layers: 27,
    num_image_tokens: 256,
    patch_size: 14,
    projection_dim: 2048,
    projector_hidden_act: 'gelu_fast',
    vision_use_head: false,
  },
};

const clone = <T>(x: T): T => JSON.parse(JSON.stringify(x)) as T;

/** Backend wrapper that counts live tensors and can fail the n-th upload or accept 16-bit uploads. */
class CountingBackend extends ReferenceBackend {
  live = new Set<Tensor>();
  uploads: { ctor: string; dtype: DType; shape: number[] }[] = [];
  failAt = -1;
  native16: DType[] = [];

  constructor() {
    super();
    // A backend without reserve: every tensor arrives through upload, which this one records.
    Object.defineProperty(this, 'reserve', { value: undefined });
  }

  override supports(op: OpName, dtype: DType = 'f32'): boolean {
    // 16-bit uploads only as told (the reference backend itself would store them all).
    if (op === 'upload' && dtype !== 'f32') return this.native16.includes(dtype);
    return super.supports(op, dtype);
  }

  override upload(data: Float32Array | Uint16Array, shape: readonly number[], dtype: DType = 'f32'): Tensor {
    if (this.uploads.length === this.failAt) throw new Error('device out of memory (simulated)');
    this.uploads.push({ ctor: data.constructor.name, dtype, shape: [...shape] });
    // Stores 16-bit data widened, but remembers what it was handed.
    const values = data instanceof Uint16Array ? (dtype === 'bf16' ? bf16ToF32(data) : f16ToF32(data)) : data;
    const t = super.upload(values, shape, 'f32');
    this.live.add(t);
    return t;
  }

  override dispose(t: Tensor | readonly Tensor[]): void {
    for (const x of Array.isArray(t) ? t : [t as Tensor]) this.live.delete(x);
  }
}

// ── dtype conversions ───────────────────────────────────────────────────────

describe('checkpoint dtype conversions', () => {
  it('bf16 bit patterns → values: 1, -2.5, subnormal, ±inf, NaN', () => {
    expect(bf16BitsToNumber(0x3f80)).to.equal(1);
    expect(bf16BitsToNumber(0xc020)).to.equal(-2.5);
    expect(bf16BitsToNumber(0x0001)).to.equal(2 ** -133);
    expect(bf16BitsToNumber(0x8001)).to.equal(-(2 ** -133));
    expect(bf16BitsToNumber(0x7f80)).to.equal(Infinity);
    expect(bf16BitsToNumber(0xff80)).to.equal(-Infinity);
    expect(bf16BitsToNumber(0x7fc0)).to.be.NaN;
    expect(Object.is(bf16BitsToNumber(0x8000), -0)).to.equal(true);
    expect([...bf16ToF32(new Uint16Array([0x3f80, 0xc020, 0x7f7f]))]).to.deep.equal([1, -2.5, 3.3895313892515355e38]);
  });

  it('f16 bit patterns → values: 1, -2.5, 65504, subnormals, ±inf, NaN', () => {
    expect(f16BitsToNumber(0x3c00)).to.equal(1);
    expect(f16BitsToNumber(0xc100)).to.equal(-2.5);
    expect(f16BitsToNumber(0x7bff)).to.equal(65504);
    expect(f16BitsToNumber(0x0001)).to.equal(2 ** -24);
    expect(f16BitsToNumber(0x03ff)).to.equal(1023 * 2 ** -24);
    expect(f16BitsToNumber(0x0400)).to.equal(2 ** -14);
    expect(f16BitsToNumber(0x8001)).to.equal(-(2 ** -24));
    expect(f16BitsToNumber(0x7c00)).to.equal(Infinity);
    expect(f16BitsToNumber(0xfc00)).to.equal(-Infinity);
    expect(f16BitsToNumber(0x7e00)).to.be.NaN;
    expect(f16BitsToNumber(0xfc01)).to.be.NaN;
    expect(Object.is(f16BitsToNumber(0x8000), -0)).to.equal(true);
  });

  it('f16 → f32 agrees with the definition for all 65536 patterns', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const wide = f16ToF32(all);
    for (let h = 0; h < 65536; h++) {
      const want = f16FromDefinition(h);
      if (Number.isNaN(want)) expect(wide[h], `0x${h.toString(16)}`).to.be.NaN;
      else if (wide[h] !== want) expect.fail(`0x${h.toString(16)}: got ${wide[h]}, want ${want}`);
    }
  });

  it('every non-NaN f16 and bf16 pattern survives widening and narrowing back', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const f16Back = f32ToF16(f16ToF32(all));
    const bf16Back = f32ToBf16(bf16ToF32(all));
    for (let h = 0; h < 65536; h++) {
      const f16NaN = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
      const bf16NaN = (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0;
      if (!f16NaN && f16Back[h] !== h) expect.fail(`f16 0x${h.toString(16)} came back as 0x${f16Back[h].toString(16)}`);
      if (!bf16NaN && bf16Back[h] !== h) expect.fail(`bf16 0x${h.toString(16)} came back as 0x${bf16Back[h].toString(16)}`);
      if (f16NaN) expect(Number.isNaN(f16BitsToNumber(f16Back[h]))).to.equal(true);
      if (bf16NaN) expect(Number.isNaN(bf16BitsToNumber(bf16Back[h]))).to.equal(true);
    }
  });

  it('f32 → bf16 rounds to nearest even and overflows to infinity', () => {
    expect(numberToBf16Bits(1)).to.equal(0x3f80);
    expect(numberToBf16Bits(-2.5)).to.equal(0xc020);
    expect(numberToBf16Bits(1 + 2 ** -8)).to.equal(0x3f80);        // tie → even (down)
    expect(numberToBf16Bits(1 + 3 * 2 ** -8)).to.equal(0x3f82);    // tie → even (up)
    expect(numberToBf16Bits(1 + 2 ** -8 + 2 ** -20)).to.equal(0x3f81);
    expect(numberToBf16Bits(3.4028234663852886e38)).to.equal(0x7f80);
    expect(numberToBf16Bits(-Infinity)).to.equal(0xff80);
    expect(numberToBf16Bits(2 ** -140)).to.equal(0x0000 | (2 ** -140 / 2 ** -133 >= 0.5 ? 1 : 0));
    expect(bf16BitsToNumber(numberToBf16Bits(NaN))).to.be.NaN;
  });

  it('f32 → f16 rounds to nearest even, keeps subnormals, overflows to infinity', () => {
    expect(numberToF16Bits(1)).to.equal(0x3c00);
    expect(numberToF16Bits(-2.5)).to.equal(0xc100);
    expect(numberToF16Bits(1 + 2 ** -11)).to.equal(0x3c00);        // tie → even
    expect(numberToF16Bits(1 + 3 * 2 ** -11)).to.equal(0x3c02);
    expect(numberToF16Bits(65504)).to.equal(0x7bff);
    expect(numberToF16Bits(65519)).to.equal(0x7bff);
    expect(numberToF16Bits(65520)).to.equal(0x7c00);               // tie past the top → infinity
    expect(numberToF16Bits(1e6)).to.equal(0x7c00);
    expect(numberToF16Bits(-1e6)).to.equal(0xfc00);
    expect(numberToF16Bits(2 ** -24)).to.equal(0x0001);
    expect(numberToF16Bits(2 ** -25)).to.equal(0x0000);            // tie → even (zero)
    expect(numberToF16Bits(1.5 * 2 ** -25)).to.equal(0x0001);
    expect(numberToF16Bits(3 * 2 ** -25)).to.equal(0x0002);        // 1.5 units, tie → even
    expect(numberToF16Bits(1023.5 * 2 ** -24)).to.equal(0x0400);   // rounds up into the normals
    expect(numberToF16Bits(-(2 ** -24))).to.equal(0x8001);
    expect(numberToF16Bits(1e-10)).to.equal(0x0000);
    expect(numberToF16Bits(-0)).to.equal(0x8000);
    expect(f16BitsToNumber(numberToF16Bits(NaN))).to.be.NaN;
    expect(numberToF16Bits(-NaN) & 0x7c00).to.equal(0x7c00);
  });
});

// ── safetensors reader ──────────────────────────────────────────────────────

describe('safetensors reader', () => {
  let dir: string;
  before(async () => { dir = await makeTempDir('pg-st-'); });

  const sample: Record<string, WriterTensor> = {
    a: { data: new Float32Array([1, -2.5, 3.25, 0]), shape: [2, 2] },
    b: { data: new Float32Array([1, -2.5, 65504, 2 ** -24]), shape: [4], dtype: 'F16' },
    c: { data: new Float32Array([1, -2.5, 0.1]), shape: [3, 1], dtype: 'BF16' },
  };

  it('reads F32, F16 and BF16 tensors, their shapes and the metadata', async () => {
    const path = join(dir, 'ok.safetensors');
    await writeSafetensors(path, sample, { format: 'pt' });
    const f = await SafetensorsFile.open(path);
    try {
      expect(f.metadata).to.deep.equal({ format: 'pt' });
      expect([...f.entries.keys()]).to.deep.equal(['a', 'b', 'c']);
      expect(f.entry('c').shape).to.deep.equal([3, 1]);
      expect([...await f.readF32('a')]).to.deep.equal([1, -2.5, 3.25, 0]);
      expect([...await f.readF32('b')]).to.deep.equal([1, -2.5, 65504, 2 ** -24]);
      expect([...await f.readF32('c')]).to.deep.equal([1, -2.5, bf16BitsToNumber(numberToBf16Bits(0.1))]);
      const raw = await f.readStored('c');
      expect(raw).to.be.instanceOf(Uint16Array);
      expect([...raw]).to.deep.equal([0x3f80, 0xc020, numberToBf16Bits(0.1)]);
    } finally { await f.close(); }
  });

  it('reads in chunks, reporting every byte', async () => {
    const path = join(dir, 'big.safetensors');
    const n = 5 * 1024 * 1024 + 3;                                      // 10 MiB of bf16, > 1 chunk of f32
    const data = new Float32Array(n).map((_, i) => (i % 255) - 127);
    await writeSafetensors(path, { big: { data, shape: [n], dtype: 'BF16' }, f: { data, shape: [n] } });
    const f = await SafetensorsFile.open(path);
    try {
      let bytes = 0;
      const got = await f.readF32('big', (k) => { bytes += k; });
      expect(bytes).to.equal(2 * n);
      expect(bitsEqual(got, data)).to.equal(true);                      // small integers are exact in bf16
      bytes = 0;
      expect(bitsEqual(await f.readF32('f', (k) => { bytes += k; }), data)).to.equal(true);
      expect(bytes).to.equal(4 * n);
    } finally { await f.close(); }
  });

  it('readStoredInto fills a destination part by part through one buffer, each part seen once, in order', async () => {
    const path = join(dir, 'into.safetensors');
    const n = 5 * 1024 * 1024 + 3;                                      // f32: 20 MiB, two parts of 16 MiB
    const data = new Float32Array(n).map((_, i) => (i % 255) - 127);
    await writeSafetensors(path, { h: { data, shape: [n], dtype: 'BF16' }, f: { data, shape: [n] } });
    const f = await SafetensorsFile.open(path);
    try {
      for (const [name, dst] of [['h', new Uint16Array(n)], ['f', new Float32Array(n)]] as const) {
        const parts: Array<[number, number]> = [];
        let bytes = 0;
        await f.readStoredInto(name, dst, (part, first) => {
          expect(part.constructor).to.equal(dst.constructor);
          parts.push([first, part.length]);
        }, (k) => { bytes += k; });
        let next = 0;
        for (const [first, len] of parts) { expect(first).to.equal(next); next += len; }
        expect(next, name).to.equal(n);
        expect(bytes).to.equal(n * dst.BYTES_PER_ELEMENT);
        const wide = dst instanceof Float32Array ? dst : bf16ToF32(dst);
        expect(bitsEqual(wide, data), name).to.equal(true);
      }
      expect((await collectParts(f, 'f', n)).length).to.equal(2);
      // Overlapping reads of one file do not share a buffer: both come back whole.
      const [a, b] = await Promise.all([f.readF32('h'), f.readF32('f')]);
      expect(bitsEqual(a, data) && bitsEqual(b, data), 'overlapping reads').to.equal(true);
      const wrong = await rejection(f.readStoredInto('f', new Uint16Array(n)));
      expect(wrong).to.be.instanceOf(RangeError);
      expect(wrong.message).to.match(/tensor f .*does not fit a Uint16Array/);
    } finally { await f.close(); }
  });

  describe('refuses corrupt files with a one-line message naming the file', () => {
    const good = encodeSafetensors(sample);
    const headerLen = Number(new DataView(good.buffer).getBigUint64(0, true));

    async function openBytes(name: string, bytes: Uint8Array): Promise<string> {
      const path = join(dir, name);
      await writeFile(path, bytes);
      return path;
    }

    it('missing file', async () => {
      await expectUserError(SafetensorsFile.open(join(dir, 'nope.safetensors')), 'nope.safetensors', 'not found');
    });

    it('file shorter than 8 bytes', async () => {
      const p = await openBytes('short.safetensors', new Uint8Array([1, 2, 3, 4, 5]));
      await expectUserError(SafetensorsFile.open(p), 'short.safetensors', '5 bytes');
    });

    it('header length past the end of the file', async () => {
      const p = await openBytes('hlen.safetensors', rawSafetensors('{}', new Uint8Array(0), 1000n));
      await expectUserError(SafetensorsFile.open(p), 'hlen.safetensors', 'header length 1000');
      const huge = await openBytes('hlen2.safetensors', rawSafetensors('{}', new Uint8Array(0), 2n ** 63n));
      await expectUserError(SafetensorsFile.open(huge), 'hlen2.safetensors', 'past the end');
    });

    it('header cut short by truncation', async () => {
      const p = await openBytes('cut.safetensors', good.subarray(0, 8 + headerLen - 10));
      await expectUserError(SafetensorsFile.open(p), 'cut.safetensors', 'past the end');
    });

    it('header that is not JSON, or not an object', async () => {
      const p = await openBytes('json.safetensors', rawSafetensors('{"a": {"dtype": "F32",', new Uint8Array(0)));
      await expectUserError(SafetensorsFile.open(p), 'json.safetensors', 'not valid JSON');
      const q = await openBytes('arr.safetensors', rawSafetensors('[1, 2]'));
      await expectUserError(SafetensorsFile.open(q), 'arr.safetensors', 'not a JSON object');
    });

    it('bad dtype, shape or data_offsets in an entry', async () => {
      const data = new Uint8Array(16);
      const cases: [object, string][] = [
        [{ w: { dtype: 7, shape: [4], data_offsets: [0, 16] } }, 'dtype'],
        [{ w: { shape: [4], data_offsets: [0, 16] } }, 'dtype'],
        [{ w: { dtype: 'F32', shape: [-4], data_offsets: [0, 16] } }, 'shape'],
        [{ w: { dtype: 'F32', shape: [2.5], data_offsets: [0, 16] } }, 'shape'],
        [{ w: { dtype: 'F32', shape: '4', data_offsets: [0, 16] } }, 'shape'],
        [{ w: { dtype: 'F32', shape: [4], data_offsets: [0] } }, 'data_offsets'],
        [{ w: { dtype: 'F32', shape: [4], data_offsets: [16, 0] } }, 'data_offsets'],
        [{ w: { dtype: 'F32', shape: [4], data_offsets: [-1, 15] } }, 'data_offsets'],
        [{ w: 'nope' }, 'not an object'],
      ];
      for (const [i, [header, what]] of cases.entries()) {
        const p = await openBytes(`entry${i}.safetensors`, rawSafetensors(header, data));
        await expectUserError(SafetensorsFile.open(p), `entry${i}.safetensors`, 'tensor w', what);
      }
    });

    it('data offsets past the end of the file (truncated data)', async () => {
      const p = await openBytes('trunc.safetensors', good.subarray(0, good.length - 3));
      await expectUserError(SafetensorsFile.open(p), 'trunc.safetensors', 'tensor c', 'past the end');
    });

    it('byte length that does not match shape × dtype size', async () => {
      const p = await openBytes('len.safetensors', rawSafetensors({ w: { dtype: 'BF16', shape: [3, 2], data_offsets: [0, 16] } }, new Uint8Array(16)));
      await expectUserError(SafetensorsFile.open(p), 'len.safetensors', 'tensor w', '16 bytes', 'needs 12');
    });

    it('unsupported dtype: opens, but reading that tensor names it and its dtype', async () => {
      const p = await openBytes('i64.safetensors', rawSafetensors({
        ids: { dtype: 'I64', shape: [2], data_offsets: [0, 16] },
        odd: { dtype: 'F4', shape: [4], data_offsets: [16, 18] },
      }, new Uint8Array(18)));
      const f = await SafetensorsFile.open(p);
      try {
        await expectUserError(f.readF32('ids'), 'i64.safetensors', 'tensor ids', 'I64');
        await expectUserError(f.readStored('odd'), 'tensor odd', 'F4');
      } finally { await f.close(); }
    });
  });
});

// ── config.json ─────────────────────────────────────────────────────────────

describe('parseConfig', () => {
  it('fills the Hugging Face defaults the published paligemma-3b-mix-224 config leaves out', () => {
    const c = parseConfig(clone(MIX_224_CONFIG), 'config.json');
    expect(c.text).to.deep.equal({
      hiddenSize: 2048, intermediateSize: 16384, numLayers: 18, numHeads: 8, numKvHeads: 1,
      headDim: 256, vocabSize: 257216, rmsNormEps: 1e-6, ropeTheta: 10000, maxPositionEmbeddings: 8192, modelType: 'gemma',
    });
    expect(c.vision).to.deep.equal({
      hiddenSize: 1152, intermediateSize: 4304, numLayers: 27, numHeads: 16, patchSize: 14,
      imageSize: 224, numChannels: 3, layerNormEps: 1e-6,
    });
    expect(c).to.include({
      projectionDim: 2048, imageTokenIndex: 257152, numImageTokens: 256,
      bosTokenId: 2, eosTokenId: 1, padTokenId: 0, torchDtype: 'f32',
    });
  });

  it('defaults ids and projection_dim, and kv heads to the query heads (no grouping)', () => {
    const j = clone(MIX_224_CONFIG) as Record<string, any>;
    for (const k of ['bos_token_id', 'eos_token_id', 'pad_token_id', 'image_token_index', 'projection_dim', 'torch_dtype']) delete j[k];
    delete j.text_config.num_key_value_heads;
    delete j.text_config.torch_dtype;
    delete j.model_type;
    j.vision_config.image_size = 448;
    const c = parseConfig(j, 'config.json');
    expect(c).to.include({ projectionDim: 2048, imageTokenIndex: 256000, bosTokenId: 2, eosTokenId: 1, padTokenId: 0, numImageTokens: 1024 });
    expect(c.text.numKvHeads).to.equal(8);
    expect(c.torchDtype).to.equal(undefined);
  });

  it('maps torch_dtype / dtype and keeps explicit values', () => {
    const j = clone(MIX_224_CONFIG) as Record<string, any>;
    j.torch_dtype = 'bfloat16';
    Object.assign(j.text_config, { head_dim: 128, rms_norm_eps: 1e-5, rope_theta: 500000, max_position_embeddings: 2048 });
    Object.assign(j.vision_config, { num_channels: 4, layer_norm_eps: 1e-5 });
    const c = parseConfig(j, 'config.json');
    expect(c.torchDtype).to.equal('bf16');
    expect(c.text).to.include({ headDim: 128, rmsNormEps: 1e-5, ropeTheta: 500000, maxPositionEmbeddings: 2048 });
    expect(c.vision).to.include({ numChannels: 4, layerNormEps: 1e-5 });
    delete j.torch_dtype;
    j.dtype = 'float16';
    expect(parseConfig(j, 'config.json').torchDtype).to.equal('f16');
  });

  it('keeps Gemma 2 fields, fills Gemma 2 defaults, and null turns soft-capping off', () => {
    const j = clone(MIX_224_CONFIG) as Record<string, any>;
    Object.assign(j.text_config, { attn_logit_softcapping: 40, final_logit_softcapping: 20, sliding_window: 512, query_pre_attn_scalar: 144 });
    expect(parseConfig(j, 'config.json').text).to.include({
      attnLogitSoftcapping: 40, finalLogitSoftcapping: 20, slidingWindow: 512, queryPreAttnScalar: 144,
    });
    const g2 = clone(MIX_224_CONFIG) as Record<string, any>;
    g2.text_config.model_type = 'gemma2';
    expect(parseConfig(g2, 'config.json').text).to.include({
      attnLogitSoftcapping: 50, finalLogitSoftcapping: 30, slidingWindow: 4096, queryPreAttnScalar: 256,
    });
    g2.text_config.final_logit_softcapping = null;
    expect(parseConfig(g2, 'config.json').text.finalLogitSoftcapping).to.equal(undefined);
    const plain = parseConfig(clone(MIX_224_CONFIG), 'config.json').text;
    expect(plain).not.to.have.any.keys('attnLogitSoftcapping', 'finalLogitSoftcapping', 'slidingWindow', 'queryPreAttnScalar');
  });

  it('names every missing required field', () => {
    const required = [
      'text_config', 'vision_config',
      ...['hidden_size', 'intermediate_size', 'num_attention_heads', 'num_hidden_layers', 'vocab_size'].map((f) => `text_config.${f}`),
      ...['hidden_size', 'intermediate_size', 'num_attention_heads', 'num_hidden_layers', 'patch_size'].map((f) => `vision_config.${f}`),
    ];
    for (const field of required) {
      const j = clone(MIX_224_CONFIG) as Record<string, any>;
      const [obj, key] = field.includes('.') ? [j[field.split('.')[0]], field.split('.')[1]] : [j, field];
      delete obj[key];
      expectSyncUserError(() => parseConfig(j, 'config.json'), `config.json: missing required field ${field}`);
    }
  });

  it('rejects non-positive / non-integer sizes, other model types and inconsistent sizes', () => {
    const bad: [(j: Record<string, any>) => void, string][] = [
      [(j) => { j.text_config.hidden_size = 0; }, 'text_config.hidden_size'],
      [(j) => { j.text_config.intermediate_size = 16384.5; }, 'text_config.intermediate_size'],
      [(j) => { j.vision_config.patch_size = '14'; }, 'vision_config.patch_size'],
      [(j) => { j.vision_config.num_hidden_layers = -1; }, 'vision_config.num_hidden_layers'],
      [(j) => { j.text_config.head_dim = 0; }, 'text_config.head_dim'],
      [(j) => { j.text_config.rms_norm_eps = -1; }, 'text_config.rms_norm_eps'],
      [(j) => { j.model_type = 'llava'; }, 'model_type'],
      [(j) => { j.text_config = [1]; }, 'text_config must be an object'],
      [(j) => { j.text_config.num_key_value_heads = 3; }, 'num_key_value_heads'],
      [(j) => { j.vision_config.image_size = 225; }, 'image_size'],
      [(j) => { j.projection_dim = 1024; }, 'projection_dim'],
      [(j) => { j.image_token_index = 300000; }, 'image_token_index'],
    ];
    for (const [mutate, part] of bad) {
      const j = clone(MIX_224_CONFIG) as Record<string, any>;
      mutate(j);
      expectSyncUserError(() => parseConfig(j, '/models/pg/config.json'), '/models/pg/config.json', part);
    }
    expectSyncUserError(() => parseConfig([], 'config.json'), 'config.json');
    expectSyncUserError(() => parseConfig(null, 'config.json'), 'config.json');
  });
});

// ── weight names ────────────────────────────────────────────────────────────

describe('weight names', () => {
  it('maps both schemes onto the classic names', () => {
    const pairs: [string, string][] = [
      ['model.language_model.layers.0.mlp.up_proj.weight', 'language_model.model.layers.0.mlp.up_proj.weight'],
      ['model.language_model.embed_tokens.weight', 'language_model.model.embed_tokens.weight'],
      ['model.language_model.norm.weight', 'language_model.model.norm.weight'],
      ['model.vision_tower.vision_model.post_layernorm.bias', 'vision_tower.vision_model.post_layernorm.bias'],
      ['model.multi_modal_projector.linear.weight', 'multi_modal_projector.linear.weight'],
      ['lm_head.weight', 'language_model.lm_head.weight'],
    ];
    for (const [file, canonical] of pairs) {
      expect(canonicalName(file), file).to.equal(canonical);
      expect(canonicalName(canonical), canonical).to.equal(canonical);
      expect(newerName(canonical)).to.equal(file);
    }
    expect(canonicalName('something.else')).to.equal(undefined);
    expect(canonicalName('model.embed_tokens.weight')).to.equal(undefined);
  });

  it('expects every tensor with the shapes the config implies (GQA, heads·headDim ≠ hidden)', async () => {
    const dir = await makeTempDir('pg-names-');
    const tiny = await buildTinyCheckpoint(dir, gqaSpec());
    const shapes = expectedShapes(parseConfig(tiny.configJson, 'config.json'));
    expect([...shapes.keys()].sort()).to.deep.equal(Object.keys(tiny.weights).sort());
    const L = 'language_model.model.layers.1.self_attn';
    expect(shapes.get(`${L}.q_proj.weight`)).to.deep.equal([64, 48]);
    expect(shapes.get(`${L}.k_proj.weight`)).to.deep.equal([32, 48]);
    expect(shapes.get(`${L}.o_proj.weight`)).to.deep.equal([48, 64]);
    expect(shapes.get('vision_tower.vision_model.embeddings.patch_embedding.weight')).to.deep.equal([32, 3, 8, 8]);
    expect(shapes.get('vision_tower.vision_model.embeddings.position_embedding.weight')).to.deep.equal([9, 32]);
    expect(shapes.get('language_model.model.embed_tokens.weight')).to.deep.equal([TINY_TOKENIZER.vocabSize, 48]);
    expect(shapes.has('language_model.lm_head.weight')).to.equal(false);
    for (const [name, shape] of shapes) expect(tiny.weights[name].shape, name).to.deep.equal(shape);
  });
});

// ── whole checkpoints ───────────────────────────────────────────────────────

describe('loadCheckpoint', () => {
  const backend = new ReferenceBackend();

  async function tiny(prefix: string, spec: TinySpec): Promise<TinyCheckpoint> {
    return buildTinyCheckpoint(await makeTempDir(prefix), spec);
  }

  describe('a tiny F32 checkpoint (classic names, one file)', () => {
    let ck: TinyCheckpoint;
    let loaded: LoadedCheckpoint;
    const progress: LoadProgress[] = [];
    before(async () => {
      ck = await tiny('pg-load-', mqaSpec());
      loaded = await loadCheckpoint(ck.dir, backend, { onProgress: (p) => progress.push({ ...p }) });
    });

    it('loads every tensor exactly, with the config resolved', async () => {
      await expectMatchesFixture(backend, loaded, ck);
      expect(loaded.dir).to.equal(resolve(ck.dir));
      expect(loaded.weightDtype).to.equal('f32');
      expect(loaded.config.text).to.include({ hiddenSize: 64, numHeads: 4, numKvHeads: 1, headDim: 16, rmsNormEps: 1e-6, ropeTheta: 10000 });
      expect(loaded.config.vision).to.include({ imageSize: 16, patchSize: 4, numChannels: 3, layerNormEps: 1e-6 });
      expect(loaded.config).to.include({ numImageTokens: 16, imageTokenIndex: TINY_TOKENIZER.image, projectionDim: 64, torchDtype: 'f32' });
    });

    it('ties lm_head to embed_tokens (stored once)', () => {
      expect(loaded.weights.has('language_model.lm_head.weight')).to.equal(false);
      expect(loaded.weights.has('language_model.model.embed_tokens.weight')).to.equal(true);
    });

    it('reports progress up to the total bytes', () => {
      const want = Object.values(ck.weights).reduce((s, w) => s + 4 * w.data.length, 0);
      expect(loaded.totalBytes).to.equal(want);
      expect(progress.length).to.be.at.least(loaded.weights.size);
      for (let i = 1; i < progress.length; i++) expect(progress[i].loadedBytes).to.be.above(progress[i - 1].loadedBytes);
      expect(progress.at(-1)).to.include({ loadedBytes: want, totalBytes: want });
      expect(new Set(progress.map((p) => p.tensor)).size).to.equal(loaded.weights.size);
    });

    it('dispose releases every tensor once', async () => {
      const counting = new CountingBackend();
      const c = await loadCheckpoint(ck.dir, counting);
      expect(counting.live.size).to.equal(c.weights.size);
      c.dispose();
      c.dispose();
      expect(counting.live.size).to.equal(0);
      expect(c.weights.size).to.equal(0);
    });
  });

  it('the newer name scheme loads to the same tensors as the classic one', async () => {
    for (const spec of [mqaSpec(), gqaSpec()]) {
      const classic = await tiny('pg-classic-', spec);
      const newer = await tiny('pg-newer-', { ...spec, nameScheme: 'newer' });
      const raw = (await readFile(join(newer.dir, 'model.safetensors'))).toString('latin1');
      expect(raw).to.contain('"model.language_model.layers.0.mlp.up_proj.weight"');
      expect(raw).not.to.contain('"language_model.model.');
      const a = await loadCheckpoint(classic.dir, backend), b = await loadCheckpoint(newer.dir, backend);
      await expectMatchesFixture(backend, b, classic);
      const [wa, wb] = [await readAll(backend, a), await readAll(backend, b)];
      expect([...wb.keys()].sort()).to.deep.equal([...wa.keys()].sort());
      for (const [n, v] of wa) expect(bitsEqual(wb.get(n)!, v), n).to.equal(true);
    }
  });

  it('sharded checkpoints (2 and 3 shards, both schemes) equal the single file', async () => {
    const single = await tiny('pg-single-', mhaSpec());
    const one = await readAll(backend, await loadCheckpoint(single.dir, backend));
    for (const [shards, nameScheme] of [[2, 'classic'], [3, 'newer']] as const) {
      const sharded = await tiny('pg-shards-', { ...mhaSpec(), shards, nameScheme });
      const index = JSON.parse(await readFile(join(sharded.dir, 'model.safetensors.index.json'), 'utf8'));
      expect(new Set(Object.values(index.weight_map)).size).to.equal(shards);
      const progress: LoadProgress[] = [];
      const ck = await loadCheckpoint(sharded.dir, backend, { onProgress: (p) => progress.push(p) });
      const many = await readAll(backend, ck);
      expect([...many.keys()].sort()).to.deep.equal([...one.keys()].sort());
      for (const [n, v] of one) expect(bitsEqual(many.get(n)!, v), n).to.equal(true);
      expect(progress.at(-1)!.loadedBytes).to.equal(ck.totalBytes);
    }
  });

  for (const dtype of ['BF16', 'F16'] as const) {
    it(`${dtype} files widen exactly to the rounded values`, async () => {
      const f32 = await tiny('pg-f32-', gqaSpec());
      const half = await tiny(`pg-${dtype}-`, { ...gqaSpec(), dtype });
      const ck = await loadCheckpoint(half.dir, backend);
      expect(ck.weightDtype).to.equal(dtype.toLowerCase());
      expect(ck.config.torchDtype).to.equal(dtype === 'BF16' ? 'bf16' : 'f16');
      await expectMatchesFixture(backend, ck, half);
      const name = 'language_model.model.layers.0.mlp.up_proj.weight';
      expect(bitsEqual(half.weights[name].data, f32.weights[name].data), 'rounding changed values').to.equal(false);
      const roundedBits = dtype === 'BF16' ? f32ToBf16(f32.weights[name].data) : f32ToF16(f32.weights[name].data);
      const loadedBits = dtype === 'BF16' ? f32ToBf16(await backend.read(ck.weights.get(name)!)) : f32ToF16(await backend.read(ck.weights.get(name)!));
      expect([...loadedBits]).to.deep.equal([...roundedBits]);
      expect(ck.totalBytes).to.equal(Object.values(half.weights).reduce((s, w) => s + 2 * w.data.length, 0));
    });
  }

  it('uploads raw 16-bit bits when the backend stores that dtype, float32 otherwise', async () => {
    const half = await tiny('pg-native-', { ...mqaSpec(), dtype: 'BF16' });
    const native = new CountingBackend();
    native.native16 = ['bf16'];
    const a = await loadCheckpoint(half.dir, native);
    expect(native.uploads.every((u) => u.ctor === 'Uint16Array' && u.dtype === 'bf16')).to.equal(true);
    await expectMatchesFixture(native, a, half);
    const widening = new CountingBackend();
    widening.native16 = ['f16'];                                        // f16 yes, bf16 no
    await loadCheckpoint(half.dir, widening);
    expect(widening.uploads.every((u) => u.ctor === 'Float32Array' && u.dtype === 'f32')).to.equal(true);
  });

  it('keeps an untied lm_head, drops one that is a byte copy of embed_tokens', async () => {
    for (const nameScheme of ['classic', 'newer'] as const) {
      const untied = await tiny('pg-head-', { ...mqaSpec(), includeLmHead: true, nameScheme });
      const a = await loadCheckpoint(untied.dir, backend);
      expect(a.weights.has('language_model.lm_head.weight')).to.equal(true);
      await expectMatchesFixture(backend, a, untied);
      const copy = await tiny('pg-headcopy-', { ...mqaSpec(), includeLmHead: 'copy', nameScheme });
      const b = await loadCheckpoint(copy.dir, backend);
      expect(b.weights.has('language_model.lm_head.weight')).to.equal(false);
      expect(b.totalBytes).to.equal(a.totalBytes - 4 * untied.weights['language_model.lm_head.weight'].data.length);
    }
  });

  it('refuses extra tensors the architecture does not use, naming them', async () => {
    const ck = await tiny('pg-extra-', mqaSpec());
    const tensors: Record<string, WriterTensor> = Object.fromEntries(Object.entries(ck.weights));
    tensors['vision_tower.vision_model.head.probe'] = { data: new Float32Array(4), shape: [4] };
    tensors['some.other.thing'] = { data: new Float32Array(2), shape: [2] };
    await writeSafetensors(join(ck.dir, 'model.safetensors'), tensors);
    await expectUserError(loadCheckpoint(ck.dir, backend), 'vision_tower.vision_model.head.probe', 'some.other.thing', 'pooling head');
  });

  it('disposes what it uploaded when a later upload fails', async () => {
    const ck = await tiny('pg-fail-', mqaSpec());
    const failing = new CountingBackend();
    failing.failAt = 10;
    const e = await rejection(loadCheckpoint(ck.dir, failing));
    expect(e.message).to.contain('simulated');
    expect(failing.uploads.length).to.equal(10);
    expect(failing.live.size).to.equal(0);
  });

  describe('broken folders fail with a PaliGemmaError naming the culprit', () => {
    let base: TinyCheckpoint;
    before(async () => { base = await tiny('pg-broken-', mqaSpec()); });

    /** A copy of the base checkpoint's files, with weights rewritten by `tensors` when given. */
    async function variant(prefix: string, tensors?: Record<string, WriterTensor>): Promise<string> {
      const dir = await makeTempDir(prefix);
      for (const f of ['config.json', 'tokenizer.json', 'preprocessor_config.json']) {
        await writeFile(join(dir, f), await readFile(join(base.dir, f)));
      }
      await writeFile(join(dir, 'model.safetensors'),
        tensors ? encodeSafetensors(tensors) : await readFile(join(base.dir, 'model.safetensors')));
      return dir;
    }
    const baseTensors = (): Record<string, WriterTensor> => Object.fromEntries(Object.entries(base.weights));

    it('missing folder', async () => {
      const dir = join(base.dir, 'does-not-exist');
      await expectUserError(loadCheckpoint(dir, backend), 'does-not-exist', 'not found');
      await expectUserError(loadCheckpoint(join(base.dir, 'config.json'), backend), 'config.json', 'not a folder');
    });

    it('missing config.json, or config.json that is not JSON', async () => {
      const dir = await variant('pg-noconfig-');
      await rm(join(dir, 'config.json'));
      await expectUserError(loadCheckpoint(dir, backend), 'config.json', 'not found');
      await writeFile(join(dir, 'config.json'), '{"model_type": "paligemma",');
      await expectUserError(loadCheckpoint(dir, backend), 'config.json', 'not valid JSON');
    });

    it('config.json missing a required field', async () => {
      const dir = await variant('pg-cfgfield-');
      const j = clone(base.configJson) as Record<string, any>;
      delete j.vision_config.patch_size;
      await writeFile(join(dir, 'config.json'), JSON.stringify(j));
      await expectUserError(loadCheckpoint(dir, backend), 'config.json: missing required field vision_config.patch_size');
    });

    it('missing weights file', async () => {
      const dir = await variant('pg-noweights-');
      await rm(join(dir, 'model.safetensors'));
      await expectUserError(loadCheckpoint(dir, backend), 'model.safetensors', 'model.safetensors.index.json');
    });

    it('truncated model.safetensors', async () => {
      const dir = await variant('pg-trunc-');
      await truncate(join(dir, 'model.safetensors'), 5000);
      await expectUserError(loadCheckpoint(dir, backend), join(dir, 'model.safetensors'), 'past the end');
      await truncate(join(dir, 'model.safetensors'), 6);
      await expectUserError(loadCheckpoint(dir, backend), 'model.safetensors', '6 bytes');
    });

    it('header length past the end, corrupt JSON header, offsets past the end', async () => {
      const dir = await variant('pg-header-');
      const file = join(dir, 'model.safetensors');
      const good = await readFile(file);
      const bad = new Uint8Array(good);
      new DataView(bad.buffer).setBigUint64(0, BigInt(good.length), true);
      await writeFile(file, bad);
      await expectUserError(loadCheckpoint(dir, backend), file, 'header length');

      const garbled = new Uint8Array(good);
      garbled[8] = 0x5b;                                                // '{' → '['
      garbled[9] = 0x2c;
      await writeFile(file, garbled);
      await expectUserError(loadCheckpoint(dir, backend), file, 'not valid JSON');

      const n = base.weights['language_model.model.norm.weight'].data.length * 4;
      await writeFile(file, rawSafetensors({
        'language_model.model.norm.weight': { dtype: 'F32', shape: [n / 4], data_offsets: [0, n] },
      }, new Uint8Array(n - 8)));
      await expectUserError(loadCheckpoint(dir, backend), file, 'language_model.model.norm.weight', 'past the end');
    });

    it('a tensor whose shape disagrees with config.json (expected and found)', async () => {
      const t = baseTensors();
      const name = 'language_model.model.layers.1.self_attn.k_proj.weight';
      t[name] = { data: new Float32Array(32 * 64), shape: [32, 64] };  // 2 kv heads instead of 1
      const dir = await variant('pg-shape-', t);
      await expectUserError(loadCheckpoint(dir, backend), name, 'expected shape [16, 64]', 'found [32, 64]');
    });

    it('a missing tensor', async () => {
      const t = baseTensors();
      const name = 'vision_tower.vision_model.encoder.layers.1.mlp.fc2.bias';
      delete t[name];
      const dir = await variant('pg-missing-', t);
      await expectUserError(loadCheckpoint(dir, backend), `missing tensor ${name}`, 'model.safetensors');
    });

    it('a needed tensor in an unsupported dtype', async () => {
      const dir = await variant('pg-dtype-');
      const name = 'language_model.model.norm.weight';
      const tensors = baseTensors();
      delete tensors[name];
      const rest = encodeSafetensors(tensors);
      // Rebuild with the norm weight declared as I32 of the same size.
      const header = JSON.parse(Buffer.from(rest.subarray(8, 8 + Number(new DataView(rest.buffer).getBigUint64(0, true)))).toString());
      const dataStart = 8 + Number(new DataView(rest.buffer).getBigUint64(0, true));
      const data = rest.subarray(dataStart);
      const size = 4 * 64;
      header[name] = { dtype: 'I32', shape: [64], data_offsets: [data.length, data.length + size] };
      const all = new Uint8Array(data.length + size);
      all.set(data);
      await writeFile(join(dir, 'model.safetensors'), rawSafetensors(header, all));
      await expectUserError(loadCheckpoint(dir, backend), name, 'I32');
    });

    it('the same tensor twice (both schemes, or two shards)', async () => {
      const t = baseTensors();
      t['model.language_model.norm.weight'] = t['language_model.model.norm.weight'];
      await expectUserError(loadCheckpoint(await variant('pg-dup-', t), backend), 'duplicate tensor language_model.model.norm.weight');

      const sharded = await tiny('pg-dupshard-', { ...mqaSpec(), shards: 2 });
      const indexPath = join(sharded.dir, 'model.safetensors.index.json');
      const index = JSON.parse(await readFile(indexPath, 'utf8'));
      const [first, second] = [...new Set(Object.values(index.weight_map) as string[])];
      const extra = Object.keys(index.weight_map).find((n) => index.weight_map[n] === first)!;
      const secondTensors: Record<string, WriterTensor> = {};
      for (const [n, f] of Object.entries(index.weight_map)) if (f === second) secondTensors[n] = sharded.weights[n];
      secondTensors[extra] = sharded.weights[extra];
      await writeSafetensors(join(sharded.dir, second), secondTensors);
      await expectUserError(loadCheckpoint(sharded.dir, backend), `tensor ${extra}`, first, second);
    });

    it('shard paths outside the model folder are refused', async () => {
      const sharded = await tiny('pg-evil-', { ...mqaSpec(), shards: 2 });
      const indexPath = join(sharded.dir, 'model.safetensors.index.json');
      const index = JSON.parse(await readFile(indexPath, 'utf8'));
      const name = Object.keys(index.weight_map)[0];
      for (const evil of ['../evil.safetensors', '/etc/passwd', 'sub/../../evil.safetensors', 'C:\\evil.safetensors']) {
        await writeFile(indexPath, JSON.stringify({ ...index, weight_map: { ...index.weight_map, [name]: evil } }));
        await expectUserError(loadCheckpoint(sharded.dir, backend), 'model.safetensors.index.json', JSON.stringify(evil));
      }
      await writeFile(indexPath, JSON.stringify({ ...index, weight_map: { ...index.weight_map, [name]: 'gone.safetensors' } }));
      await expectUserError(loadCheckpoint(sharded.dir, backend), 'gone.safetensors', 'not found');
      await writeFile(indexPath, '{"weight_map": ');
      await expectUserError(loadCheckpoint(sharded.dir, backend), 'model.safetensors.index.json', 'not valid JSON');
      await writeFile(indexPath, '{"metadata": {}}');
      await expectUserError(loadCheckpoint(sharded.dir, backend), 'model.safetensors.index.json', 'weight_map');
    });
  });
});

async function collectParts(f: SafetensorsFile, name: string, n: number): Promise<number[]> {
  const firsts: number[] = [];
  await f.readStoredInto(name, new Float32Array(n), (_, first) => { firsts.push(first); });
  return firsts;
}
