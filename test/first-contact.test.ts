/** CLI conventions, images from stdin / URLs / Blobs, and refusing models we cannot run correctly. */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import sharp from 'sharp';
import { createPipeline } from '../src/create-pipeline.js';
import { PaliGemmaError } from '../src/interfaces/errors.js';
import { decodeToRgb } from '../src/image/siglip-image-processor.js';
import { runCli } from './support/run-cli.js';
import { buildTinyCheckpoint, makeTempDir, makeTestImage, mqaSpec } from './support/tiny-checkpoint.js';

const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };

describe('first contact', function () {
  let dir: string;
  let model: string;
  let png: Buffer;
  let server: Server;
  let base: string;

  before(async function () {
    dir = await makeTempDir('pg-first-');
    model = join(dir, 'model');
    await mkdir(model);
    await buildTinyCheckpoint(model, mqaSpec());
    const { data, width, height } = makeTestImage(30, 20, 3);
    png = await sharp(Buffer.from(data), { raw: { width, height, channels: 3 } }).png().toBuffer();
    await writeFile(join(dir, 'image.png'), png);
    let hops = 0;
    server = createServer((req, res) => {
      if (req.url === '/cat.png') { res.writeHead(200, { 'content-type': 'image/png' }); res.end(png); return; }
      if (req.url === '/moved') { res.writeHead(302, { location: '/cat.png' }); res.end(); return; }
      if (req.url === '/loop') { hops++; res.writeHead(302, { location: `/loop?${hops}` }); res.end(); return; }
      if (req.url?.startsWith('/loop?')) { hops++; res.writeHead(302, { location: `/loop?${hops}` }); res.end(); return; }
      if (req.url === '/big') { res.writeHead(200, { 'content-length': String(64 * 1024 * 1024) }); res.end(); return; }
      res.writeHead(404); res.end();
    });
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(function () { server.closeAllConnections(); server.close(); });

  it('--version and -V print the package version', function () {
    for (const flag of ['--version', '-V']) {
      const r = runCli([flag]);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout.trim()).to.equal(pkg.version);
    }
  });

  it('bare paligemma prints the help to stderr and exits 2', function () {
    const r = runCli([]);
    expect(r.code).to.equal(2);
    expect(r.stdout).to.equal('');
    expect(r.stderr).to.match(/Usage: paligemma/).and.to.match(/generate/);
  });

  it('subcommand help shows no empty-list defaults', function () {
    for (const cmd of ['conformance', 'generate', 'bench']) {
      const r = runCli([cmd, '--help']);
      expect(r.code).to.equal(0);
      expect(r.stdout).to.contain('--plugin');
      expect(r.stdout).not.to.contain('(default: [])');
    }
  });

  it('with --json an error is one JSON line with code and message, exit 2', function () {
    const r = runCli(['generate', '--model', model, '--image', join(dir, 'absent.png'), '--prompt', 'x', '--json']);
    expect(r.code).to.equal(2);
    const lines = r.stderr.trim().split('\n').filter((l) => l.startsWith('{'));
    expect(lines).to.have.length(1);
    const err = JSON.parse(lines[0]);
    expect(err.error.code).to.equal('not_found');
    expect(err.error.message).to.contain('absent.png');
    const usage = runCli(['generate', '--json', '--prompt', 'x']);
    expect(usage.code).to.equal(2);
    expect(JSON.parse(usage.stderr.trim()).error.code).to.equal('usage');
  });

  it('--image - reads the image from stdin and gives the same tokens as the file', function () {
    const args = ['generate', '--model', model, '--prompt', 'caption en', '--max-new-tokens', '4', '--json'];
    const fromFile = runCli([...args, '--image', join(dir, 'image.png')]);
    expect(fromFile.code, fromFile.stderr).to.equal(0);
    const fromStdin = spawnSync(process.execPath, ['bin/paligemma.js', ...args, '--image', '-'], { input: png, encoding: 'utf8' });
    expect(fromStdin.status, fromStdin.stderr).to.equal(0);
    expect(JSON.parse(fromStdin.stdout).tokens).to.deep.equal(JSON.parse(fromFile.stdout).tokens);
    const empty = spawnSync(process.execPath, ['bin/paligemma.js', ...args, '--image', '-'], { input: '', encoding: 'utf8' });
    expect(empty.status).to.equal(2);
    expect(JSON.parse(empty.stderr.trim().split('\n').pop()!).error.message).to.match(/^--image - \(stdin\): no bytes/);
  });

  it('decodes the same pixels from a path, a URL (after a redirect), bytes, an ArrayBuffer and a Blob', async function () {
    const want = await decodeToRgb(join(dir, 'image.png'));
    const ab = png.buffer.slice(png.byteOffset, png.byteOffset + png.byteLength);
    for (const input of [`${base}/cat.png`, new URL(`${base}/moved`), new Uint8Array(png), ab, new Blob([new Uint8Array(png)])]) {
      const got = await decodeToRgb(input as never);
      expect([got.width, got.height]).to.deep.equal([want.width, want.height]);
      expect(Buffer.from(got.data).equals(Buffer.from(want.data))).to.equal(true);
    }
  });

  it('refuses bad image URLs and inputs with one PaliGemmaError each', async function () {
    const cases: Array<[unknown, RegExp]> = [
      [`${base}/missing.png`, /HTTP 404/],
      [`${base}/loop`, /more than 5 redirects/],
      [`${base}/big`, /over the \d+-byte limit/],
      [null, /invalid image null/],
      [42, /invalid image 42/],
      [{ foo: 1 }, /invalid image: expected/],
    ];
    for (const [input, pattern] of cases) {
      let caught: unknown;
      try { await decodeToRgb(input as never); } catch (e) { caught = e; }
      expect(caught, String(input)).to.be.instanceOf(PaliGemmaError);
      expect((caught as Error).message).to.match(pattern);
    }
  });

  it('refuses an unknown text model by name instead of running it as PaliGemma 1', async function () {
    for (const [type, pattern] of [['llama', /model_type "llama" is not supported/]] as const) {
      const m = join(dir, `model-${type}`);
      await mkdir(m);
      await buildTinyCheckpoint(m, mqaSpec());
      const config = JSON.parse(await readFile(join(m, 'config.json'), 'utf8'));
      config.text_config.model_type = type;
      await writeFile(join(m, 'config.json'), JSON.stringify(config));
      let caught: unknown;
      try { await (await createPipeline({ model: m })).close(); } catch (e) { caught = e; }
      expect(caught, type).to.be.instanceOf(PaliGemmaError);
      expect((caught as Error).message).to.match(pattern);
      const r = runCli(['generate', '--model', m, '--image', join(dir, 'image.png'), '--prompt', 'x']);
      expect(r.code).to.equal(2);
      expect(r.stderr).to.match(pattern);
    }
  });
});

describe('lean install: optional backends', function () {
  const BIN = new URL('../bin/paligemma.js', import.meta.url).pathname;
  const HOOK = new URL('./support/hide-packages.mjs', import.meta.url).pathname;
  const ABSENT = ['webgpu', '@tensorflow/tfjs', '@tensorflow/tfjs-backend-wasm', '@tensorflow/tfjs-node', '@tensorflow/tfjs-node-gpu', 'onnxruntime-node', 'bullmq', 'ioredis'];
  const DEMO = new URL('../examples/demo.png', import.meta.url).pathname;

  /** The CLI in a process where the optional packages cannot be resolved, as after a lean install. */
  function runWithout(args: string[]) {
    const r = spawnSync(process.execPath, ['--import', HOOK, BIN, ...args], {
      env: { ...process.env, PALIGEMMA_TEST_HIDE: ABSENT.join(',') }, encoding: 'utf8', timeout: 120_000,
    });
    return { code: r.status ?? -1, stderr: r.stderr, stdout: r.stdout };
  }

  const cases: Array<[string, RegExp]> = [
    ['webgpu', /^error: the webgpu backend needs the webgpu package, which is not installed: npm install webgpu$/],
    ['tfjs', /^error: the tfjs backend needs TensorFlow\.js, which is not installed: npm install @tensorflow\/tfjs @tensorflow\/tfjs-backend-wasm$/],
    ['onnx', /^error: the onnx backend needs the onnxruntime-node package: npm install onnxruntime-node$/],
  ];
  for (const [backend, pattern] of cases) {
    it(`--backend ${backend} without its package is one line naming the npm install command, exit 2`, function () {
      const r = runWithout(['generate', '--backend', backend, '--image', DEMO, '--prompt', 'caption en', '--max-new-tokens', '2']);
      expect(r.code, r.stderr).to.equal(2);
      const lines = r.stderr.trim().split('\n').filter((l) => !l.startsWith('note: '));
      expect(lines, r.stderr).to.have.length(1);
      expect(lines[0]).to.match(pattern);
    });
  }

  it('the Redis batch commands without bullmq are one line naming the npm install command, exit 2', function () {
    const r = runWithout(['batch', 'status', '--queue', 'q', '--redis', 'redis://127.0.0.1:9']);
    expect(r.code, r.stderr).to.equal(2);
    expect(r.stderr.trim()).to.equal('error: the Redis batch commands need bullmq and ioredis: npm install bullmq ioredis');
  });

  it('the default backend runs with every optional package absent', function () {
    const r = runWithout(['generate', '--image', DEMO, '--prompt', 'caption en', '--max-new-tokens', '2', '--json']);
    expect(r.code, r.stderr).to.equal(0);
    const out = JSON.parse(r.stdout) as { tokens: number[]; backend: string };
    expect(out.tokens).to.have.length(2);
    expect(out.backend).to.match(/^reference/);
  });
});
