/**
 * Fault suite, the error surface (issue 20, rule 7): docs/errors.md lists every error code the
 * source can throw (read from the syntax tree, so the page cannot fall behind the code), and
 * every command of the CLI reports a bad argument as one `error:` line with exit 2, before any
 * model work.
 */
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { scanErrorCodes } from './support/error-codes.js';
import { expectUserError, runCli } from './support/run-cli.js';
import { buildTinyCheckpoint, makeTempDir, makeTestImage, mqaSpec } from './support/tiny-checkpoint.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SRC = join(ROOT, 'src');
const DOC = readFileSync(join(ROOT, 'docs', 'errors.md'), 'utf8');

/** Codes in the first column of the page's tables (`| \`code\` | … |`), by section. */
function documentedCodes(): Map<string, string[]> {
  const bySection = new Map<string, string[]>();
  let section = '';
  for (const line of DOC.split('\n')) {
    const h = /^## (.+)$/.exec(line);
    if (h) section = h[1];
    const row = /^\| `([a-z_]+)` \|/.exec(line);
    if (row) bySection.set(row[1], [...(bySection.get(row[1]) ?? []), section]);
  }
  return bySection;
}

/** The codes the server sends itself: `code: '…'` in the objects given to sendError. */
function serverReplyCodes(): string[] {
  const text = readFileSync(join(SRC, 'serving', 'server.ts'), 'utf8');
  return [...text.matchAll(/sendError\(reply, \{[^\n]*?code: '([a-z_]+)'/g)].map((m) => m[1]);
}

describe('faults: docs/errors.md lists every error code', function () {
  this.timeout(60_000);
  const documented = documentedCodes();
  const errors = scanErrorCodes(SRC);
  const requests = scanErrorCodes(SRC, { RequestError: { arg: 2, defaultCode: 'invalid_value' } });

  it('the scan reads every code (none is passed in a way it cannot follow) and finds the known ones', function () {
    expect(errors.dynamic, JSON.stringify(errors.dynamic)).to.deep.equal([]);
    expect(requests.dynamic, JSON.stringify(requests.dynamic)).to.deep.equal([]);
    const codes = new Set(errors.uses.map((u) => u.code));
    // Spot checks that the scan reads literals, defaults, subclasses and codes passed through helpers.
    for (const c of ['invalid_input', 'invalid_argument', 'corrupt_checkpoint', 'non_finite', 'missing_dependency', 'image_not_allowed', 'closed']) {
      expect(codes, c).to.include(c);
    }
    expect(new Set(requests.uses.map((u) => u.code))).to.include.members(['invalid_value', 'unknown_parameter', 'model_not_found']);
    expect(serverReplyCodes()).to.include.members(['invalid_api_key', 'not_found']);
  });

  it('every PaliGemmaError code thrown in src/ has a row', function () {
    const missing = [...new Set(errors.uses.map((u) => u.code))].filter((c) => !documented.has(c));
    const where = missing.map((c) => `${c} (${errors.uses.filter((u) => u.code === c).map((u) => `${u.file}:${u.line}`).join(', ')})`);
    expect(where, 'codes thrown but not in docs/errors.md').to.deep.equal([]);
  });

  it("every code of the server's replies has a row in the server section", function () {
    const server = [...new Set([...requests.uses.map((u) => u.code), ...serverReplyCodes(), 'queue_full', 'shutting_down'])];
    const missing = server.filter((c) => !(documented.get(c) ?? []).some((s) => s.startsWith('The server')));
    expect(missing, 'server codes not in the server section of docs/errors.md').to.deep.equal([]);
  });

  it('every code on the page is one the code base uses (no stale rows)', function () {
    const used = new Set([
      ...errors.uses.map((u) => u.code), ...requests.uses.map((u) => u.code), ...serverReplyCodes(),
    ]);
    // The two codes of the CLI's --json error line that are not PaliGemmaError codes.
    const cli = readFileSync(join(SRC, 'cli', 'cli-errors.ts'), 'utf8');
    for (const c of ['usage', 'internal']) {
      expect(cli, c).to.contain(`'${c}'`);
      used.add(c);
    }
    expect([...documented.keys()].filter((c) => !used.has(c)), 'rows for codes nothing throws').to.deep.equal([]);
  });
});

describe('faults: every command reports a bad argument as one error line with exit 2', function () {
  this.timeout(600_000);
  let dir: string;
  let model: string;
  let image: string;
  let jobs: string;

  before(async function () {
    dir = await makeTempDir('pg-faults-commands-');
    model = join(dir, 'model');
    await buildTinyCheckpoint(model, mqaSpec());
    image = join(dir, 'image.png');
    const { data, width, height } = makeTestImage(20, 20, 1);
    await sharp(Buffer.from(data), { raw: { width, height, channels: 3 } }).png().toFile(image);
    jobs = join(dir, 'jobs.jsonl');
    await writeFile(jobs, '{"id": "a", "image": "image.png", "prompt": "caption en"}\n');
  });

  /** Name, arguments (made once the fixtures exist), and the error line expected. */
  const cases: Array<[string, () => string[], RegExp]> = [
    ['generate', () => ['generate', '--model', model, '--image', image, '--prompt', 'caption en', '--seed', '1.5'], /^error: invalid --seed 1\.5: expected a decimal integer$/],
    ['generate --json', () => ['generate', '--model', model, '--image', image, '--prompt', 'caption en', '--seed', 'x', '--json'], /^error: invalid --seed x/],
    ['score', () => ['score', '--model', model, '--image', image, '--prompt', 'caption en'], /^error: required option '--suffix <text>' not specified$/],
    ['detect', () => ['detect', '--model', model, '--image', image, '--max-new-tokens', '1e3', 'cat'], /^error: invalid --max-new-tokens 1e3: expected a decimal integer ≥ 1$/],
    ['segment', () => ['segment', '--model', model, '--image', image, '--seed', '0x1', 'cat'], /^error: invalid --seed 0x1: expected a decimal integer$/],
    ['caption', () => ['caption', '--model', model, '--image', join(dir, 'missing.png')], /^error: image not found: .*missing\.png$/],
    ['ocr', () => ['ocr', '--model', model, '--image', image, '--backend-option', '__proto__=1'], /^error: invalid --backend-option .*"__proto__" is not an option name$/],
    ['answer', () => ['answer', '--model', model, '--image', image], /^error: missing required argument 'question'$/],
    ['serve', () => ['serve', '--model', model, '--port', '0x50'], /^error: invalid --port 0x50: expected a decimal integer ≥ 0$/],
    ['batch run', () => ['batch', 'run', '--model', model, '--input', jobs, '--out', join(dir, 'out.jsonl'), '--concurrency', '1e3'], /^error: invalid --concurrency 1e3: expected a decimal integer in 1\.\.1024$/],
    ['batch submit', () => ['batch', 'submit', '--queue', 'q', '--input', jobs, '--attempts', '0x3'], /^error: invalid --attempts 0x3: expected a decimal integer in 1\.\.100$/],
    ['batch worker', () => ['batch', 'worker', '--queue', 'q', '--lock-ms', '50'], /^error: invalid --lock-ms 50: expected a decimal integer ≥ 100$/],
    ['batch status', () => ['batch', 'status', '--queue', 'bad name!'], /^error: invalid --queue "bad name!"/],
    ['batch results', () => ['batch', 'results', '--queue', 'q'], /^error: required option '--out <results\.jsonl>' not specified$/],
    ['download', () => ['download', 'not a repo id'], /^error: invalid hub id not a repo id: expected ORG\/NAME/],
    ['models', () => ['models', '--bogus'], /^error: unknown option '--bogus'$/],
    ['conformance', () => ['conformance', '--backend', 'nope'], /^error: unknown backend 'nope' \(available: reference/],
    ['bench', () => ['bench', '--weights', 'f8'], /^error: invalid --weights 'f8': expected one of f32, bf16, f16$/],
    ['plugins', () => ['plugins', '--plugin', join(dir, 'no-such-plugin.js')], /^error: plugin .*no-such-plugin\.js: file not found/],
    ['quantize', () => ['quantize', '--model', model, '--to', 'int3', '--out', join(dir, 'quantized')], /^error: invalid --to 'int3': expected int8 or int4$/],
    ['an unknown command', () => ['frobnicate'], /^error: unknown command 'frobnicate'$/],
  ];

  it('covers every command the CLI lists (and every batch subcommand)', function () {
    const commandsIn = (help: string) => help.split('\n').slice(help.split('\n').findIndex((l) => l.startsWith('Commands:')) + 1)
      .map((l) => /^ {2}([a-z][a-z-]*)/.exec(l)?.[1]).filter((c): c is string => c !== undefined && c !== 'help');
    const top = commandsIn(runCli([]).stderr);
    const batch = commandsIn(runCli(['batch', '--help']).stdout).map((c) => `batch ${c}`);
    expect(top.length).to.be.above(10);
    expect(batch.length).to.be.above(3);
    const covered = new Set(cases.map(([name]) => name));
    const uncovered = [...top.filter((c) => c !== 'batch'), ...batch].filter((c) => !covered.has(c));
    expect(uncovered, 'commands without a bad-argument case here').to.deep.equal([]);
  });

  for (const [name, args, pattern] of cases) {
    it(name, function () {
      const r = runCli(args());
      expectUserError(r, pattern);
      expect(r.stdout, 'nothing on stdout').to.equal('');
    });
  }
});
