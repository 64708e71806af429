/**
 * The conformance kit itself: the reference backend passes against itself; each deliberately
 * broken backend fails, and the report names the broken op and case and nothing healthy;
 * unsupported ops are reported as such; the command's JSON, table and exit codes.
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { runConformance, type ConformanceOptions, type ConformanceReport, type OpResult } from '../src/conformance/index.js';
import { describeConformance } from '../src/conformance/mocha.js';
import { AttentionKernelContribution, KVCacheStoreContribution, SamplerContribution } from '../src/interfaces/contributions.js';
import type { Sampler } from '../src/interfaces/sampler.js';
import type { OpName } from '../src/interfaces/tensor-backend.js';
import { referenceBackendPlugin } from '../src/backends/reference/reference-backend-module.js';
import { PlainAttentionKernel } from '../src/attention/plain-attention-kernel.js';
import { ContiguousKvCacheStore } from '../src/kv-cache/contiguous-kv-cache.js';
import { definePlugin } from '../src/plugin/define-plugin.js';
import { PartRegistry } from '../src/plugin/part-registry.js';
import { LOSSY_THRESHOLDS } from '../src/conformance/lossy-weights.js';
import { THRESHOLDS } from '../src/conformance/op-case.js';
import { brokenBackendsPlugin, RowDroppingMatmulBackend } from './support/broken-backends.js';
import { runCli } from './support/run-cli.js';
import { buildTinyCheckpoint, gemma2Spec, makeTempDir, mqaSpec } from './support/tiny-checkpoint.js';

const BROKEN_PLUGIN = fileURLToPath(new URL('./support/broken-backends.ts', import.meta.url));
const ALL_OPS: OpName[] = ['upload', 'read', 'matmul', 'add', 'mul', 'scale', 'layerNorm', 'rmsNorm', 'gelu', 'softmax',
  'rope', 'embedding', 'concat', 'slice', 'reshape', 'transpose', 'patchEmbed', 'writeRows'];

const failed = (r: ConformanceReport): OpResult[] => r.ops.filter((o) => o.status === 'fail');
const names = (os: OpResult[]): string[] => os.map((o) => `${o.op} ${o.case}`);
const brokenRun = (backend: string, extra: Partial<ConformanceOptions> = {}) =>
  runConformance({ models: [], ...extra, backend, plugins: [brokenBackendsPlugin] });

describe('conformance', function () {
  this.timeout(180_000);

  describe('the reference backend against itself', function () {
    let report: ConformanceReport;
    before(async () => { report = await runConformance({ backend: 'reference' }); });

    it('passes every case, with no failure anywhere', function () {
      expect(names(failed(report))).to.deep.equal([]);
      expect(report.ok).to.equal(true);
      expect(report.backend).to.equal('reference');
      expect(report.against).to.equal('reference');
      expect(report.engine).to.contain('reference');
    });

    it('covers every TensorBackend op and both attention kernels, at several shapes each', function () {
      for (const op of ALL_OPS) expect(report.ops.filter((o) => o.op === op).length, op).to.be.at.least(2);
      const attention = report.ops.filter((o) => o.op === 'attention');
      for (const kernel of ['reference', 'plain']) {
        const mine = attention.filter((o) => o.case.startsWith(`${kernel}: `)).map((o) => o.case);
        for (const want of ['bidirectional gqa 1', 'causal gqa 2', 'prefixLm(11) gqa 8', 'T300', 'T1 ', 'decode',
          'softCap 5', 'T40 window 8 prefixLm(24)', 'window 8 softCap 5', 'decode at 40 window 8']) {
          expect(mine.some((c) => c.includes(want)), `${kernel} ${want}`).to.equal(true);
        }
      }
      expect(report.ops.some((o) => o.op === 'softmax' && o.case.includes('+80'))).to.equal(true);
    });

    it('runs the soft-capped plain attention case, and reports anything unsupported without an error', function () {
      const unsupported = report.ops.filter((o) => o.status === 'unsupported');
      // The plain kernel soft-caps through the backend's tanh (Gemma 2), so this case runs and passes.
      const softCap = report.ops.find((o) => o.op === 'attention' && o.case.startsWith('plain: T17 softCap 50'));
      expect(softCap?.status).to.equal('pass');
      // f16/bf16 storage is supported (the kernels widen it): those cases run and pass.
      const half = report.ops.filter((o) => /\b(bf16|f16)\b/.test(o.case));
      expect(names(half)).to.include.members(['upload bf16 [17,33]', 'upload f16 [17,33]']);
      for (const o of half) expect(o.status, `${o.op} ${o.case}`).to.equal('pass');
      for (const o of unsupported) expect(o.error).to.equal(null);
      expect(report.counts.unsupported).to.equal(unsupported.length);
    });

    it('runs the samplers: same tokens on both sides and right distributions (chi-square)', function () {
      const samplers = report.ops.filter((o) => o.op === 'sampler');
      for (const s of ['greedy', 'temperature', 'top-k', 'top-p']) {
        expect(samplers.filter((o) => o.case.startsWith(`${s}:`) && o.status === 'pass').length, s).to.be.at.least(2);
      }
      for (const s of ['temperature', 'top-k', 'top-p']) {
        const chi = samplers.find((o) => o.case.startsWith(`${s}: chi-square`))!;
        expect(chi.error!).to.be.below(chi.threshold);
      }
    });

    it('runs the five tiny models (three PaliGemma 1, two PaliGemma 2) end to end with identical logits and tokens', function () {
      expect(report.models.map((m) => m.model)).to.have.length(5);
      expect(report.models.filter((m) => m.model.startsWith('tiny-paligemma2'))).to.have.length(2);
      for (const m of report.models) {
        expect(m.status, m.model).to.equal('pass');
        expect(m.maxAbsLogitDiff).to.equal(0);
        expect(m.tokensMatch).to.equal(true);
        expect(m.tokens).to.have.length.of.at.least(8);
        expect(m.checks.map((c) => c.check)).to.include.members(['vision tower', 'prefill logits (all rows)', 'decode step logits', 'kv cache vs no cache', 'score log-probs']);
      }
    });
  });

  describe('broken backends fail and are named', function () {
    it('softmax without max subtraction: NaN on the large-logit cases, nothing else', async function () {
      const r = await brokenRun('broken-softmax');
      expect(r.ok).to.equal(false);
      expect(names(failed(r))).to.have.members(['softmax [5,129] logits +80±20', 'softmax [3,33] logits −110±5']);
      for (const f of failed(r)) expect(f.detail).to.match(/NaN/);
    });

    it('interleaved RoPE: every rope case with D > 2 fails, and a model diverges', async function () {
      const dir = await makeTempDir('pg-conf-rope-');
      await buildTinyCheckpoint(dir, mqaSpec());
      const r = await brokenRun('broken-rope', { models: [dir] });
      const rope = r.ops.filter((o) => o.op === 'rope');
      expect(names(failed(r))).to.have.members(names(rope.filter((o) => !o.case.startsWith('[1,1,2]'))));
      expect(rope.find((o) => o.case.startsWith('[1,1,2]'))!.status).to.equal('pass');   // D = 2: both layouts agree
      const [m] = r.models;
      expect(m.status).to.equal('fail');
      expect(m.checks.find((c) => c.check.startsWith('prefill logits'))!.status).to.equal('fail');
      expect(m.checks.find((c) => c.check === 'vision tower')!.status).to.equal('pass');    // no RoPE in SigLIP
    });

    it('a matmul that drops the last row when M % 4 ≠ 0: those matmul cases and the plain kernel built on it', async function () {
      const r = await brokenRun('broken-matmul');
      const matmul = r.ops.filter((o) => o.op === 'matmul' && o.status !== 'unsupported');
      const m = (o: OpResult) => Number(/^m(\d+)/.exec(o.case)![1]);
      expect(matmul.filter((o) => o.status === 'fail').map(m).sort((a, b) => a - b)).to.deep.equal([1, 1, 3, 5, 17, 17, 33, 65, 129]);
      expect(matmul.filter((o) => m(o) % 4 === 0).map((o) => o.status)).to.satisfy((s: string[]) => s.length >= 3 && s.every((x) => x === 'pass'));
      expect(failed(r).find((o) => o.case.startsWith('m17 k33'))!.detail).to.match(/at \[16,\d+\] \(0 vs/);  // names the row
      const others = failed(r).filter((o) => o.op !== 'matmul');
      expect(others.length).to.be.greaterThan(0);
      for (const o of others) expect(`${o.op} ${o.case}`).to.match(/^attention plain: /);
    });

    it('declared lossy weights widen only the weight cases, and a dropped row still fails them', async function () {
      const r = await runConformance({ models: [], samplers: false, ops: '^(matmul|embedding|add)', backend: () => {
        const b = new RowDroppingMatmulBackend();
        Object.assign(b, { lossyWeights: 'int8' });
        return b;
      } });
      const matmul = r.ops.filter((o) => o.op === 'matmul' && o.status !== 'unsupported');
      for (const o of matmul) expect(o.threshold, o.case).to.equal(o.case.includes('bᵀ') ? LOSSY_THRESHOLDS.int8.weightOps : THRESHOLDS.matmul);
      for (const o of r.ops.filter((x) => x.op === 'embedding')) expect(o.threshold).to.equal(LOSSY_THRESHOLDS.int8.weightOps);
      for (const o of r.ops.filter((x) => x.op === 'add')) expect(o.threshold).to.equal(THRESHOLDS.elementwise);
      const m = (o: OpResult) => Number(/^m(\d+)/.exec(o.case)![1]);
      expect(matmul.filter((o) => o.status === 'fail').map(m).sort((a, b) => a - b)).to.deep.equal([1, 1, 3, 5, 17, 17, 33, 65, 129]);
    });

    it('an attention kernel choosing kv head h % kvHeads: only its GQA-ratio-2 and 4 cases', async function () {
      const r = await brokenRun('broken-gqa');
      const bad = names(failed(r));
      expect(bad.length).to.be.at.least(4);
      for (const n of bad) expect(n).to.match(/^attention gqa-modulo: .* gqa [24]$/);
      const ratios18 = r.ops.filter((o) => o.case.startsWith('gqa-modulo: ') && /gqa [18]$/.test(o.case));
      expect(ratios18.length).to.be.at.least(4);
      for (const o of ratios18) expect(o.status, o.case).to.equal('pass');     // h % H == h // 1, and h % 1 == h // 8
    });

    it('an attention kernel that is causal during prefill: only its prefix-LM and bidirectional prefill cases', async function () {
      const r = await brokenRun('broken-mask');
      const bad = names(failed(r));
      expect(bad).to.include.members(['attention always-causal: T17 bidirectional gqa 2', 'attention always-causal: T17 prefixLm(11) gqa 8',
        'attention always-causal: T300 prefixLm(260) gqa 2', 'attention always-causal: chunk of 5 at 12, 20-row cache prefixLm(14) gqa 2']);
      for (const n of bad) expect(n).to.match(/^attention always-causal: .*(bidirectional|prefixLm)/);
      for (const o of r.ops.filter((x) => x.case.startsWith('always-causal: ') && / causal /.test(x.case))) expect(o.status).to.equal('pass');
    });
  });

  describe('broken Gemma 2 attention fails and is named (PaliGemma 1 models and cases stay green)', function () {
    let models: string[];
    before(async function () {
      const g2 = await makeTempDir('pg-conf-g2-'), g1 = await makeTempDir('pg-conf-g1-');
      await buildTinyCheckpoint(g2, gemma2Spec());
      await buildTinyCheckpoint(g1, mqaSpec());
      models = [g2, g1];
    });
    const gemma2Case = /softCap [0-9]|window/;
    const cases: Array<{ backend: string; kernel: string; fails: (name: string) => boolean }> = [
      // Cap 50 barely bites on these scores (< 0.1 %), so only the cap-5 cases must fail.
      { backend: 'broken-softcap', kernel: 'no-softcap', fails: (n) => /softCap 5/.test(n) },
      // Every window case has a row whose key w behind it matters.
      { backend: 'broken-window', kernel: 'wide-window', fails: (n) => /window/.test(n) },
      // Only the window cases with prefix rows: not the causal one, not the decode row past the prefix.
      { backend: 'broken-prefix-window', kernel: 'window-over-prefix', fails: (n) => /window/.test(n) && /prefixLm/.test(n) && !/decode/.test(n) },
    ];
    for (const c of cases) {
      it(`${c.kernel}: exactly its Gemma 2 attention cases, and the tiny PaliGemma 2 model`, async function () {
        const r = await brokenRun(c.backend, { models, ops: '^attention', samplers: false });
        const mine = r.ops.filter((o) => o.case.startsWith(`${c.kernel}: `));
        const names = mine.map((o) => o.case.slice(c.kernel.length + 2));
        expect(names.filter(c.fails).length, 'cases the bug must fail').to.be.at.least(2);
        for (const o of mine) expect(o.status, o.case).to.equal(c.fails(o.case.slice(c.kernel.length + 2)) ? 'fail' : 'pass');
        expect(names.filter((n) => !gemma2Case.test(n)).length, 'PaliGemma 1 cases that pass').to.be.at.least(10);
        const [g2, g1] = r.models;
        expect(g2.status, 'tiny PaliGemma 2').to.equal('fail');
        // Rows past the prefix run with the bug: the decode steps' logits and the scored suffix.
        for (const check of ['decode step logits', 'score log-probs']) {
          expect(g2.checks.find((x) => x.check === check)?.status, check).to.equal('fail');
        }
        expect(g1.status, 'tiny PaliGemma 1').to.equal('pass');
        expect(r.ok).to.equal(false);
      });
    }
  });

  describe('unsupported ops', function () {
    it('supports() false or a "not supported" error is reported unsupported, and a model that needs it too', async function () {
      const dir = await makeTempDir('pg-conf-partial-');
      await buildTinyCheckpoint(dir, mqaSpec());
      const r = await brokenRun('partial', { models: [dir] });
      const ropeGelu = r.ops.filter((o) => o.op === 'rope' || o.op === 'gelu');
      expect(ropeGelu.length).to.be.at.least(8);
      for (const o of ropeGelu) expect(o.status, o.case).to.equal('unsupported');
      expect(ropeGelu.find((o) => o.op === 'rope')!.detail).to.match(/supports\('rope'/);
      expect(ropeGelu.find((o) => o.op === 'gelu')!.detail).to.match(/not supported/);
      expect(r.models[0].status).to.equal('unsupported');
      expect(r.ok).to.equal(true);            // gaps are reported, not failed
      expect(failed(r)).to.deep.equal([]);
    });
  });

  describe('sampler statistics can fail', function () {
    it('a temperature sampler ignoring T, a top-k ignoring k and a top-p falling back to argmax are caught', async function () {
      const softmax = (l: Float32Array, t: number) => {
        const m = Math.max(...l), e = Array.from(l, (x) => Math.exp((x - m) / t)), s = e.reduce((a, b) => a + b, 0);
        return e.map((x) => x / s);
      };
      const pick = (p: number[], u: number) => { let c = 0; for (let i = 0; i < p.length; i++) { c += p[i]; if (u < c) return i; } return p.length - 1; };
      const argmax = (l: Float32Array) => l.indexOf(Math.max(...l));
      const wrong: Record<string, Sampler> = {
        greedy: { name: 'greedy', sample: argmax },
        temperature: { name: 'temperature', sample: (l, { rng }) => pick(softmax(l, 1), rng.next()) },
        'top-k': { name: 'top-k', sample: (l, { rng }) => pick(softmax(l, 0.7), rng.next()) },
        'top-p': { name: 'top-p', sample: (l, { rng }) => { const i = pick(softmax(l, 0.7), rng.next()); return i < 3 ? i : argmax(l); } },
      };
      const registry = new PartRegistry();
      registry.load(referenceBackendPlugin);
      registry.load(definePlugin('wrong-samplers', ({ bind }) => {
        bind(AttentionKernelContribution).toConstantValue({ name: 'plain', description: '', create: () => new PlainAttentionKernel() });
        bind(KVCacheStoreContribution).toConstantValue({ name: 'contiguous', description: '', create: () => new ContiguousKvCacheStore() });
        for (const s of Object.values(wrong)) bind(SamplerContribution).toConstantValue({ name: s.name, description: '', create: () => s });
      }));
      const r = await runConformance({ backend: 'reference', registry, ops: 'sampler', models: [] });
      const chi = failed(r).map((o) => o.case);
      expect(chi).to.have.members(['temperature: chi-square, 20000 draws, fixed seed', 'top-k: chi-square, 20000 draws, fixed seed',
        'top-p: chi-square, 20000 draws, fixed seed', 'top-k: draws stay in the kept set of 1031 logits',
        'top-p: draws stay in the kept set of 1031 logits']);    // its ids 0..2 are not the top ranks of a real vocabulary
      for (const f of failed(r).filter((o) => o.case.includes('kept set'))) expect(f.detail).to.match(/outside the kept set/);
    });
  });

  describe('paligemma conformance (command)', function () {
    const env = { NODE_OPTIONS: '--import tsx' };     // so --plugin can load the TypeScript test plugin

    it('--json prints exactly one object with the documented fields; exit 0 when all pass', function () {
      const r = runCli(['conformance', '--backend', 'reference', '--ops', 'softmax|rope', '--no-models', '--json']);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout.trim().split('\n')).to.have.length(1);
      const out = JSON.parse(r.stdout);
      expect(out).to.include.keys('backend', 'engine', 'against', 'ok', 'ops', 'models');
      expect(out.backend).to.equal('reference');
      expect(out.against).to.equal('reference');
      expect(out.ok).to.equal(true);
      expect(out.models).to.deep.equal([]);
      expect(out.ops.length).to.be.greaterThan(10);
      for (const o of out.ops) {
        expect(o).to.include.keys('op', 'case', 'error', 'threshold', 'status');
        expect(o.status).to.be.oneOf(['pass', 'unsupported']);
      }
      expect(new Set(out.ops.map((o: OpResult) => o.op))).to.have.keys('softmax', 'rope');
    });

    it('exit 1 and a table naming the failing op and case for a broken backend', function () {
      const r = runCli(['conformance', '--backend', 'broken-softmax', '--plugin', BROKEN_PLUGIN, '--ops', '^softmax', '--no-models', '--no-samplers'], { env });
      expect(r.code, r.stderr).to.equal(1);
      expect(r.stdout).to.match(/op\s+case\s+shape\s+error\s+threshold\s+status/);
      expect(r.stdout).to.match(/softmax\s+\[5,129\] logits \+80±20\s+\[5,129\]\s+-\s+1\.0e-7\s+FAIL/);
      expect(r.stdout).to.match(/^FAIL: \d+ passed, 2 failed, 0 unsupported/m);
      expect(r.stdout).to.match(/failed: softmax\/\[5,129\] logits \+80±20, softmax\/\[3,33\] logits −110±5/);
    });

    it('--json for a broken backend: ok false, models listed with their verdict, exit 1', async function () {
      const dir = await makeTempDir('pg-conf-cli-');
      await buildTinyCheckpoint(dir, mqaSpec());
      const r = runCli(['conformance', '--backend', 'broken-mask', '--plugin', BROKEN_PLUGIN, '--ops', 'attention', '--no-samplers', '--model', dir, '--json'], { env });
      expect(r.code, r.stderr).to.equal(1);
      const out = JSON.parse(r.stdout);
      expect(out.ok).to.equal(false);
      expect(out.ops.filter((o: OpResult) => o.status === 'fail').length).to.be.greaterThan(3);
      expect(out.models).to.have.length(1);
      expect(out.models[0]).to.include.keys('model', 'maxAbsLogitDiff', 'tokensMatch', 'status');
      expect(out.models[0].status).to.equal('fail');
      expect(out.models[0].maxAbsLogitDiff).to.be.greaterThan(0);
    });

    it('--perf adds µs per run and GFLOP/s or GB/s', function () {
      const r = runCli(['conformance', '--backend', 'reference', '--ops', '^(matmul|transpose)', '--no-models', '--no-samplers', '--perf', '--json']);
      expect(r.code, r.stderr).to.equal(0);
      const out = JSON.parse(r.stdout);
      for (const o of out.ops.filter((x: OpResult) => x.status === 'pass')) {
        expect(o.usPerRun, o.case).to.be.greaterThan(0);
        expect(o.op === 'matmul' ? o.gflops : o.gbps, o.case).to.be.greaterThan(0);
      }
    });

    it('usage errors exit 2 with one error line', async function () {
      const unknown = runCli(['conformance', '--backend', 'nope', '--no-models']);
      expect(unknown.code).to.equal(2);
      expect(unknown.stderr.trim()).to.match(/^error: unknown backend 'nope' \(available: reference.*\)$/);
      const noMatch = runCli(['conformance', '--backend', 'reference', '--ops', 'no-such-op', '--no-models', '--no-samplers']);
      expect(noMatch.code).to.equal(2);
      expect(noMatch.stderr).to.match(/^error: --ops no-such-op matches no case \(ops: upload, read, matmul/);
      const missing = runCli(['conformance', '--backend', 'reference', '--model', '/nonexistent/model']);
      expect(missing.code).to.equal(2);
      expect(missing.stderr).to.match(/\/nonexistent\/model/);
    });
  });

  describe('describeConformance (mocha helper)', function () {
    it('registers one test per case and fails the broken ones by name', async function () {
      const dir = await makeTempDir('pg-conf-mocha-');
      await mkdir(dir, { recursive: true });
      const spec = join(dir, 'plugin-suite.test.ts');
      const src = (p: string) => pathToFileURL(fileURLToPath(new URL(p, import.meta.url))).href;
      await writeFile(spec, [
        `import { describeConformance } from '${src('../src/conformance/mocha.ts')}';`,
        `import { brokenBackendsPlugin } from '${src('./support/broken-backends.ts')}';`,
        `describeConformance('broken-rope', { plugins: [brokenBackendsPlugin], ops: '^rope|^softmax', models: [], samplers: false });`,
      ].join('\n'));
      const mocha = fileURLToPath(new URL('../node_modules/mocha/bin/mocha.js', import.meta.url));
      const r = spawnSync(process.execPath, [mocha, '--no-config', '--node-option', 'import=tsx', '--reporter', 'json', spec], { encoding: 'utf8', timeout: 120_000 });
      const out = JSON.parse(r.stdout);
      expect(r.status).to.equal(out.stats.failures);
      expect(out.stats.tests).to.equal(5 + 9);                    // rope and softmax cases
      expect(out.failures.map((f: { title: string }) => f.title)).to.have.members(
        ['rope [17,3,64] pos 1..17', 'rope [300,1,32] pos 1..300', 'rope [5,8,16] pos 1000+ shuffled', 'rope [3,2,130] pos 1..3 θ=1000000']);
      expect(out.failures[0].err.message).to.match(/^rope \/ rope .*: error .* > 1\.0e-6; max \|diff\|/);
    });
  });
});

// The helper as a plugin author would use it: the reference backend's own suite, in this run.
describeConformance('reference', { ops: '^(matmul|attention)', models: [], title: 'describeConformance: reference (matmul + attention)' });
