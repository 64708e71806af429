/** The `paligemma` command's contract: JSON shapes, exit codes, one-line errors. */
import { expect } from 'chai';
import { copyFile, mkdir, readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { expectUserError, runCli } from './support/run-cli.js';
import { buildTinyCheckpoint, makeTempDir, makeTestImage, mqaSpec } from './support/tiny-checkpoint.js';

describe('paligemma command', function () {
  let dir: string;
  let model: string;
  let image: string;

  before(async function () {
    dir = await makeTempDir('pg-cli-');
    model = join(dir, 'model');
    await mkdir(model);
    await buildTinyCheckpoint(model, mqaSpec());
    image = join(dir, 'image.png');
    const { data, width, height } = makeTestImage(30, 20, 1);
    await sharp(Buffer.from(data), { raw: { width, height, channels: 3 } }).png().toFile(image);
  });

  it('generate --json prints exactly one object with the documented fields', function () {
    const r = runCli(['generate', '--model', model, '--image', image, '--prompt', 'caption en', '--max-new-tokens', '5', '--logprobs', '2', '--json']);
    expect(r.code, r.stderr).to.equal(0);
    const out = JSON.parse(r.stdout);
    expect(Object.keys(out).sort()).to.deep.equal(['backend', 'finishReason', 'logprobs', 'text', 'timings', 'tokens']);
    expect(out.text).to.be.a('string');
    expect(out.tokens).to.be.an('array').that.is.not.empty;
    expect(out.finishReason).to.be.oneOf(['eos', 'length']);
    expect(out.backend).to.contain('reference');
    expect(out.logprobs).to.have.length(out.tokens.length);
    expect(out.logprobs[0].top).to.have.length(2);
    expect(out.logprobs[0].token).to.equal(out.tokens[0]);
  });

  it('generate without --model uses the built-in checkpoint and says its weights are random', function () {
    const r = runCli(['generate', '--image', image, '--prompt', 'caption en', '--max-new-tokens', '3']);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stderr).to.match(/random weights/);
  });

  it('score --json prints the suffix ids with <eos>, their log-probabilities and the total', function () {
    const r = runCli(['score', '--model', model, '--image', image, '--prompt', 'caption en', '--suffix', 'a cat', '--json']);
    expect(r.code, r.stderr).to.equal(0);
    const out = JSON.parse(r.stdout);
    expect(Object.keys(out).sort()).to.deep.equal(['logprobs', 'tokens', 'total']);
    expect(out.tokens).to.have.length(out.logprobs.length);
    expect(out.tokens[out.tokens.length - 1]).to.equal(1);            // <eos>
    for (const lp of out.logprobs) expect(lp).to.be.below(0);
    expect(out.total).to.be.closeTo(out.logprobs.reduce((a: number, b: number) => a + b, 0), 1e-9);
  });

  it('sampling with the same seed repeats, and the sampler flags are honoured', function () {
    const args = ['generate', '--model', model, '--image', image, '--prompt', 'x', '--max-new-tokens', '6', '--json'];
    const a = JSON.parse(runCli([...args, '--sampler', 'top-k', '--top-k', '50', '--temperature', '3', '--seed', '5']).stdout);
    const b = JSON.parse(runCli([...args, '--sampler', 'top-k', '--top-k', '50', '--temperature', '3', '--seed', '5']).stdout);
    expect(a.tokens).to.deep.equal(b.tokens);
  });

  describe('user errors: exit 2, one line starting with error:', function () {
    const gen = (m: string, extra: string[] = []) =>
      runCli(['generate', '--model', m, '--image', image, '--prompt', 'x', '--max-new-tokens', '2', ...extra]);

    it('missing model folder', () => expectUserError(gen(join(dir, 'nope')), /nope/));
    it('missing image', () => expectUserError(runCli(['generate', '--model', model, '--image', join(dir, 'none.png'), '--prompt', 'x']), /none\.png/));
    it('corrupt image', async () => {
      const bad = join(dir, 'bad.png');
      await writeFile(bad, 'not an image at all');
      expectUserError(runCli(['generate', '--model', model, '--image', bad, '--prompt', 'x']), /bad\.png/);
    });
    it('top-p outside (0, 1]', () => expectUserError(gen(model, ['--sampler', 'top-p', '--top-p', '1.5']), /--top-p/));
    it('top-k below 1', () => expectUserError(gen(model, ['--sampler', 'top-k', '--top-k', '0']), /--top-k/));
    it('negative temperature', () => expectUserError(gen(model, ['--temperature', '-1']), /--temperature/));
    it('unknown backend lists the available ones', () => expectUserError(gen(model, ['--backend', 'nope']), /nope.*available: .*reference/));
    it('truncated safetensors', async () => {
      const broken = join(dir, 'truncated');
      await mkdir(broken);
      for (const f of ['config.json', 'tokenizer.json', 'preprocessor_config.json']) await copyFile(join(model, f), join(broken, f));
      await copyFile(join(model, 'model.safetensors'), join(broken, 'model.safetensors'));
      await truncate(join(broken, 'model.safetensors'), 5000);
      expectUserError(gen(broken), /model\.safetensors/);
    });
    it('a tensor whose shape disagrees with the config names it with both shapes', async () => {
      const broken = join(dir, 'shape');
      await mkdir(broken);
      for (const f of ['tokenizer.json', 'preprocessor_config.json', 'model.safetensors']) await copyFile(join(model, f), join(broken, f));
      const cfg = JSON.parse(await readFile(join(model, 'config.json'), 'utf8'));
      cfg.text_config.intermediate_size += 2;
      await writeFile(join(broken, 'config.json'), JSON.stringify(cfg));
      expectUserError(gen(broken), /mlp\.(gate|up|down)_proj\.weight.*\[.*\].*\[.*\]/);
    });
    it('a config without a required field', async () => {
      const broken = join(dir, 'config');
      await mkdir(broken);
      for (const f of ['tokenizer.json', 'preprocessor_config.json', 'model.safetensors']) await copyFile(join(model, f), join(broken, f));
      const cfg = JSON.parse(await readFile(join(model, 'config.json'), 'utf8'));
      delete cfg.text_config.hidden_size;
      await writeFile(join(broken, 'config.json'), JSON.stringify(cfg));
      expectUserError(gen(broken), /hidden_size/);
    });
    it('--verbose adds the stack trace', () => {
      const r = gen(join(dir, 'nope'), ['--verbose']);
      expect(r.code).to.equal(2);
      expect(r.stderr.split('\n').length).to.be.greaterThan(2);
    });
  });
});
