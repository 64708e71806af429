/**
 * `paligemma serve` end to end on 127.0.0.1 with ephemeral ports: the official openai client
 * (non-streaming, streaming, logprobs, errors), plain fetch for SSE, batched results against
 * the pipeline run alone (ModelSession path, pinned to the float64 oracle in pipeline.test.ts),
 * n > 1 forks against separate runs, cancellation on disconnect, queue bounds and a bounded
 * loopback load test (RSS printed, not asserted).
 */
/* eslint-disable @typescript-eslint/no-explicit-any */
import { expect } from 'chai';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import OpenAI from 'openai';
import sharp from 'sharp';
import { createPipeline } from '../src/create-pipeline.js';
import type { PaliGemmaPipeline } from '../src/paligemma-pipeline.js';
import { promptIds } from '../src/generation/prompt-format.js';
import { temperatureSampler } from '../src/samplers/index.js';
import { buildServer, type ServerOptions } from '../src/serving/server.js';
import { ServingEngine, type EngineOptions } from '../src/serving/serving-engine.js';
import { buildTinyCheckpoint, makeTempDir, makeTestImage, mqaSpec } from './support/tiny-checkpoint.js';

const MODEL = 'tiny';

async function png(seed: number, size = 32): Promise<Buffer> {
  const { data, width, height } = makeTestImage(size, size, seed);
  return sharp(Buffer.from(data), { raw: { width, height, channels: 3 } }).png().toBuffer();
}
const dataUrl = (b: Buffer) => `data:image/png;base64,${b.toString('base64')}`;
type Alone = Awaited<ReturnType<PaliGemmaPipeline['generate']>>;
/** Each token's logprob and top logprobs against a pipeline run's. */
function sameLogprobs(got: OpenAI.ChatCompletionTokenLogprob[], want: Alone, what: string) {
  expect(got, what).to.have.length(want.logprobs!.length);
  got.forEach((e, i) => {
    expect(e.logprob, `${what} token ${i}`).to.be.closeTo(want.logprobs![i].logprob, 1e-6);
    e.top_logprobs.forEach((t, j) => expect(t.logprob, `${what} token ${i} top ${j}`).to.be.closeTo(want.logprobs![i].top[j].logprob, 1e-6));
  });
}
const userMessage = (text: string, url: string) =>
  [{ role: 'user' as const, content: [{ type: 'text' as const, text }, { type: 'image_url' as const, image_url: { url } }] }];

describe('paligemma serve (HTTP, openai client, continuous batching)', function () {
  this.timeout(120_000);
  let pipe: PaliGemmaPipeline;
  let dir: string;
  let images: Buffer[];
  const servers: FastifyInstance[] = [];

  async function start(engineOpts: EngineOptions = {}, serverOpts: ServerOptions = {}) {
    const engine = new ServingEngine(pipe, { maxBatch: 4, maxQueue: 32, ...engineOpts });
    const app = await buildServer(engine, { modelId: MODEL, ...serverOpts });
    const address = await app.listen({ port: 0, host: '127.0.0.1' });
    servers.push(app);
    const client = new OpenAI({ baseURL: `${address}/v1`, apiKey: serverOpts.apiKey ?? 'unused', maxRetries: 0 });
    return { engine, app, address, client };
  }
  let main: Awaited<ReturnType<typeof start>>;

  before(async function () {
    dir = await makeTempDir('pg-serve-');
    await buildTinyCheckpoint(dir, mqaSpec());
    pipe = await createPipeline({ model: dir });
    images = await Promise.all([1, 2, 3].map((s) => png(s)));
    main = await start({}, { maxBody: 2 * 1024 * 1024 });
  });
  after(async function () {
    for (const s of servers) await s.close();
    await pipe?.close();
  });

  const alone = (image: Buffer, prompt: string, maxNewTokens: number, extra = {}) =>
    pipe.generate(new Uint8Array(image), prompt, { maxNewTokens, ...extra });

  it('non-streaming chat completion equals the pipeline run alone, with usage', async function () {
    const want = await alone(images[0], 'caption en', 6);
    const r = await main.client.chat.completions.create({
      model: MODEL, messages: userMessage('caption en', dataUrl(images[0])), max_tokens: 6, temperature: 0,
    });
    expect(r.object).to.equal('chat.completion');
    expect(r.choices).to.have.length(1);
    expect(r.choices[0].message.content).to.equal(want.text);
    expect(r.choices[0].finish_reason).to.equal(want.finishReason === 'eos' ? 'stop' : 'length');
    expect(r.usage?.completion_tokens).to.equal(want.tokens.length);
    expect(r.usage?.prompt_tokens).to.equal(promptIds(pipe.tokenizer, 'caption en', pipe.model.config.numImageTokens).length);
    expect(r.usage?.total_tokens).to.equal(r.usage!.prompt_tokens + r.usage!.completion_tokens);
  });

  it('streaming through the openai client gives the same text, one finish_reason, and usage', async function () {
    const want = await alone(images[1], 'describe', 8);
    const stream = await main.client.chat.completions.create({
      model: MODEL, messages: userMessage('describe', dataUrl(images[1])), max_completion_tokens: 8, stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    const finishes: string[] = [];
    let usage: OpenAI.CompletionUsage | undefined | null;
    let chunks = 0;
    for await (const c of stream) {
      chunks++;
      if (c.usage) usage = c.usage;
      for (const ch of c.choices) {
        text += ch.delta.content ?? '';
        if (ch.finish_reason) finishes.push(ch.finish_reason);
      }
    }
    expect(text).to.equal(want.text);
    expect(finishes).to.have.length(1);
    expect(chunks).to.be.greaterThan(2);
    expect(usage?.completion_tokens).to.equal(want.tokens.length);
  });

  it('logprobs and top_logprobs equal the pipeline\'s', async function () {
    const want = await alone(images[2], 'caption en', 5, { logprobs: 3 });
    const r = await main.client.chat.completions.create({
      model: MODEL, messages: userMessage('caption en', dataUrl(images[2])), max_tokens: 5, logprobs: true, top_logprobs: 3,
    });
    const content = r.choices[0].logprobs!.content!;
    expect(content).to.have.length(want.tokens.length);
    content.forEach((e, i) => {
      expect(e.logprob).to.be.closeTo(want.logprobs![i].logprob, 1e-6);
      expect(e.top_logprobs).to.have.length(3);
      e.top_logprobs.forEach((t, j) => {
        expect(t.logprob).to.be.closeTo(want.logprobs![i].top[j].logprob, 1e-6);
        expect(t.token).to.equal(pipe.tokenizer.decode([want.logprobs![i].top[j].token]));
      });
    });
  });

  it('errors come in OpenAI\'s shape with the right status', async function () {
    const url = dataUrl(images[0]);
    const twoImages = [{ role: 'user' as const, content: [{ type: 'text' as const, text: 'x' },
      { type: 'image_url' as const, image_url: { url } }, { type: 'image_url' as const, image_url: { url } }] }];
    const cases: Array<[() => Promise<unknown>, number, RegExp]> = [
      [() => main.client.chat.completions.create({ model: MODEL, messages: twoImages }), 400, /exactly one image.*got 2/],
      [() => main.client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'no image' }] }), 400, /exactly one image.*got 0/],
      [() => main.client.chat.completions.create({ model: MODEL, messages: [...userMessage('a', url), { role: 'assistant', content: 'b' }] }), 400, /single user message.*2 messages/],
      [() => main.client.chat.completions.create({ model: 'gpt-4o', messages: userMessage('a', url) }), 404, /does not exist/],
      [() => main.client.chat.completions.create({ model: MODEL, messages: userMessage('a', 'data:image/png;base64,@@@') }), 400, /invalid base64/],
      [() => main.client.chat.completions.create({ model: MODEL, messages: userMessage('a', `data:image/png;base64,${Buffer.from('not an image').toString('base64')}`) }), 400, /./],
      [() => main.client.chat.completions.create({ model: MODEL, messages: userMessage('a', url), temperature: 7 }), 400, /temperature/],
      [() => main.client.chat.completions.create({ model: MODEL, messages: userMessage('a', 'https://example.invalid/cat.png') }), 400, /allow-remote-images/],
      [() => main.client.chat.completions.create({ model: MODEL, messages: userMessage('a', '/etc/passwd') }), 400, /allow-file-images/],
    ];
    for (const [p, status, message] of cases) {
      const e = await p().then(() => undefined, (x: unknown) => x);
      expect(e, String(message)).to.be.instanceOf(OpenAI.APIError);
      const api = e as InstanceType<typeof OpenAI.APIError>;
      expect(api.status, api.message).to.equal(status);
      expect(api.message).to.match(message);
      expect(api.error).to.have.keys('message', 'type', 'param', 'code');
    }
    // 413 over --max-body, by plain fetch (the client would retry nothing, but keep it simple).
    const big = await fetch(`${main.address}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, messages: userMessage('a', `data:image/png;base64,${'A'.repeat(3 * 1024 * 1024)}`) }),
    });
    expect(big.status).to.equal(413);
    expect(((await big.json()) as any).error.type).to.equal('invalid_request_error');
    const unknown = await fetch(`${main.address}/v1/nothing`);
    expect(unknown.status).to.equal(404);
    expect(((await unknown.json()) as any).error).to.include.keys('message', 'type');
  });

  it('plain fetch sees Server-Sent Events ending in data: [DONE]', async function () {
    const res = await fetch(`${main.address}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, messages: userMessage('caption en', dataUrl(images[0])), max_tokens: 6, stream: true }),
    });
    expect(res.status).to.equal(200);
    expect(res.headers.get('content-type')).to.match(/^text\/event-stream/);
    const events = (await res.text()).split('\n\n').filter((e) => e.length > 0);
    expect(events.at(-1)).to.equal('data: [DONE]');
    expect(events.every((e) => e.startsWith('data: '))).to.equal(true);
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e.slice(6)));
    expect(chunks[0].choices[0].delta.role).to.equal('assistant');
    const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
    expect(text).to.equal((await alone(images[0], 'caption en', 6)).text);
  });

  it('concurrent requests are batched and each equals its sequential run', async function () {
    const { engine, client } = await start({ maxBatch: 4, maxQueue: 32 });
    const jobs = [
      ['caption en', 0, 9], ['describe the image', 1, 4], ['a', 2, 7], ['what is this?', 0, 6], ['b c d', 1, 8], ['caption es', 2, 5],
    ] as const;
    const sequential: Array<Awaited<ReturnType<typeof alone>>> = [];
    for (const [p, img, n] of jobs) sequential.push(await alone(images[img], p, n, { logprobs: 3 }));
    const batched = await Promise.all(jobs.map(([p, img, n]) => client.chat.completions.create({
      model: MODEL, messages: userMessage(p, dataUrl(images[img])), max_tokens: n, logprobs: true, top_logprobs: 3,
    })));
    batched.forEach((r, i) => {
      expect(r.choices[0].message.content, `job ${i}`).to.equal(sequential[i].text);
      expect(r.usage?.completion_tokens, `job ${i}`).to.equal(sequential[i].tokens.length);
      // The tiny model's text is much the same for every prompt; its log-probabilities are not.
      sameLogprobs(r.choices[0].logprobs!.content!, sequential[i], `job ${i}`);
    });
    expect(new Set(sequential.map((q) => q.logprobs![0].top[1].logprob.toFixed(6))).size).to.equal(jobs.length);
    const s = engine.scheduler.stats;
    expect(s.stepRows / s.steps).to.be.greaterThan(1.5);     // steps really ran several sequences
    expect(engine.vision.hits).to.equal(3);                  // 3 images, 6 requests
  });

  it('n > 1 forks one prefill; each choice equals a separate seeded run', async function () {
    const { engine, client } = await start();
    const r = await client.chat.completions.create({
      model: MODEL, messages: userMessage('caption en', dataUrl(images[1])), max_tokens: 6, n: 3, temperature: 1, seed: 11,
      logprobs: true, top_logprobs: 2,
    });
    expect(r.choices.map((c) => c.index)).to.deep.equal([0, 1, 2]);
    for (let c = 0; c < 3; c++) {
      const want = await alone(images[1], 'caption en', 6, { sampler: temperatureSampler(1), seed: 11 + c, logprobs: 2 });
      expect(r.choices[c].message.content, `choice ${c}`).to.equal(want.text);
      sameLogprobs(r.choices[c].logprobs!.content!, want, `choice ${c}`);
    }
    expect(engine.scheduler.stats).to.include({ prefills: 1, forks: 2 });
  });

  it('stop strings cut the text and finish with "stop"', async function () {
    const full = await alone(images[0], 'caption en', 12);
    const at = Math.floor(full.text.length / 2);
    const stop = full.text.slice(at, at + 2);
    expect(stop.length).to.equal(2);
    const want = full.text.slice(0, full.text.indexOf(stop));
    const r = await main.client.chat.completions.create({ model: MODEL, messages: userMessage('caption en', dataUrl(images[0])), max_tokens: 12, stop: [stop] });
    expect(r.choices[0].message.content).to.equal(want);
    expect(r.choices[0].finish_reason).to.equal('stop');
    const stream = await main.client.chat.completions.create({ model: MODEL, messages: userMessage('caption en', dataUrl(images[0])), max_tokens: 12, stop, stream: true });
    let text = '';
    for await (const c of stream) text += c.choices[0]?.delta.content ?? '';
    expect(text).to.equal(want);
  });

  it('a client that disconnects mid-stream cancels its sequence and frees it', async function () {
    const { engine, address } = await start();
    const ac = new AbortController();
    const res = await fetch(`${address}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, signal: ac.signal,
      body: JSON.stringify({ model: MODEL, messages: userMessage('caption en', dataUrl(images[0])), max_tokens: 1000, stream: true }),
    });
    const reader = res.body!.getReader();
    await reader.read();
    ac.abort();
    for (let i = 0; i < 200 && (engine.scheduler.active > 0 || engine.scheduler.stats.cancelled === 0); i++) await new Promise((r) => setTimeout(r, 10));
    expect(engine.scheduler.stats.cancelled).to.equal(1);
    expect(engine.scheduler.active).to.equal(0);
    expect(engine.scheduler.stats.steps).to.be.below(1000);
  });

  it('a full queue answers 429 and never holds more than --max-queue waiting', async function () {
    const { engine, client } = await start({ maxBatch: 1, maxQueue: 2 });
    const results = await Promise.allSettled(Array.from({ length: 8 }, (_, i) => client.chat.completions.create({
      model: MODEL, messages: userMessage(`caption ${i}`, dataUrl(images[i % 3])), max_tokens: 4,
    })));
    const refused = results.filter((r) => r.status === 'rejected');
    expect(refused.length).to.be.greaterThan(0);
    for (const r of refused) expect(((r as PromiseRejectedResult).reason as { status: number }).status).to.equal(429);
    expect(results.filter((r) => r.status === 'fulfilled').length).to.be.greaterThan(0);
    expect(engine.scheduler.stats.rejected).to.equal(refused.length);
  });

  it('--api-key requires Authorization: Bearer (401 otherwise); /health stays open', async function () {
    const { address } = await start({}, { apiKey: 'sekret' });
    const wrong = new OpenAI({ baseURL: `${address}/v1`, apiKey: 'nope', maxRetries: 0 });
    const e = await wrong.models.list().then(() => undefined, (x: unknown) => x);
    expect((e as { status: number }).status).to.equal(401);
    const right = new OpenAI({ baseURL: `${address}/v1`, apiKey: 'sekret', maxRetries: 0 });
    expect((await right.models.list()).data.map((m) => m.id)).to.deep.equal([MODEL]);
    expect((await fetch(`${address}/health`)).status).to.equal(200);
  });

  it('file images only inside --allow-file-images, links resolved', async function () {
    const root = join(dir, 'images'), outside = join(dir, 'outside.png');
    await mkdir(root, { recursive: true });
    await writeFile(join(root, 'a.png'), images[0]);
    await writeFile(outside, images[0]);
    const { client } = await start({}, { images: { fileRoot: root } });
    const ok = await client.chat.completions.create({ model: MODEL, messages: userMessage('caption en', `file://${join(root, 'a.png')}`), max_tokens: 3 });
    expect(ok.choices[0].message.content).to.equal((await alone(images[0], 'caption en', 3)).text);
    for (const url of [`file://${outside}`, `${root}/../outside.png`]) {
      const e = await client.chat.completions.create({ model: MODEL, messages: userMessage('a', url) }).then(() => undefined, (x: unknown) => x);
      expect((e as { status: number }).status, url).to.equal(400);
      expect((e as Error).message).to.match(/outside the allowed image folder/);
    }
  });

  it('native /v1/generate, /v1/models, /health and /metrics', async function () {
    const want = await alone(images[2], 'caption en', 4, { logprobs: 2 });
    const res = await fetch(`${main.address}/v1/generate`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ image: images[2].toString('base64'), prompt: 'caption en', maxNewTokens: 4, logprobs: 2 }),
    });
    const g = (await res.json()) as any;
    expect(res.status).to.equal(200);
    expect(g.text).to.equal(want.text);
    expect(g.tokens).to.deep.equal(want.tokens);
    expect(g.logprobs[0].logprob).to.be.closeTo(want.logprobs![0].logprob, 1e-6);
    expect(g.finishReason).to.equal(want.finishReason === 'eos' ? 'stop' : 'length');
    expect(g.timings.ttftMs).to.be.a('number');
    const models = (await (await fetch(`${main.address}/v1/models`)).json()) as any;
    expect(models.data[0]).to.include({ id: MODEL, object: 'model' });
    const health = (await (await fetch(`${main.address}/health`)).json()) as any;
    expect(health).to.include({ status: 'ok', model: MODEL, batched: true });
    expect(health.visionCache.hits).to.be.greaterThan(0);
    const metrics = await (await fetch(`${main.address}/metrics`)).text();
    const rate = /^paligemma_vision_cache_hit_rate (\S+)$/m.exec(metrics);
    expect(Number(rate?.[1])).to.be.closeTo(health.visionCache.hits / (health.visionCache.hits + health.visionCache.misses), 1e-9);
    expect(metrics).to.match(/^paligemma_requests_total\{route="\/v1\/chat\/completions",status="200"\} \d+$/m);
  });

  it('bounded loopback load: 200 requests, 16 at a time, all correct (RSS printed)', async function () {
    const { engine, client } = await start({ maxBatch: 8, maxQueue: 64 });
    const want: Alone[] = [];
    for (const im of images) want.push(await alone(im, 'caption en', 5, { logprobs: 1 }));
    const rssBefore = process.memoryUsage().rss;
    let next = 0, ok = 0;
    await Promise.all(Array.from({ length: 16 }, async () => {
      while (next < 200) {
        const i = next++;
        const stream = i % 2 === 1;
        const args = { model: MODEL, messages: userMessage('caption en', dataUrl(images[i % 3])), max_tokens: 5, logprobs: true };
        let text = '';
        const lps: number[] = [];
        if (stream) {
          for await (const c of await client.chat.completions.create({ ...args, stream: true })) {
            text += c.choices[0]?.delta.content ?? '';
            for (const e of c.choices[0]?.logprobs?.content ?? []) lps.push(e.logprob);
          }
        } else {
          const r = (await client.chat.completions.create(args)).choices[0];
          text = r.message.content ?? '';
          lps.push(...r.logprobs!.content!.map((e) => e.logprob));
        }
        const w = want[i % 3];
        if (text === w.text && lps.length === w.logprobs!.length && lps.every((l, k) => Math.abs(l - w.logprobs![k].logprob) < 1e-6)) ok++;
      }
    }));
    const rssAfter = process.memoryUsage().rss;
    console.log(`      load: 200 requests, RSS ${(rssBefore / 2 ** 20).toFixed(1)} → ${(rssAfter / 2 ** 20).toFixed(1)} MiB, `
      + `mean batch ${(engine.scheduler.stats.stepRows / engine.scheduler.stats.steps).toFixed(2)}, vision hits ${engine.vision.hits}/${engine.vision.hits + engine.vision.misses}`);
    expect(ok).to.equal(200);
    expect(engine.scheduler.active).to.equal(0);
    expect(engine.scheduler.queued).to.equal(0);
  });
});
