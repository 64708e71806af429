/**
 * Fault suite, CLI side (issue 20): every bad option the command line can be given is one
 * `error:` line with exit 2, before any model work; Ctrl-C stops a generation with exit 130.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { parseInteger, parseNumber } from '../src/cli/cli-errors.js';
import { parseKeyValueOptions } from '../src/cli/key-value-options.js';
import { PaliGemmaError } from '../src/interfaces/errors.js';
import { HfTokenizer, promptIds } from '../src/index.js';
import { expectUserError, runCli } from './support/run-cli.js';
import { buildTinyCheckpoint, makeTempDir, makeTestImage, mqaSpec } from './support/tiny-checkpoint.js';

const BIN = fileURLToPath(new URL('../bin/paligemma.js', import.meta.url));

describe('faults: integer and number options are decimal only', function () {
  it('parseInteger refuses hex, binary, octal, exponent, fraction, blanks and Infinity, naming the flag', function () {
    for (const bad of ['0x10', '0X10', '0b11', '0o7', '1e3', '16.0', '1.5', '', ' ', ' 16', '16 ', 'Infinity', '-Infinity', 'NaN', '1_000', '+', '9007199254740993']) {
      expect(() => parseInteger('--max-new-tokens', bad, 1), JSON.stringify(bad))
        .to.throw(PaliGemmaError, /^invalid --max-new-tokens .*: expected a decimal integer ≥ 1$/);
    }
    expect(() => parseInteger('--max-new-tokens', '0', 1)).to.throw(PaliGemmaError, /≥ 1/);
    expect(() => parseInteger('--seed', '-0x1')).to.throw(PaliGemmaError, /^invalid --seed -0x1: expected a decimal integer$/);
  });

  it('parseInteger reads plain decimal integers', function () {
    expect(parseInteger('--max-new-tokens', '16', 1)).to.equal(16);
    expect(parseInteger('--seed', '-7')).to.equal(-7);
    expect(parseInteger('--seed', '+7')).to.equal(7);
    expect(parseInteger('--seed', '007')).to.equal(7);
    expect(parseInteger('--seed', undefined)).to.equal(undefined);
  });

  it('parseNumber refuses non-decimal notations and reads decimal ones', function () {
    const any = () => true;
    for (const bad of ['0x1', '0b1', 'Infinity', '', '1e', '.', '1..2', ' 0.5']) {
      expect(() => parseNumber('--temperature', bad, any, 'a number ≥ 0'), JSON.stringify(bad)).to.throw(PaliGemmaError, /^invalid --temperature/);
    }
    expect(parseNumber('--temperature', '0.5', any, 'x')).to.equal(0.5);
    expect(parseNumber('--temperature', '.5', any, 'x')).to.equal(0.5);
    expect(parseNumber('--temperature', '5e-1', any, 'x')).to.equal(0.5);
    expect(parseNumber('--temperature', '2', any, 'x')).to.equal(2);
  });
});

describe('faults: KEY=VALUE options refuse prototype keys', function () {
  it('refuses __proto__, constructor and prototype as keys of either flag', function () {
    for (const flag of ['--sampler-option', '--backend-option']) {
      for (const key of ['__proto__', 'constructor', 'prototype', '__defineGetter__']) {
        expect(() => parseKeyValueOptions(flag, [`${key}={"polluted":1}`]), `${flag} ${key}`)
          .to.throw(PaliGemmaError, new RegExp(`^invalid ${flag} .*key "${key}" is not an option name`));
      }
    }
    expect(({} as { polluted?: number }).polluted).to.equal(undefined);
  });
});

describe('faults: the command refuses bad options with one error line and exit 2', function () {
  this.timeout(300_000);
  let dir: string;
  let image: string;

  before(async function () {
    dir = await makeTempDir('pg-faults-cli-');
    await buildTinyCheckpoint(join(dir, 'model'), mqaSpec());
    // A context of 64 positions: 16 image tokens + bos + prompt + newline must fit in it.
    const configFile = join(dir, 'model', 'config.json');
    const config = JSON.parse(await readFile(configFile, 'utf8'));
    config.text_config.max_position_embeddings = 64;
    await writeFile(configFile, JSON.stringify(config));
    image = join(dir, 'image.png');
    const { data, width, height } = makeTestImage(20, 20, 1);
    await sharp(Buffer.from(data), { raw: { width, height, channels: 3 } }).png().toFile(image);
  });

  const gen = (...extra: string[]) => ['generate', '--model', join(dir, 'model'), '--image', image, '--prompt', 'caption en', ...extra];

  const cases: Array<[string, string[], RegExp]> = [
    ['hex --max-new-tokens', ['--max-new-tokens', '0x10'], /^error: invalid --max-new-tokens 0x10: expected a decimal integer ≥ 1/],
    ['exponent --max-new-tokens', ['--max-new-tokens', '1e3'], /^error: invalid --max-new-tokens 1e3/],
    ['hex --seed', ['--seed', '0x10'], /^error: invalid --seed 0x10: expected a decimal integer/],
    ['binary --top-k', ['--top-k', '0b11'], /^error: invalid --top-k 0b11/],
    ['fraction --logprobs', ['--logprobs', '1.5'], /^error: invalid --logprobs 1.5/],
    ['hex --temperature', ['--temperature', '0x1'], /^error: invalid --temperature 0x1/],
    ['unknown --backend-option key', ['--backend-option', 'quantise=int8'], /^error: unknown option of backend reference: "quantise"/],
    ['__proto__ --sampler-option key', ['--sampler', 'temperature', '--sampler-option', '__proto__={"temperature":0}'], /^error: invalid --sampler-option .*__proto__/],
    ['constructor --sampler-option key', ['--sampler-option', 'constructor=1'], /^error: invalid --sampler-option .*constructor/],
    ['prompt longer than the context', ['--prompt', 'x'.repeat(200)], /^error: prompt is \d+ tokens .*max_position_embeddings 64/],
  ];
  for (const [label, extra, pattern] of cases) {
    it(label, function () {
      expectUserError(runCli(gen(...extra)), pattern);
    });
  }

  it('--max-new-tokens 1000000000 runs to the end of the context (64 positions) and exits 0 with finish reason length', async function () {
    const forced = fileURLToPath(new URL('../src/testing/forced-sampler-plugin.ts', import.meta.url));
    const r = runCli(gen('--max-new-tokens', '1000000000', '--json', '--plugin', forced, '--sampler', 'forced', '--sampler-option', 'ids=[262]'));
    expect(r.code, r.stderr).to.equal(0);
    const out = JSON.parse(r.stdout) as { finishReason: string; tokens: number[] };
    expect(out.finishReason).to.equal('length');
    // 16 image tokens + <bos> + "caption en" + "\n" fill the prefix; the rest of the 64 positions, plus one, are generated.
    const prefix = promptIds(await HfTokenizer.fromDir(join(dir, 'model')), 'caption en', 16).length;
    expect(out.tokens).to.have.length(64 - prefix + 1);
    expect(out.tokens.every((t) => t === 262)).to.equal(true);
  });

  it('unknown --backend-option keys are refused on onnx too, naming the key', function () {
    expectUserError(runCli(gen('--backend', 'onnx', '--backend-option', 'quantize=int8', '--backend-option', 'thread=2')),
      /^error: unknown option of backend onnx: "thread" \(known: .*threads/);
  });
});
