/**
 * The conformance suite inside your own mocha run: one `it` per op case, one for the samplers and
 * one per model. Failures say which op, case and error; unsupported cases show as pending.
 *
 * ```ts
 * import { describeConformance } from 'paligemma-sdk';
 * import myPlugin from '../src/my-plugin.js';
 * describeConformance('my-backend', { plugins: [myPlugin] });
 * ```
 */
import { opCases } from './op-cases.js';
import type { ModelResult, OpResult } from './report.js';
import { caseMatcher, ConformanceSession, type BackendFactory, type ConformanceOptions } from './run-conformance.js';
import { buildTinyModels, TINY_MODEL_LABELS, type ModelFolder } from './tiny-models.js';

export interface DescribeConformanceOptions extends Omit<ConformanceOptions, 'backend' | 'onResult'> {
  /** The describe block's title (default 'conformance: <backend>'). */
  title?: string;
  /** Per-test timeout in ms (default 120000). */
  timeout?: number;
}

/** The part of mocha's test context used here (kept structural, so no mocha types leak into ours). */
interface TestContext { skip(): void }

function verdict(ctx: TestContext, r: OpResult | ModelResult, what: string): void {
  if (r.status === 'unsupported') ctx.skip();
  if (r.status === 'fail') {
    const checks = 'checks' in r ? r.checks.filter((c) => c.status === 'fail').map((c) => `${c.check}: ${c.detail}`) : [];
    throw new Error(`${what}: ${[r.detail, ...checks].filter(Boolean).join('; ')}`);
  }
}

export function describeConformance(backend: string | BackendFactory, options: DescribeConformanceOptions = {}): void {
  if (typeof describe !== 'function' || typeof it !== 'function') {
    throw new Error('describeConformance registers mocha tests: call it at the top level of a test file that mocha loads');
  }
  const name = typeof backend === 'string' ? backend : 'backend from factory';
  describe(options.title ?? `conformance: ${name}`, function () {
    this.timeout(options.timeout ?? 120_000);
    let session: ConformanceSession;
    let tiny: { models: ModelFolder[]; remove(): Promise<void> } | undefined;

    before(async function () {
      session = await ConformanceSession.open({ ...options, backend });
    });
    after(async function () {
      await session?.close();
      await tiny?.remove();
    });

    const match = caseMatcher(options.ops);
    for (const c of opCases()) {
      const title = `${c.op} ${c.kernel ? `[${c.kernel} kernel] ` : ''}${c.name}`;
      if (!match(title)) continue;
      it(title, async function () {
        if (c.kernel === 'plain' && session.tested.kernels.default.name === 'plain') this.skip();   // already run as default
        verdict(this, await session.runOp(c), `${c.op} / ${title}`);
      });
    }

    if (options.samplers !== false) {
      it('samplers: same tokens on both backends, right distributions', async function () {
        const failed = (await session.runSamplers()).filter((r) => r.status === 'fail');
        if (failed.length) throw new Error(failed.map((r) => `${r.case}: ${r.detail}`).join('\n'));
      });
    }

    const labels = options.models ?? TINY_MODEL_LABELS;
    labels.forEach((label, i) => {
      it(`model ${label}`, async function () {
        let folder: ModelFolder = { label, dir: label };
        if (!options.models) {
          tiny ??= await buildTinyModels();
          folder = tiny.models[i];
        }
        verdict(this, await session.runModel(folder), `model ${label}`);
      });
    });
  });
}
