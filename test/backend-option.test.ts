/**
 * --backend-option / --sampler-option: the KEY=VALUE parser, and the options reaching the
 * backend (onnx quantize), a plugin sampler (min-p's minP) and the conformance report.
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { parseKeyValueOptions } from '../src/cli/key-value-options.js';
import { PaliGemmaError } from '../src/interfaces/errors.js';
import { expectUserError, runCli, type CliRun } from './support/run-cli.js';
import { makeTempDir, makeTestImage } from './support/tiny-checkpoint.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const MIN_P = './plugins/min-p-sampler/index.js';

/** The command from the repo root, where ./plugins/... paths start. */
const cli = (args: string[]): CliRun => runCli(args, { cwd: ROOT });


describe('parseKeyValueOptions', function () {
  it('reads VALUE as JSON when it parses: numbers, booleans, null, quoted strings, arrays', function () {
    expect(parseKeyValueOptions('--backend-option', ['n=3', 'x=0.25', 'neg=-1e-3', 'on=true', 'off=false', 'none=null', 's="int8"', 'a=[1,2]']))
      .to.deep.equal({ n: 3, x: 0.25, neg: -1e-3, on: true, off: false, none: null, s: 'int8', a: [1, 2] });
  });

  it('keeps VALUE as a plain string otherwise, splitting at the first =', function () {
    expect(parseKeyValueOptions('--backend-option', ['quantize=int8', 'device=cuda', 'expr=a=b', 'empty=', 'spaced= x ']))
      .to.deep.equal({ quantize: 'int8', device: 'cuda', expr: 'a=b', empty: '', spaced: ' x ' });
  });

  it('returns {} for no items, and lets a later item win', function () {
    expect(parseKeyValueOptions('--sampler-option', undefined)).to.deep.equal({});
    expect(parseKeyValueOptions('--sampler-option', [])).to.deep.equal({});
    expect(parseKeyValueOptions('--sampler-option', ['minP=0.1', 'minP=0.2'])).to.deep.equal({ minP: 0.2 });
  });

  it('refuses __proto__ as a key, leaving the prototype alone', function () {
    expect(() => parseKeyValueOptions('--backend-option', ['__proto__={"polluted":1}'])).to.throw(PaliGemmaError, /key "__proto__" is not an option name/);
    expect(({} as { polluted?: number }).polluted).to.equal(undefined);
  });

  it('rejects an item without = or with an empty key, naming the flag and the item', function () {
    for (const [flag, item] of [['--backend-option', 'quantize'], ['--backend-option', '=int8'], ['--sampler-option', ' =1'], ['--sampler-option', '']]) {
      expect(() => parseKeyValueOptions(flag, [item])).to.throw(PaliGemmaError, new RegExp(`^invalid ${flag} ${JSON.stringify(item)
        .replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: expected KEY=VALUE`));
    }
  });
});

describe('--backend-option and --sampler-option on the command', function () {
  this.timeout(300_000);
  let image: string;

  before(async function () {
    const dir = await makeTempDir('pg-backend-option-');
    image = join(dir, 'image.png');
    const { data, width, height } = makeTestImage(30, 20, 1);
    await sharp(Buffer.from(data), { raw: { width, height, channels: 3 } }).png().toFile(image);
    // The example plugins import 'paligemma-sdk', which resolves to this package's build.
    if (!existsSync(join(ROOT, 'dist', 'index.js'))) {
      spawnSync('npm', ['run', 'build'], { cwd: ROOT, encoding: 'utf8', timeout: 300_000 });
    }
  });

  const gen = (...extra: string[]) => ['generate', '--image', image, '--prompt', 'caption en', '--max-new-tokens', '4', '--json', ...extra];

  it('generate --backend onnx --backend-option quantize=int8 runs int8 weights', function () {
    for (const value of ['int8', '"int8"']) {
      const r = cli(gen('--backend', 'onnx', '--backend-option', `quantize=${value}`));
      expect(r.code, r.stderr).to.equal(0);
      expect(JSON.parse(r.stdout).backend).to.contain('int8');
    }
    const plain = cli(gen('--backend', 'onnx'));
    expect(plain.code, plain.stderr).to.equal(0);
    expect(JSON.parse(plain.stdout).backend).to.not.contain('int8');
  });

  it('score takes --backend-option too, and the backend rejects a value it does not know', function () {
    const r = cli(['score', '--image', image, '--prompt', 'caption en', '--suffix', 'a cat', '--json', '--backend', 'onnx', '--backend-option', 'quantize=int8']);
    expect(r.code, r.stderr).to.equal(0);
    expect(JSON.parse(r.stdout).total).to.be.a('number');
    const bad = cli(gen('--backend', 'onnx', '--backend-option', 'quantize=int2'));
    expect(bad.code, bad.stderr).to.equal(2);
    expect(bad.stderr).to.match(/quantize 'int2'/);
  });

  it('generate --sampler min-p --sampler-option minP=… reaches the plugin sampler', function () {
    const r = cli(gen('--sampler', 'min-p', '--sampler-option', 'minP=0.2', '--temperature', '0.8', '--plugin', MIN_P));
    expect(r.code, r.stderr).to.equal(0);
    expect(JSON.parse(r.stdout).tokens).to.be.an('array').that.is.not.empty;
    // minP = 1 keeps only the most likely token: greedy's tokens, at any temperature.
    const strict = cli(gen('--sampler', 'min-p', '--sampler-option', 'minP=1', '--temperature', '5', '--seed', '3', '--plugin', MIN_P));
    const greedy = cli(gen());
    expect(strict.code, strict.stderr).to.equal(0);
    expect(JSON.parse(strict.stdout).tokens).to.deep.equal(JSON.parse(greedy.stdout).tokens);
    // The option is the sampler's to judge: an out-of-range minP is its one-line error.
    const bad = cli(gen('--sampler', 'min-p', '--sampler-option', 'minP=2', '--plugin', MIN_P));
    expect(bad.code, bad.stderr).to.equal(2);
    expect(bad.stderr.trim().split('\n').filter((l) => !l.startsWith('note: ')))
      .to.deep.equal(['{"error":{"code":"invalid_input","message":"invalid minP 2: expected a number in [0, 1]"}}']);
  });

  it('conformance --backend onnx --backend-option quantize=int8 --json names the options and gives finite diffs', function () {
    const r = cli(['conformance', '--backend', 'onnx', '--backend-option', 'quantize=int8', '--no-samplers', '--ops', 'matmul', '--json']);
    expect(r.code, r.stderr).to.be.oneOf([0, 1]);     // int8 weights may miss the f32 thresholds
    const report = JSON.parse(r.stdout);
    expect(report.backendOptions).to.deep.equal({ quantize: 'int8' });
    expect(report.engine).to.contain('int8');
    expect(report.models).to.have.length.above(0);
    for (const m of report.models) {
      expect(m.maxAbsLogitDiff, m.model).to.be.a('number');
      expect(Number.isFinite(m.maxAbsLogitDiff), m.model).to.equal(true);
      expect(m.tokens).to.have.length.above(0);
    }
    const plain = cli(['conformance', '--backend', 'onnx', '--no-samplers', '--ops', 'matmul', '--no-models', '--json']);
    expect(plain.code, plain.stderr).to.equal(0);
    expect(JSON.parse(plain.stdout)).to.not.have.property('backendOptions');
  });

  it('a malformed item exits 2 with one error line naming the flag and the item, on every command', function () {
    expectUserError(cli(gen('--backend-option', 'quantize')), /^error: invalid --backend-option "quantize": expected KEY=VALUE/);
    expectUserError(cli(gen('--sampler-option', '=0.2')), /^error: invalid --sampler-option "=0.2": expected KEY=VALUE/);
    expectUserError(cli(['score', '--image', image, '--prompt', 'x', '--suffix', 'y', '--backend-option', 'nokey']), /invalid --backend-option "nokey"/);
    expectUserError(cli(['conformance', '--backend', 'reference', '--backend-option', '=x']), /invalid --backend-option "=x"/);
    expectUserError(cli(['bench', '--backend-option', 'oops', '--scale-down', '64']), /invalid --backend-option "oops"/);
  });
});
