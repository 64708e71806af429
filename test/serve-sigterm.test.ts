/**
 * `paligemma serve` as a process: SIGTERM while a streaming request decodes lets that request
 * finish (same text as the pipeline run alone, `data: [DONE]`), refuses new work, and exits 0.
 * A test attention plugin pauses each call, so the request is surely mid-decode at the signal;
 * the server's own count of in-flight requests at the signal is checked too. Loopback only,
 * every wait bounded, the child killed if it hangs.
 */
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { createPipeline } from '../src/create-pipeline.js';
import { buildTinyCheckpoint, makeTempDir, makeTestImage, mqaSpec } from './support/tiny-checkpoint.js';

const BIN = fileURLToPath(new URL('../bin/paligemma.js', import.meta.url));
const SLOW = fileURLToPath(new URL('./support/slow-attention-plugin.ts', import.meta.url));

function bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms); })])
    .finally(() => clearTimeout(timer));
}

describe('paligemma serve: SIGTERM drains in-flight requests, then exits 0', function () {
  this.timeout(120_000);
  let child: ChildProcess | undefined;
  after(() => { if (child && child.exitCode === null) child.kill('SIGKILL'); });

  it('a streaming request in flight at SIGTERM completes; the process exits 0', async function () {
    const dir = await makeTempDir('pg-serve-term-');
    await buildTinyCheckpoint(dir, mqaSpec());
    const { data, width, height } = makeTestImage(32, 32, 7);
    const image = await sharp(Buffer.from(data), { raw: { width, height, channels: 3 } }).png().toBuffer();
    const pipe = await createPipeline({ model: dir, attention: 'plain' });
    const want = await pipe.generate(new Uint8Array(image), 'caption en', { maxNewTokens: 24 });
    await pipe.close();
    expect(want.tokens.length, 'the run must be long enough to be cut').to.be.greaterThan(4);

    child = spawn(process.execPath, [BIN, 'serve', '--model', dir, '--port', '0', '--plugin', SLOW, '--attention', 'slow-plain'],
      { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    const exited = new Promise<number | null>((r) => child!.on('exit', (code) => r(code)));
    const address = await bounded(new Promise<string>((resolve, reject) => {
      child!.stderr!.on('data', (d: Buffer) => {
        stderr += d.toString();
        const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(stderr);
        if (m) resolve(m[1]);
      });
      child!.on('exit', () => reject(new Error(`serve exited before listening: ${stderr}`)));
    }), 60_000, 'serve to listen');

    const res = await fetch(`${address}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        stream: true, max_tokens: 24,
        messages: [{ role: 'user', content: [{ type: 'text', text: 'caption en' }, { type: 'image_url', image_url: { url: `data:image/png;base64,${image.toString('base64')}` } }] }],
      }),
    });
    expect(res.status).to.equal(200);
    const reader = res.body!.getReader();
    const dec = new TextDecoder();
    let body = '';
    let signalled = false;
    let afterSignal: Promise<number | 'refused'> | undefined;
    const read = async () => {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        body += dec.decode(value, { stream: true });
        if (!signalled && /"content":"[^"]/.test(body)) {
          // The first token is out and more are coming: signal now.
          signalled = true;
          child!.kill('SIGTERM');
          await bounded(new Promise<void>((r) => {
            const check = () => (stderr.includes('draining') ? r() : setTimeout(check, 10));
            check();
          }), 30_000, 'the server to start draining');
          // New work after the signal is refused (503) or the port no longer accepts connections.
          afterSignal = fetch(`${address}/health`).then((r) => r.status, () => 'refused' as const);
        }
      }
    };
    await bounded(read(), 60_000, 'the stream to end');
    expect(signalled, `no content chunk came: ${body}`).to.equal(true);

    const events = body.split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => e.slice(6));
    expect(events[events.length - 1]).to.equal('[DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e) as { choices: { delta: { content?: string }; finish_reason: string | null }[]; error?: unknown });
    expect(chunks.filter((c) => c.error)).to.have.length(0);
    const text = chunks.flatMap((c) => c.choices.map((ch) => ch.delta.content ?? '')).join('');
    expect(text).to.equal(want.text);
    const finishes = chunks.flatMap((c) => c.choices.map((ch) => ch.finish_reason)).filter((f) => f !== null);
    expect(finishes).to.deep.equal([want.finishReason === 'eos' ? 'stop' : 'length']);

    const code = await bounded(exited, 30_000, 'serve to exit');
    expect(code, stderr).to.equal(0);
    expect(stderr).to.match(/SIGTERM, draining 1 in-flight requests/);
    expect(stderr).to.match(/drained, exiting/);
    expect(await bounded(afterSignal!, 30_000, 'the request after the signal')).to.be.oneOf([503, 'refused']);
  });
});
