/**
 * Fault suite, cancellation from the command line (issue 20, rule 5): Ctrl-C (SIGINT) during a
 * long generation stops it within a step, prints what was produced, and exits 130, on every
 * backend. The generation is made long with a sampler that never picks <eos> and a context
 * of 4096 positions; the signal is sent once the first token is out, so the handler is in
 * place, and the token count printed proves the run stopped early rather than finished.
 * The wait for the exit is bounded; nothing here times how fast it is.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { TINY_TOKENIZER } from '../src/tiny-models/tiny-tokenizer.js';
import { buildTinyCheckpoint, makeTempDir, makeTestImage, mqaSpec } from './support/tiny-checkpoint.js';

const BIN = fileURLToPath(new URL('../bin/paligemma.js', import.meta.url));
const FORCED = fileURLToPath(new URL('../src/testing/forced-sampler-plugin.ts', import.meta.url));
const MARKED = fileURLToPath(new URL('./support/marked-sampler-plugin.ts', import.meta.url));
const CONTEXT = 4096;
/** An ordinary piece of the tiny tokenizer ('a'), so every step streams visible text. */
const TOKEN = 262;
/** Longest wait for the command to start, stream and exit (the webgpu software adapter is slow). */
const WAIT_MS = 240_000;

interface Interrupted {
  code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string;
  /** Whether SIGINT was sent, and what stdout held then. */
  sent: boolean; sentAfter: string;
}

/**
 * Runs `paligemma ...args`, sends SIGINT as soon as `ready(stdout, stderr)` holds, and waits
 * (bounded) for the exit. Resolves with what it printed.
 */
function interruptWhen(args: string[], ready: (stdout: string, stderr: string) => boolean): Promise<Interrupted> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '', sentAfter = '', sent = false;
    const check = () => {
      if (!sent && ready(stdout, stderr)) {
        sent = true;
        sentAfter = stdout;
        child.kill('SIGINT');
      }
    };
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; check(); });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; check(); });
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`no exit within ${WAIT_MS} ms; stderr: ${stderr}`)); }, WAIT_MS);
    child.on('error', reject);
    child.on('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, stdout, stderr, sent, sentAfter }); });
  });
}

/** The reason a backend cannot run here (package or adapter missing), or undefined. */
const unavailable = (r: Interrupted) => (r.code === 2 && /not installed|adapter|no webgpu/i.test(r.stderr) ? r.stderr.trim() : undefined);

describe('faults: Ctrl-C on the command line', function () {
  this.timeout(WAIT_MS + 30_000);
  let dir: string;
  let model: string;
  let image: string;

  before(async function () {
    dir = await makeTempDir('pg-faults-sigint-');
    model = join(dir, 'model');
    await buildTinyCheckpoint(model, mqaSpec());
    const configFile = join(model, 'config.json');
    const config = JSON.parse(await readFile(configFile, 'utf8'));
    config.text_config.max_position_embeddings = CONTEXT;
    await writeFile(configFile, JSON.stringify(config));
    image = join(dir, 'image.png');
    const { data, width, height } = makeTestImage(20, 20, 1);
    await sharp(Buffer.from(data), { raw: { width, height, channels: 3 } }).png().toFile(image);
    expect(TOKEN).to.be.above(TINY_TOKENIZER.bos);
  });

  for (const backend of ['reference', 'onnx', 'tfjs', 'webgpu']) {
    it(`generate --backend ${backend}: SIGINT after the first streamed token stops it with exit 130`, async function () {
      const r = await interruptWhen([
        'generate', '--model', model, '--image', image, '--prompt', 'caption en', '--backend', backend,
        '--plugin', FORCED, '--sampler', 'forced', '--sampler-option', `ids=[${TOKEN}]`, '--max-new-tokens', '1000000',
      ], (stdout) => stdout.includes('a'));
      const why = unavailable(r);
      if (why && !r.sent) { console.log(`    skipping ${backend}: ${why}`); this.skip(); }
      expect(r.sent, r.stderr).to.equal(true);
      expect({ code: r.code, signal: r.signal }, r.stderr).to.deep.equal({ code: 130, signal: null });
      // The summary line says the run was aborted, after far fewer tokens than the context allows.
      const summary = /\[aborted; (\d+) tokens; backend /.exec(r.stderr);
      expect(summary, r.stderr).to.not.equal(null);
      const tokens = Number(summary![1]);
      expect(tokens).to.be.at.least(1).and.below(CONTEXT / 2);
      // What streamed before the signal is part of what was printed: nothing was lost or replaced.
      expect(r.stdout.startsWith(r.sentAfter)).to.equal(true);
      expect(r.stdout.trim()).to.equal('a'.repeat(tokens));
      expect(r.stderr).to.not.match(/error:|Error|at .*\.ts:\d+/);
    });
  }

  it('caption --json (nothing streams): SIGINT once sampling runs stops it with exit 130 and finishReason aborted', async function () {
    const r = await interruptWhen([
      'caption', '--model', model, '--image', image, '--json',
      '--plugin', MARKED, '--sampler', 'marked', '--sampler-option', `id=${TOKEN}`, '--max-new-tokens', '1000000',
    ], (_stdout, stderr) => stderr.includes('note: first token sampled'));
    expect(r.sent, r.stderr).to.equal(true);
    expect({ code: r.code, signal: r.signal }, r.stderr).to.deep.equal({ code: 130, signal: null });
    const out = JSON.parse(r.stdout) as { finishReason: string; tokens: number[] };
    expect(out.finishReason).to.equal('aborted');
    expect(out.tokens.length).to.be.at.least(1).and.below(CONTEXT / 2);
    expect(out.tokens.every((t) => t === TOKEN)).to.equal(true);
  });
});
