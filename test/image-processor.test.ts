import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { crc32, deflateSync } from 'node:zlib';
import sharp from 'sharp';
import { PaliGemmaError } from '../src/interfaces/errors.js';
import { pilResize, resampleCoefficients, type PilFilter } from '../src/image/pil-bicubic.js';
import { decodeToRgb, SiglipImageProcessor } from '../src/image/siglip-image-processor.js';

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'pil-resize');

interface Case {
  input: string; inputWidth: number; inputHeight: number; inputMode: string;
  width: number; height: number; filter: PilFilter; output: string;
}
interface Manifest { pillow: string; cases: Case[] }

const maxAbsDiff = (a: Uint8Array, b: Uint8Array): { max: number; differing: number; mean: number } => {
  expect(a.length).to.equal(b.length);
  let max = 0, differing = 0, sum = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (d) differing++;
    if (d > max) max = d;
    sum += d;
  }
  return { max, differing, mean: sum / a.length };
};

async function expectRejects(p: Promise<unknown>, ...parts: string[]): Promise<void> {
  let caught: unknown;
  try { await p; } catch (e) { caught = e; }
  expect(caught, 'expected a PaliGemmaError').to.be.instanceOf(PaliGemmaError);
  for (const part of parts) expect((caught as Error).message).to.contain(part);
  expect((caught as Error).message).not.to.contain('\n');
}

/** The reference's float steps: float64 rescale stored as float32, then float32 normalize. */
const hfPixel = (v: number, mean = 0.5, std = 0.5): number =>
  Math.fround(Math.fround(Math.fround(v * (1 / 255)) - Math.fround(mean)) / Math.fround(std));

describe('SigLIP image processor', () => {
  describe('Pillow-exact resize (fixtures from test/fixtures/make-pil-reference.py)', () => {
    let manifest: Manifest;
    const rows: string[] = [];
    before(async () => { manifest = JSON.parse(await readFile(join(FIXTURES, 'manifest.json'), 'utf8')); });
    after(() => {
      if (rows.length) console.log(`\n    ours / sharp 'cubic' vs Pillow ${manifest.pillow} (max |Δ| in uint8 units, mean |Δ|, differing values):\n${rows.join('\n')}\n`);
    });

    it('has fixtures', () => { expect(manifest.cases.length).to.be.at.least(10); });

    // One test per fixture, named after it; the list is read synchronously so mocha sees them.
    const list: Manifest = JSON.parse(readFileSync(join(FIXTURES, 'manifest.json'), 'utf8'));
    for (const c of list.cases) {
      it(`${c.input} (${c.inputMode}) → ${c.width}×${c.height} ${c.filter}: within 1/255 of Pillow`, async () => {
        const bytes = await readFile(join(FIXTURES, c.input));
        const ref = new Uint8Array(await readFile(join(FIXTURES, c.output)));
        const rgb = await decodeToRgb(bytes);
        expect([rgb.width, rgb.height]).to.deep.equal([c.inputWidth, c.inputHeight]);
        const ours = pilResize(rgb.data, rgb.width, rgb.height, 3, c.width, c.height, c.filter);
        const mine = maxAbsDiff(ours, ref);

        let sharpNote = '';
        if (c.filter === 'bicubic' && (c.width !== c.inputWidth || c.height !== c.inputHeight)) {
          const s = await sharp(bytes).toColourspace('srgb').removeAlpha()
            .resize(c.width, c.height, { kernel: 'cubic', fit: 'fill' }).raw().toBuffer();
          const theirs = maxAbsDiff(new Uint8Array(s), ref);
          sharpNote = `   sharp cubic ${String(theirs.max).padStart(3)} (mean ${theirs.mean.toFixed(2)}, ${theirs.differing}/${ref.length})`;
        }
        rows.push(`      ${`${c.input} → ${c.width}×${c.height} ${c.filter}`.padEnd(46)} ours ${mine.max} (${mine.differing}/${ref.length})${sharpNote}`);
        expect(mine.max, `max |ours - Pillow|, ${mine.differing} values differ`).to.be.at.most(1);
      });
    }
  });

  describe('resize internals', () => {
    it('weights are the a = -0.5 cubic: identity at scale 1, sum to 1 (fixed point)', () => {
      const same = resampleCoefficients(10, 10);
      for (let o = 0; o < 10; o++) {
        const first = same.bounds[2 * o], count = same.bounds[2 * o + 1];
        const w = Array.from(same.weights.subarray(o * same.ksize, o * same.ksize + count));
        expect(w[o - first]).to.equal(2 ** 22);
      }
      for (const [inSize, outSize] of [[300, 224], [97, 16], [10, 64]]) {
        const { ksize, bounds, weights } = resampleCoefficients(inSize, outSize);
        for (let o = 0; o < outSize; o++) {
          let sum = 0;
          for (let t = 0; t < bounds[2 * o + 1]; t++) sum += weights[o * ksize + t];
          expect(Math.abs(sum - 2 ** 22)).to.be.at.most(ksize);
        }
      }
    });

    it('keeps a constant image constant and copies when the size is unchanged', () => {
      const flat = new Uint8Array(13 * 9 * 3).fill(77);
      expect(pilResize(flat, 13, 9, 3, 40, 5).every((v) => v === 77)).to.equal(true);
      const src = Uint8Array.from({ length: 4 * 3 * 3 }, (_, i) => i * 7);
      const copy = pilResize(src, 4, 3, 3, 4, 3);
      expect(Array.from(copy)).to.deep.equal(Array.from(src));
      expect(copy).not.to.equal(src);
    });
  });

  describe('processing', () => {
    it('outputs CHW float32 normalized exactly like the reference float steps', async () => {
      const proc = new SiglipImageProcessor({ size: 224 });
      const bytes = await readFile(join(FIXTURES, 'pattern-300x200.png'));
      const ref = new Uint8Array(await readFile(join(FIXTURES, 'pattern-300x200-to-224x224-bicubic.bin')));
      const { data, shape } = await proc.process(bytes);
      expect(shape).to.deep.equal([3, 224, 224]);
      expect(data).to.be.instanceOf(Float32Array);
      let max = 0;
      for (let c = 0; c < 3; c++) {
        for (let i = 0; i < 224 * 224; i++) max = Math.max(max, Math.abs(data[c * 224 * 224 + i] - hfPixel(ref[3 * i + c])));
      }
      expect(max).to.be.at.most(2 / 255 + 1e-6); // ≤ 1 uint8 step after (x/255 - 0.5)/0.5
    });

    it("is bit-exact with transformers' Pillow-backed SiglipImageProcessor (make-hf-reference.py)", async () => {
      const hf = JSON.parse(await readFile(join(FIXTURES, '..', 'hf-reference.json'), 'utf8')) as {
        versions: Record<string, string>; image: string; imageSize: number; pixelValues: number[];
      };
      const proc = new SiglipImageProcessor({ size: hf.imageSize });
      const { data } = await proc.process(join(FIXTURES, '..', hf.image));
      expect(data.length).to.equal(hf.pixelValues.length);
      let max = 0;
      for (let i = 0; i < data.length; i++) max = Math.max(max, Math.abs(data[i] - Math.fround(hf.pixelValues[i])));
      expect(max, `max |ours - transformers ${hf.versions.transformers}|`).to.equal(0);
    });

    it('maps 0 → -1 and 255 → 1 with the defaults, and follows mean/std/rescale options', async () => {
      const px = Uint8Array.of(0, 128, 255, 10, 20, 30);
      const raw = { data: px, width: 2, height: 1, channels: 3 as const };
      const def = await new SiglipImageProcessor({ size: { height: 1, width: 2 } }).process(raw);
      expect(Array.from(def.data)).to.deep.equal([0, 10, 128, 20, 255, 30].map((v) => hfPixel(v)));
      expect(def.data[0]).to.equal(-1);
      expect(def.data[4]).to.equal(1);

      const custom = new SiglipImageProcessor({
        size: { height: 1, width: 2 }, imageMean: [0.48145466, 0.4578275, 0.40821073], imageStd: [0.26862954, 0.26130258, 0.27577711],
      });
      const c = await custom.process(raw);
      expect(c.data[0]).to.equal(hfPixel(0, 0.48145466, 0.26862954));
      expect(c.data[2]).to.equal(hfPixel(128, 0.4578275, 0.26130258));
      expect(c.data[5]).to.equal(hfPixel(30, 0.40821073, 0.27577711));

      const noNorm = await new SiglipImageProcessor({ size: { height: 1, width: 2 }, doNormalize: false }).process(raw);
      expect(noNorm.data[4]).to.equal(1);
      expect(noNorm.data[2]).to.equal(Math.fround(128 / 255));
      const noRescale = await new SiglipImageProcessor({ size: { height: 1, width: 2 }, doRescale: false, imageMean: 0, imageStd: 1 }).process(raw);
      expect(Array.from(noRescale.data)).to.deep.equal([0, 10, 128, 20, 255, 30]);
    });

    it('drops alpha without compositing (raw RGBA and RGBA PNG)', async () => {
      const rgb = Uint8Array.from({ length: 5 * 4 * 3 }, (_, i) => (i * 37) % 256);
      const rgba = new Uint8Array(5 * 4 * 4);
      for (let i = 0; i < 20; i++) { rgba.set(rgb.subarray(3 * i, 3 * i + 3), 4 * i); rgba[4 * i + 3] = (i * 13) % 256; }
      const proc = new SiglipImageProcessor({ size: 8 });
      const a = await proc.process({ data: rgb, width: 5, height: 4, channels: 3 });
      const b = await proc.process({ data: rgba, width: 5, height: 4, channels: 4 });
      expect(Array.from(b.data)).to.deep.equal(Array.from(a.data));
      const png = await sharp(Buffer.from(rgba), { raw: { width: 5, height: 4, channels: 4 } }).png().toBuffer();
      const c = await proc.process(png);
      expect(Array.from(c.data)).to.deep.equal(Array.from(a.data));
    });

    it('expands grey images to three equal channels', async () => {
      const grey = Uint8Array.from({ length: 6 * 5 }, (_, i) => i * 8);
      const png = await sharp(Buffer.from(grey), { raw: { width: 6, height: 5, channels: 1 } }).png().toBuffer();
      const { data } = await new SiglipImageProcessor({ size: 4 }).process(png);
      const plane = 16;
      for (let i = 0; i < plane; i++) {
        expect(data[plane + i]).to.equal(data[i]);
        expect(data[2 * plane + i]).to.equal(data[i]);
      }
      const rgb = await decodeToRgb(png);
      expect(Array.from(rgb.data.subarray(0, 6))).to.deep.equal([0, 0, 0, 8, 8, 8]);
    });

    it('applies EXIF orientation like transformers.load_image', async () => {
      const src = Uint8Array.from({ length: 6 * 2 * 3 }, (_, i) => (i % 3 === 0 ? 255 : 0));
      const jpeg = await sharp(Buffer.from(src), { raw: { width: 6, height: 2, channels: 3 } }).jpeg().withMetadata({ orientation: 6 }).toBuffer();
      const rgb = await decodeToRgb(jpeg);
      expect([rgb.width, rgb.height]).to.deep.equal([2, 6]);
    });

    it('ignores an embedded ICC profile, as Pillow does', async () => {
      const pixels = Uint8Array.from({ length: 4 * 4 * 3 }, (_, i) => (i * 53) % 256);
      const tagged = await sharp(Buffer.from(pixels), { raw: { width: 4, height: 4, channels: 3 } }).withIccProfile('p3').png().toBuffer();
      const profile = (await sharp(tagged).metadata()).icc!;
      const plain = await sharp(Buffer.from(pixels), { raw: { width: 4, height: 4, channels: 3 } }).png().toBuffer();
      const png = withIccChunk(plain, profile); // same stored pixels, now tagged Display P3
      expect((await sharp(png).metadata()).icc?.length).to.equal(profile.length);
      expect(Array.from((await decodeToRgb(png)).data)).to.deep.equal(Array.from(pixels));
    });

    it('decodes WebP', async () => {
      const src = new Uint8Array(8 * 8 * 3).fill(200);
      const webp = await sharp(Buffer.from(src), { raw: { width: 8, height: 8, channels: 3 } }).webp({ lossless: true }).toBuffer();
      const rgb = await decodeToRgb(webp);
      expect(rgb.data.every((v) => v === 200)).to.equal(true);
    });
  });

  describe('configuration', () => {
    let dir: string;
    beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'pg-img-')); });
    afterEach(async () => { await rm(dir, { recursive: true, force: true }); });

    it('uses defaults when preprocessor_config.json is absent', async () => {
      const p = await SiglipImageProcessor.fromDir(dir, 224);
      expect(p).to.include({ height: 224, width: 224, rescaleFactor: 1 / 255, doResize: true, doRescale: true, doNormalize: true, filter: 'bicubic' });
      expect(p.mean).to.deep.equal([0.5, 0.5, 0.5]);
      expect(p.std).to.deep.equal([0.5, 0.5, 0.5]);
    });

    it("reads PaliGemma's preprocessor_config.json", async () => {
      await writeFile(join(dir, 'preprocessor_config.json'), JSON.stringify({
        do_convert_rgb: null, do_normalize: true, do_rescale: true, do_resize: true,
        image_mean: [0.5, 0.5, 0.5], image_processor_type: 'SiglipImageProcessor', image_seq_length: 256,
        image_std: [0.5, 0.5, 0.5], processor_class: 'PaliGemmaProcessor', resample: 3,
        rescale_factor: 0.00392156862745098, size: { height: 224, width: 224 },
      }));
      const p = await SiglipImageProcessor.fromDir(dir, 224);
      expect(p).to.include({ height: 224, width: 224, filter: 'bicubic', rescaleFactor: 0.00392156862745098 });
      await writeFile(join(dir, 'preprocessor_config.json'), JSON.stringify({ resample: 2, image_mean: 0.25, do_normalize: false }));
      const q = await SiglipImageProcessor.fromDir(dir, 16);
      expect(q).to.include({ height: 16, filter: 'bilinear', doNormalize: false });
      expect(q.mean).to.deep.equal([0.25, 0.25, 0.25]);
    });

    it('names preprocessor_config.json when it is wrong', async () => {
      const file = join(dir, 'preprocessor_config.json');
      await writeFile(file, '{"size": ');
      await expectRejects(SiglipImageProcessor.fromDir(dir, 224), 'preprocessor_config.json', 'not valid JSON');
      await writeFile(file, JSON.stringify({ size: { height: 448, width: 448 } }));
      await expectRejects(SiglipImageProcessor.fromDir(dir, 224), file, '448×448', '224');
      await writeFile(file, JSON.stringify({ resample: 0 }));
      await expectRejects(SiglipImageProcessor.fromDir(dir, 224), file, 'resample 0');
      await writeFile(file, JSON.stringify({ image_std: [0.5, 0.5] }));
      await expectRejects(SiglipImageProcessor.fromDir(dir, 224), file, 'image_std');
      await writeFile(file, JSON.stringify({ do_resize: 'yes' }));
      await expectRejects(SiglipImageProcessor.fromDir(dir, 224), file, 'do_resize');
    });
  });

  describe('errors', () => {
    const proc = new SiglipImageProcessor({ size: 16 });
    let dir: string;
    before(async () => { dir = await mkdtemp(join(tmpdir(), 'pg-img-')); });
    after(async () => { await rm(dir, { recursive: true, force: true }); });

    it('names a missing image file', async () => {
      const path = join(dir, 'nope.png');
      await expectRejects(proc.process(path), 'image not found', path);
    });

    it('names an unreadable or corrupt image', async () => {
      const text = join(dir, 'notes.png');
      await writeFile(text, 'this is not an image');
      await expectRejects(proc.process(text), 'cannot decode', text);
      const png = await readFile(join(FIXTURES, 'pattern-97x61.png'));
      const truncated = join(dir, 'truncated.png');
      await writeFile(truncated, png.subarray(0, Math.floor(png.length / 2)));
      await expectRejects(proc.process(truncated), 'cannot decode', truncated);
      await expectRejects(proc.process(new Uint8Array(100).fill(7)), 'cannot decode', 'image bytes (100 bytes)');
      await expectRejects(proc.process(new Uint8Array(0)), 'cannot decode', 'empty');
      await expectRejects(proc.process(dir), 'cannot read image', dir);
    });

    it('rejects raw pixels whose size does not add up', async () => {
      await expectRejects(proc.process({ data: new Uint8Array(10), width: 2, height: 2, channels: 3 }), 'raw pixels', '12 bytes');
      await expectRejects(proc.process({ data: new Uint8Array(12), width: 2, height: 2, channels: 2 as 3 }), 'raw pixels', 'channels');
    });

    it('rejects a wrong-size image when do_resize is false', async () => {
      const p = new SiglipImageProcessor({ size: 4, doResize: false });
      await expectRejects(p.process({ data: new Uint8Array(27), width: 3, height: 3, channels: 3 }), '3×3', 'do_resize');
    });

    it('rejects bad options', () => {
      expect(() => new SiglipImageProcessor({ size: 0 })).to.throw(PaliGemmaError, 'size');
      expect(() => new SiglipImageProcessor({ size: 4, imageStd: 0 })).to.throw(PaliGemmaError, 'image_std');
      expect(() => new SiglipImageProcessor({ size: 4, resample: 'nearest' as PilFilter })).to.throw(PaliGemmaError, 'resample');
    });
  });
});

/** Inserts an iCCP chunk right after IHDR (PNG layout: 8-byte signature, then IHDR of 25 bytes). */
function withIccChunk(png: Buffer, profile: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from('icc\0\0', 'latin1'), deflateSync(profile)]);
  const type = Buffer.from('iCCP', 'latin1');
  const len = Buffer.alloc(4); len.writeUInt32BE(body.length);
  const crc = Buffer.alloc(4); crc.writeUInt32BE(crc32(Buffer.concat([type, body])));
  return Buffer.concat([png.subarray(0, 33), len, type, body, crc, png.subarray(33)]);
}
