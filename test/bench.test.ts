/**
 * `paligemma bench` (its JSON contract at a tiny size; never timed assertions) and the reference
 * backend's fast matmul, which must give the JS kernel's results bit for bit.
 */
import 'reflect-metadata';
import { expect } from 'chai';
import { configureMatmul, matmulEngineInfo, matmulTransposedBJs } from '../src/backends/reference/matmul.js';
import { ReferenceBackend } from '../src/backends/reference/reference-backend.js';
import { WasmMatmul } from '../src/backends/reference/wasm-matmul.js';
import { benchConfig, elementsOf, phaseCosts, weightSpecs } from '../src/bench/paligemma-shapes.js';
import { benchCommand } from '../src/cli/bench-command.js';
import { PaliGemmaError } from '../src/interfaces/errors.js';
import { rand } from './support/seeded-values.js';

/** Index of the first element whose bits differ (any NaN equals any NaN), or -1. */
function firstDifference(a: Float32Array, b: Float32Array): number {
  expect(a.length).to.equal(b.length);
  for (let i = 0; i < a.length; i++) {
    if (!Object.is(a[i], b[i]) && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) return i;
  }
  return -1;
}

describe('reference matmul: wasm SIMD kernel', function () {
  const engines: Array<[string, WasmMatmul]> = [];

  before(function () {
    engines.push(
      ['1 thread', new WasmMatmul({ threads: 1 })],
      ['2 threads', new WasmMatmul({ threads: 2, minThreadedMacs: 0 })],
      // Tiny budgets: many chunks of A rows and B rows, one C block per chunk, 3 threads.
      ['3 threads, tiny chunks', new WasmMatmul({ threads: 3, minThreadedMacs: 0, stageBytes: { a: 6000, b: 3000, c: 700 } })],
    );
  });

  after(function () {
    for (const [, e] of engines) e.close();
  });

  const sizes: Array<[number, number, number]> = [];
  for (const m of [1, 3, 4, 5, 17]) for (const k of [1, 3, 5, 17, 512, 513, 1030]) for (const n of [1, 3, 4, 9, 33, 65, 129]) sizes.push([m, k, n]);
  sizes.push([33, 65, 17], [65, 129, 3], [129, 33, 5], [7, 1536, 40]);

  it(`equals the JS kernel bit for bit on ${sizes.length} odd sizes (K across 512-wide panels, partial tiles)`, function () {
    for (const [m, k, n] of sizes) {
      const a = rand(m * k, m * 1000 + k), b = rand(n * k, n * 7 + k);
      const want = new Float32Array(m * n);
      matmulTransposedBJs(a, b, want, m, k, n);
      for (const [label, e] of engines) {
        const got = new Float32Array(m * n).fill(NaN);
        e.matmulTransposedB(a, b, got, m, k, n);
        const i = firstDifference(got, want);
        if (i >= 0) expect.fail(`${m}×${k}·(${n}×${k})ᵀ on ${label}: element ${i} is ${got[i]}, JS gives ${want[i]}`);
      }
    }
  });

  it('equals the JS kernel on zeros, signed zeros, huge, tiny, infinite and NaN inputs', function () {
    const m = 6, k = 530, n = 10;
    const specials = [0, -0, 1e30, -1e30, 1e-40, -3e-39, Infinity, -Infinity, NaN, 3.4e38];
    const a = rand(m * k, 5), b = rand(n * k, 6);
    for (let i = 0; i < a.length; i += 7) a[i] = specials[i % specials.length];
    for (let i = 0; i < b.length; i += 11) b[i] = specials[(i * 3) % specials.length];
    b.fill(0, 2 * k, 3 * k);                                   // an all-zero column of the output
    a.fill(-0, k, 2 * k);                                      // a row of negative zeros
    const want = new Float32Array(m * n);
    matmulTransposedBJs(a, b, want, m, k, n);
    for (const [label, e] of engines) {
      const got = new Float32Array(m * n);
      e.matmulTransposedB(a, b, got, m, k, n);
      const i = firstDifference(got, want);
      if (i >= 0) expect.fail(`${label}: element ${i} is ${got[i]}, JS gives ${want[i]}`);
    }
  });

  it('leaves ReferenceBackend.matmul (transposed B, with bias) unchanged, whichever engine runs', async function () {
    const be = new ReferenceBackend();
    const [m, k, n] = [19, 700, 45];
    const x = be.upload(rand(m * k, 1), [m, k]), w = be.upload(rand(n * k, 2), [n, k]), bias = be.upload(rand(n, 3), [n]);
    try {
      configureMatmul({ engine: 'js' });
      const js = await be.read(be.matmul(x, w, { transposeB: true, bias }));
      configureMatmul({ engine: 'wasm' });
      expect(matmulEngineInfo().engine).to.equal('wasm');
      const fast = await be.read(be.matmul(x, w, { transposeB: true, bias }));
      expect(firstDifference(fast, js)).to.equal(-1);
    } finally {
      configureMatmul({ engine: 'auto' });
    }
  });
});

describe('paligemma bench', function () {
  this.timeout(120_000);

  /** Runs the command in this process and returns what it printed. */
  async function bench(args: string[]): Promise<string> {
    const chunks: string[] = [];
    const write = process.stdout.write;
    process.stdout.write = ((s: string | Uint8Array) => { chunks.push(String(s)); return true; }) as typeof process.stdout.write;
    try {
      await benchCommand().exitOverride().parseAsync(args, { from: 'user' });
    } finally {
      process.stdout.write = write;
    }
    return chunks.join('');
  }

  const tiny = ['--scale-down', '16', '--vision-layers', '1', '--text-layers', '2', '--new-tokens', '3',
    '--repeats', '2', '--warmup', '0', '--peak-size', '64', '--bandwidth-mib', '4'];

  it('--json prints one object with the documented fields', async function () {
    const out = await bench([...tiny, '--json']);
    expect(out.trim().split('\n')).to.have.length(1);
    const r = JSON.parse(out);
    expect(Object.keys(r).sort()).to.deep.equal([
      'backend', 'decodeMsPerToken', 'detail', 'floors', 'peakGflops', 'peakRssMb', 'prefillMs', 'readGBps', 'ttftMs', 'visionMs', 'weightBytes', 'weights',
    ]);
    expect(r.weights).to.equal('f32 (memory)');
    // Image to first token spans vision and prefill (and the prompt embedding between them).
    for (const run of r.detail.runs) expect(run.ttftMs).to.be.at.least(run.visionMs + run.prefillMs);
    expect(r.backend).to.equal('reference');
    for (const key of ['visionMs', 'prefillMs', 'decodeMsPerToken', 'peakRssMb', 'peakGflops', 'readGBps']) {
      expect(r[key], key).to.be.a('number').and.satisfy((x: number) => Number.isFinite(x) && x > 0);
    }
    expect(Object.keys(r.floors).sort()).to.deep.equal(['decodeMsPerToken', 'prefillMs', 'visionMs']);
    for (const [key, x] of Object.entries(r.floors)) expect(x, key).to.be.a('number').and.satisfy((v: number) => Number.isFinite(v) && v > 0);

    const config = benchConfig({ visionLayers: 1, textLayers: 2, scaleDown: 16 });
    const params = weightSpecs(config).reduce((s, w) => s + elementsOf(w.shape), 0);
    expect(r.weightBytes).to.equal(params * 4);
    expect(r.detail.promptLength).to.equal(config.numImageTokens + 10);
    expect(r.detail.runs).to.have.length(2);
    expect(r.detail.peakMethod).to.be.a('string').and.not.be.empty;
    expect(r.detail.readMethod).to.be.a('string').and.not.be.empty;
    // The floors are the phase costs over the measured machine rates.
    const costs = phaseCosts(config, r.detail.promptLength, 3);
    expect(r.floors.prefillMs).to.be.closeTo(costs.prefillFlops / r.peakGflops / 1e6, 1e-9);
    expect(r.floors.decodeMsPerToken).to.be.closeTo(costs.decodeBytesPerToken / r.readGBps / 1e6, 1e-9);
  });

  it('prints a table with the phases, floors and machine rates without --json', async function () {
    const out = await bench(tiny);
    for (const word of ['vision (ms)', 'prefill (ms)', 'decode (ms/token)', 'peak RSS', 'matmul peak', 'read bandwidth']) {
      expect(out).to.contain(word);
    }
  });

  for (const [weights, width] of [['bf16', 2], ['f16', 2], ['f32', 4]] as const) {
    it(`--weights ${weights} writes a ${weights} checkpoint and loads it the real way (onnx, quantize=int4)`, async function () {
      const out = await bench([...tiny, '--json', '--backend', 'onnx', '--weights', weights, '--backend-option', 'quantize=int4']);
      const r = JSON.parse(out);
      expect(r.weights).to.equal(weights);
      expect(r.detail.engine).to.equal('onnx (cpu, int4 weights)');
      const config = benchConfig({ visionLayers: 1, textLayers: 2, scaleDown: 16 });
      const params = weightSpecs(config).reduce((sum, w) => sum + elementsOf(w.shape), 0);
      expect(r.detail.fileBytes).to.equal(params * width);
      expect(r.detail.loadMs).to.be.above(0);
      for (const key of ['ttftMs', 'decodeMsPerToken']) expect(r[key], key).to.satisfy((x: number) => Number.isFinite(x) && x > 0);
    });
  }

  it('rejects --weights other than f32, bf16 or f16, naming the flag', async function () {
    let error: unknown;
    try {
      await bench([...tiny, '--weights', 'int4', '--json']);
    } catch (e) {
      error = e;
    }
    expect(error).to.be.instanceOf(PaliGemmaError);
    expect((error as Error).message).to.match(/--weights 'int4'.*f32, bf16, f16/);
  });

  it('rejects a bad number with a usage error naming the flag', async function () {
    let error: unknown;
    try {
      await bench([...tiny, '--repeats', '0', '--json']);
    } catch (e) {
      error = e;
    }
    expect(error).to.be.instanceOf(PaliGemmaError);
    expect((error as Error).message).to.match(/--repeats/);
  });

  it('--model paligemma2 --image-size 896: Gemma 2 shapes and (896/14)² image tokens, phase peaks in each run', async function () {
    const r = JSON.parse(await bench([...tiny, '--json', '--model', 'paligemma2', '--image-size', '896']));
    const config = benchConfig({ visionLayers: 1, textLayers: 2, scaleDown: 16, model: 'paligemma2', imageSize: 896 });
    expect(config.text.modelType).to.equal('gemma2');
    expect(r.detail.model).to.equal(`PaliGemma 2 3B-${config.vision.imageSize}`);
    expect(r.detail.numImageTokens).to.equal(config.numImageTokens);
    expect(r.detail.promptLength).to.equal(config.numImageTokens + 10);
    expect(r.weightBytes).to.equal(weightSpecs(config).reduce((s, w) => s + elementsOf(w.shape), 0) * 4);
    for (const run of r.detail.runs) {
      expect(run.startRssMb).to.be.above(0);
      // Each phase's own peak holds at least what was resident when the phase began.
      expect(run.visionPeakRssMb).to.be.at.least(run.startRssMb * 0.9);
      expect(run.prefillPeakRssMb).to.be.above(0);
    }
    // Through a written checkpoint, the Gemma 2 fields read back as the bench config.
    const viaFile = JSON.parse(await bench([...tiny, '--json', '--model', 'paligemma2', '--image-size', '448', '--weights', 'bf16']));
    expect(viaFile.weights).to.equal('bf16');
  });

  it('rejects a bad --model or --image-size, naming the flag', async function () {
    for (const [flag, value, pattern] of [['--model', 'gemma3', /invalid --model "gemma3": expected paligemma or paligemma2/],
      ['--image-size', '512', /invalid --image-size "512": expected 224, 448, 896/]] as const) {
      let error: unknown;
      try { await bench([...tiny, flag, value, '--json']); } catch (e) { error = e; }
      expect(error).to.be.instanceOf(PaliGemmaError);
      expect((error as Error).message).to.match(pattern);
    }
  });

  it('models PaliGemma 2 3B-896 at full depth: about 3.03B parameters, 4096 image tokens, window 4096', function () {
    const config = benchConfig({ visionLayers: 27, textLayers: 26, model: 'paligemma2', imageSize: 896 });
    expect(config.numImageTokens).to.equal(4096);
    const t = config.text;
    expect([t.hiddenSize, t.intermediateSize, t.numHeads, t.numKvHeads, t.headDim, t.slidingWindow, t.attnLogitSoftcapping, t.queryPreAttnScalar])
      .to.deep.equal([2304, 9216, 8, 4, 256, 4096, 50, 256]);
    const params = weightSpecs(config).reduce((s, w) => s + elementsOf(w.shape), 0);
    expect(params / 1e9).to.be.closeTo(3.03, 0.02);
  });

  it('models PaliGemma-3B-224 at full depth: 2.92B parameters, 266-token prompt, known phase costs', function () {
    const config = benchConfig({ visionLayers: 27, textLayers: 18 });
    expect(config.numImageTokens).to.equal(256);
    expect(config.imageTokenIndex).to.equal(257152);
    const params = weightSpecs(config).reduce((s, w) => s + elementsOf(w.shape), 0);
    expect(params / 1e9).to.be.closeTo(2.92, 0.01);
    const costs = phaseCosts(config, 266, 16);
    // Decode reads every text weight and the tied 257216×2048 lm_head once per token.
    expect(costs.decodeBytesPerToken / 4 / 1e9).to.be.closeTo(2.51, 0.01);
    // Prefill is about 2 FLOPs per decoder parameter per prompt token.
    expect(costs.prefillFlops / (2 * 266 * 1.98e9)).to.be.closeTo(1, 0.05);
  });
});

describe('bench/full-checkpoint-memory.ts (smoke, narrow and shallow)', function () {
  this.timeout(180_000);

  it('writes a sharded checkpoint in the Hugging Face layout, runs generate on it and reports peak RSS against its size', async function () {
    const { mkdtemp, readdir, readFile, rm, stat } = await import('node:fs/promises');
    const { tmpdir } = await import('node:os');
    const { join, resolve } = await import('node:path');
    const { spawnSync } = await import('node:child_process');
    const dir = await mkdtemp(join(tmpdir(), 'pg-fullmem-'));
    try {
      const root = resolve(import.meta.dirname, '..');
      const r = spawnSync(process.execPath, ['--import', 'tsx', join(root, 'bench/full-checkpoint-memory.ts'), '--dir', dir,
        '--scale-down', '16', '--vision-layers', '1', '--text-layers', '1', '--backends', 'reference', '--json'], { cwd: root, encoding: 'utf8' });
      expect(r.status, r.stderr).to.equal(0);
      const lines = r.stdout.trim().split('\n');
      expect(lines).to.have.length(1);
      const out = JSON.parse(lines[0]) as { backend: string; fileBytes: number; peakRssBytes: number; ratio: number; tokens: number[] };
      const shards = (await readdir(dir)).filter((f) => f.endsWith('.safetensors')).sort();
      expect(shards.length).to.be.within(2, 3);
      shards.forEach((f, i) => expect(f).to.equal(`model-0000${i + 1}-of-0000${shards.length}.safetensors`));
      const sizes = await Promise.all(shards.map(async (f) => (await stat(join(dir, f))).size));
      expect(out.fileBytes).to.equal(sizes.reduce((a, b) => a + b, 0));
      const index = JSON.parse(await readFile(join(dir, 'model.safetensors.index.json'), 'utf8')) as { weight_map: Record<string, string> };
      expect([...new Set(Object.values(index.weight_map))].sort()).to.deep.equal(shards);
      expect(out.backend).to.equal('reference');
      expect(out.peakRssBytes).to.be.above(out.fileBytes);               // the runtime itself is bigger than this toy
      expect(out.ratio).to.be.closeTo(out.peakRssBytes / out.fileBytes, 1e-9);
      expect(out.tokens).to.have.length(2);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('bench/decode-gemv.ts (smoke, tiny shapes)', function () {
  this.timeout(120_000);

  async function runScript(args: string[]) {
    const { join, resolve } = await import('node:path');
    const { spawnSync } = await import('node:child_process');
    const root = resolve(import.meta.dirname, '..');
    return spawnSync(process.execPath, ['--import', 'tsx', join(root, 'bench/decode-gemv.ts'), ...args], { cwd: root, encoding: 'utf8' });
  }

  it('prints one row per round with a read rate per shape, the probe and their ratios', async function () {
    const r = await runScript(['--rounds', '2', '--min-mib', '1', '--probe-mib', '8', '64x128', '32x256']);
    expect(r.status, r.stderr).to.equal(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[1]).to.match(/64x128 GB\/s\s+32x256 GB\/s\s+probe GB\/s\s+Gemm ÷ probe/);
    const rows = lines.slice(2).map((l) => l.trim().split(/\s+/).map(Number));
    expect(rows).to.have.length(2);
    for (const [round, a, b, probe, ra, rb] of rows) {
      expect(round).to.be.oneOf([1, 2]);
      for (const x of [a, b, probe]) expect(x).to.be.above(0);
      expect(ra).to.be.closeTo(a / probe, 0.01);
      expect(rb).to.be.closeTo(b / probe, 0.01);
    }
  });

  it('rejects a malformed shape with one error line and exit 2', async function () {
    const r = await runScript(['12x']);
    expect(r.status).to.equal(2);
    expect(r.stderr.trim()).to.equal("error: shape '12x' is not NxK (two positive integers)");
  });
});
