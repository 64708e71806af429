/**
 * A plugin's tokenizer and image processor, picked by name: createPipeline({ tokenizer,
 * imageProcessor }) and `--tokenizer` / `--image-processor` on the commands that run the model.
 *
 * The test plugin is a plain ESM file in a temp folder, loaded by path. It wraps the built-in
 * parts with an effect that can be predicted exactly: 'lower' lower-cases text before the hf
 * tokenizer encodes it, 'flip' mirrors the decoded image before SigLIP preprocessing. So a run
 * with them on ('CAPTION EN', image) must give what the built-in parts give on
 * ('caption en', mirrored image), and differ from what they give on the original inputs.
 * It imports the SDK's sources by absolute URL (tsx runs them both in mocha and in the command
 * of a source checkout), so no build is needed.
 */
import { expect } from 'chai';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import sharp from 'sharp';
import {
  HfTokenizer, PaliGemmaError, SiglipImageProcessor, createPipeline, type GenerationResult, type PaliGemmaPipeline,
} from '../src/index.js';
import { expectUserError, runCli, type CliRun } from './support/run-cli.js';
import { buildTinyCheckpoint, makeTempDir, makeTestImage, mqaSpec } from './support/tiny-checkpoint.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SDK = pathToFileURL(join(ROOT, 'src', 'index.ts')).href;
const SIGLIP = pathToFileURL(join(ROOT, 'src', 'image', 'siglip-image-processor.ts')).href;

const PLUGIN_SOURCE = `
import {
  definePlugin, BackendContribution, ImageProcessorContribution, TokenizerContribution,
  HfTokenizer, SiglipImageProcessor, ReferenceBackend,
} from ${JSON.stringify(SDK)};
import { decodeToRgb } from ${JSON.stringify(SIGLIP)};

const mark = (line) => { if (process.env.PG_PART_MARKERS) process.stderr.write(line + '\\n'); };

/** Backends 'watched' started and closed (this module is imported once per process). */
export const backends = { started: 0, closed: 0 };

class LowerTokenizer {
  constructor(inner) { this.inner = inner; }
  get vocabSize() { return this.inner.vocabSize; }
  get special() { return this.inner.special; }
  encode(text) { mark('lower tokenizer: encode'); return this.inner.encode(text.toLowerCase()); }
  decode(ids, opts) { return this.inner.decode(ids, opts); }
  idToToken(id) { return this.inner.idToToken(id); }
}

class FlipImageProcessor {
  constructor(inner) { this.inner = inner; }
  async process(image) {
    mark('flip image processor: process');
    const { data, width, height } = await decodeToRgb(image);
    const out = new Uint8Array(data.length);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        for (let c = 0; c < 3; c++) out[(y * width + x) * 3 + c] = data[(y * width + width - 1 - x) * 3 + c];
      }
    }
    return this.inner.processRgb({ data: out, width, height });
  }
}

export default definePlugin('test-parts', ({ bind }) => {
  bind(TokenizerContribution).toConstantValue({
    name: 'lower', description: 'hf, lower-casing text before encoding',
    load: async (dir) => new LowerTokenizer(await HfTokenizer.fromDir(dir)),
  });
  bind(TokenizerContribution).toConstantValue({
    name: 'broken', description: 'fails to load', load: async () => { throw new Error('tokenizer cannot load'); },
  });
  bind(ImageProcessorContribution).toConstantValue({
    name: 'flip', description: 'siglip on the mirrored image',
    load: async (dir, size) => new FlipImageProcessor(await SiglipImageProcessor.fromDir(dir, size)),
  });
  bind(ImageProcessorContribution).toConstantValue({
    name: 'broken', description: 'fails to load', load: async () => { throw new Error('image processor cannot load'); },
  });
  bind(BackendContribution).toConstantValue({
    name: 'watched', description: 'reference, counting starts and closes',
    create: () => {
      backends.started++;
      const backend = new ReferenceBackend();
      const close = backend.close?.bind(backend);
      backend.close = async () => { backends.closed++; await close?.(); };
      return backend;
    },
  });
});
`;


async function expectRejects(p: Promise<unknown>, pattern: RegExp, type: new (...a: never[]) => Error = PaliGemmaError): Promise<void> {
  try {
    await p;
  } catch (e) {
    expect(e, String(e)).to.be.instanceOf(type);
    expect((e as Error).message).to.match(pattern);
    return;
  }
  throw new Error(`expected a rejection matching ${pattern}`);
}

/** Raw RGB pixels mirrored left to right. */
function mirror(img: { data: Uint8Array; width: number; height: number; channels: 3 }): typeof img {
  const out = new Uint8Array(img.data.length);
  for (let y = 0; y < img.height; y++) {
    for (let x = 0; x < img.width; x++) {
      for (let c = 0; c < 3; c++) out[(y * img.width + x) * 3 + c] = img.data[(y * img.width + img.width - 1 - x) * 3 + c];
    }
  }
  return { ...img, data: out };
}

describe('plugin tokenizers and image processors, picked by name', function () {
  this.timeout(300_000);
  let dir: string;
  let model: string;
  let plugin: string;
  let imagePath: string;
  let mirroredPath: string;
  let watched: { started: number; closed: number };
  const image = makeTestImage(40, 30, 7);
  const mirrored = mirror(image);
  const steps = { maxNewTokens: 8 };

  before(async function () {
    dir = await makeTempDir('pg-plugin-parts-');
    model = join(dir, 'model');
    await mkdir(model);
    await buildTinyCheckpoint(model, { ...mqaSpec(), includeLmHead: true });
    plugin = join(dir, 'parts.mjs');
    await writeFile(plugin, PLUGIN_SOURCE);
    watched = (await import(pathToFileURL(plugin).href)).backends;
    const png = (img: typeof image, file: string) =>
      sharp(Buffer.from(img.data), { raw: { width: img.width, height: img.height, channels: 3 } }).png().toFile(file);
    imagePath = join(dir, 'image.png');
    mirroredPath = join(dir, 'mirrored.png');
    await png(image, imagePath);
    await png(mirrored, mirroredPath);
  });

  describe('createPipeline', function () {
    let ours: PaliGemmaPipeline;
    let plain: PaliGemmaPipeline;
    let oursResult: GenerationResult;

    before(async function () {
      ours = await createPipeline({ model, tokenizer: 'lower', imageProcessor: 'flip', plugins: [plugin] });
      plain = await createPipeline({ model });
      oursResult = await ours.generate(image, 'CAPTION EN', steps);
    });
    after(async function () {
      await ours?.close();
      await plain?.close();
    });

    it("uses the named parts: the plugin's tokenizer lower-cases, its image processor mirrors", async function () {
      const hf = await HfTokenizer.fromDir(model);
      expect(ours.tokenizer.encode('CAPTION EN')).to.deep.equal(hf.encode('caption en'));
      expect(plain.tokenizer.encode('CAPTION EN')).not.to.deep.equal(hf.encode('caption en'));

      const siglip = await SiglipImageProcessor.fromDir(model, ours.model.config.vision.imageSize);
      const flipped = await ours.imageProcessor.process(image);
      expect(Array.from(flipped.data)).to.deep.equal(Array.from((await siglip.process(mirrored)).data));
      expect(Array.from((await plain.imageProcessor.process(image)).data)).not.to.deep.equal(Array.from(flipped.data));
    });

    it('generates what the built-in parts give on the lower-cased prompt and mirrored image, not on the originals', async function () {
      const expected = await plain.generate(mirrored, 'caption en', steps);
      const original = await plain.generate(image, 'CAPTION EN', steps);
      expect(oursResult.tokens).to.deep.equal(expected.tokens);
      expect(oursResult.text).to.equal(expected.text);
      expect(oursResult.tokens).not.to.deep.equal(original.tokens);            // so the check above can fail
    });

    it('still takes instances', async function () {
      const byInstance = await createPipeline({ model, tokenizer: ours.tokenizer, imageProcessor: ours.imageProcessor });
      try {
        expect(byInstance.tokenizer).to.equal(ours.tokenizer);
        expect(byInstance.imageProcessor).to.equal(ours.imageProcessor);
        expect((await byInstance.generate(image, 'CAPTION EN', steps)).tokens).to.deep.equal(oursResult.tokens);
      } finally {
        await byInstance.close();
      }
    });

    it('an unknown name fails listing the available ones, before a backend starts', async function () {
      const before = { ...watched };
      await expectRejects(createPipeline({ model, backend: 'watched', tokenizer: 'nope', plugins: [plugin] }),
        /^unknown tokenizer 'nope' \(available: hf, lower, broken\)$/);
      await expectRejects(createPipeline({ model, backend: 'watched', imageProcessor: 'nope', plugins: [plugin] }),
        /^unknown image processor 'nope' \(available: siglip, flip, broken\)$/);
      await expectRejects(createPipeline({ model, tokenizer: 'lower' }), /^unknown tokenizer 'lower' \(available: hf\)$/);
      expect(watched).to.deep.equal(before);
    });

    it('a part that fails to load closes the backend that was started for it', async function () {
      const before = { ...watched };
      await expectRejects(createPipeline({ model, backend: 'watched', tokenizer: 'broken', plugins: [plugin] }),
        /^tokenizer broken load\(\) failed: tokenizer cannot load$/);
      await expectRejects(createPipeline({ model, backend: 'watched', imageProcessor: 'broken', plugins: [plugin] }),
        /^image processor broken load\(\) failed: image processor cannot load$/);
      expect(watched).to.deep.equal({ started: before.started + 2, closed: before.closed + 2 });
    });
  });

  describe('the command: --tokenizer and --image-processor', function () {
    const markers = { PG_PART_MARKERS: '1' };
    const generate = (img: string, prompt: string, extra: string[] = []) => runCli(['generate', '--model', model, '--image', img,
      '--prompt', prompt, '--max-new-tokens', String(steps.maxNewTokens), '--json', ...extra], { env: markers });
    const score = (img: string, prompt: string, suffix: string, extra: string[] = []) => runCli(['score', '--model', model,
      '--image', img, '--prompt', prompt, '--suffix', suffix, '--json', ...extra], { env: markers });
    const json = (r: CliRun) => {
      expect(r.code, r.stderr).to.equal(0);
      return JSON.parse(r.stdout);
    };
    const flags = () => ['--plugin', plugin, '--tokenizer', 'lower', '--image-processor', 'flip'];

    it('generate runs on the named parts, as createPipeline does', async function () {
      const r = generate(imagePath, 'CAPTION EN', flags());
      const ours = json(r);
      expect(r.stderr).to.match(/^lower tokenizer: encode$/m);
      expect(r.stderr).to.match(/^flip image processor: process$/m);
      const expected = json(generate(mirroredPath, 'caption en'));
      const loadedOnly = generate(imagePath, 'CAPTION EN', ['--plugin', plugin]);   // the plugin loaded, its parts not picked
      expect(loadedOnly.stderr).not.to.match(/lower tokenizer|flip image processor/);
      expect(ours.tokens).to.deep.equal(expected.tokens);
      expect(ours.text).to.equal(expected.text);
      expect(ours.tokens).not.to.deep.equal(json(loadedOnly).tokens);

      const api = await createPipeline({ model, tokenizer: 'lower', imageProcessor: 'flip', plugins: [plugin] });
      try {
        expect((await api.generate(imagePath, 'CAPTION EN', steps)).tokens).to.deep.equal(ours.tokens);
      } finally {
        await api.close();
      }
    });

    it('score takes them too', function () {
      const r = score(imagePath, 'CAPTION EN', 'A CAT', flags());
      const ours = json(r);
      expect(r.stderr).to.match(/^lower tokenizer: encode$/m);
      expect(r.stderr).to.match(/^flip image processor: process$/m);
      const expected = json(score(mirroredPath, 'caption en', 'a cat'));
      expect(ours.tokens).to.deep.equal(expected.tokens);
      expect(ours.total).to.equal(expected.total);
      expect(ours.total).not.to.equal(json(score(imagePath, 'CAPTION EN', 'A CAT', ['--plugin', plugin])).total);
    });

    it('an unknown name exits 2 with one error line naming the available ones', function () {
      expectUserError(generate(imagePath, 'x', ['--tokenizer', 'nope']), /^error: unknown tokenizer 'nope' \(available: hf\)$/, { allowNotes: true });
      expectUserError(generate(imagePath, 'x', ['--plugin', plugin, '--tokenizer', 'nope']),
        /^error: unknown tokenizer 'nope' \(available: hf, lower, broken\)$/, { allowNotes: true });
      expectUserError(generate(imagePath, 'x', ['--image-processor', 'nope']), /^error: unknown image processor 'nope' \(available: siglip\)$/, { allowNotes: true });
      expectUserError(score(imagePath, 'x', 'y', ['--plugin', plugin, '--image-processor', 'nope']),
        /^error: unknown image processor 'nope' \(available: siglip, flip, broken\)$/, { allowNotes: true });
    });

    it('--help lists both flags on generate and score', function () {
      for (const cmd of ['generate', 'score']) {
        const r = runCli([cmd, '--help']);
        expect(r.code, r.stderr).to.equal(0);
        expect(r.stdout, cmd).to.match(/--tokenizer <name>\s+tokenizer \(default: hf/);
        expect(r.stdout, cmd).to.match(/--image-processor <name>\s+image processor \(default: siglip\)/);
      }
    });
  });
});
