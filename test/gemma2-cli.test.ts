/** The PaliGemma 2 convention flags of the model commands: --final-logit-softcap and --sliding-window. */
import { expect } from 'chai';
import { fileURLToPath } from 'node:url';
import { expectUserError, runCli } from './support/run-cli.js';
import { buildTinyCheckpoint, gemma2Spec, makeTempDir, mqaSpec } from './support/tiny-checkpoint.js';

const IMAGE = fileURLToPath(new URL('../examples/demo.png', import.meta.url));

describe('PaliGemma 2 options on the command line', function () {
  this.timeout(120_000);
  let g2: string, g1: string;
  before(async function () {
    g2 = await makeTempDir('pg-g2-cli-');
    await buildTinyCheckpoint(g2, gemma2Spec());
    g1 = await makeTempDir('pg-g1-cli-');
    await buildTinyCheckpoint(g1, mqaSpec());
  });
  const score = (model: string, ...extra: string[]) =>
    runCli(['score', '--model', model, '--image', IMAGE, '--prompt', 'caption en', '--suffix', 'a cat on a mat', '--json', ...extra]);

  it('--final-logit-softcap auto and --sliding-window off each change the scores; off/auto are the defaults', function () {
    const runs = [[], ['--final-logit-softcap', 'off', '--sliding-window', 'auto'], ['--final-logit-softcap', 'auto'],
      ['--final-logit-softcap', '2.5'], ['--sliding-window', 'off']].map((flags) => score(g2, ...flags));
    for (const r of runs) expect(r.code, r.stderr).to.equal(0);
    const [base, explicit, auto, num, noWindow] = runs.map((r) => JSON.parse(r.stdout) as { tokens: number[]; total: number });
    expect(explicit.total).to.equal(base.total);
    for (const other of [auto, num, noWindow]) {
      expect(other.tokens).to.deep.equal(base.tokens);
      expect(Math.abs(other.total - base.total)).to.be.above(1e-3);
    }
    // A soft-cap bounds every logit by the cap, so the log-probabilities flatten as the cap shrinks.
    expect(num.total).to.not.equal(auto.total);
  });

  it('bad values and PaliGemma 1 models are refused with one line, exit 2', function () {
    expectUserError(score(g2, '--sliding-window', 'on'), /invalid --sliding-window "on": expected auto or off/);
    expectUserError(score(g2, '--final-logit-softcap', '-3'), /invalid --final-logit-softcap "-3"/);
    expectUserError(score(g1, '--final-logit-softcap', 'auto'), /apply to PaliGemma 2 only/);
  });
});
