/**
 * A loopback soak of `paligemma serve` on the tiny checkpoint: N requests (default 1000), C at a
 * time, through the official openai client — non-streaming and streaming, n = 2, a client that
 * disconnects mid-stream every 50th request, a malformed body every 25th, and more distinct
 * images than the vision cache holds (half the requests reuse 4 hot images, the rest cycle
 * through all: hits and evictions). Every completed answer is checked against the
 * pipeline run alone; RSS and the JS heap are printed after a warm-up and at the end (after a
 * GC where --expose-gc is given), with the growth per 1000 requests.
 *
 *   node --expose-gc --import tsx bench/serve-soak.ts [--requests 1000] [--concurrency 16] [--backend reference] [--sharp-cache on|off]
 */
import 'reflect-metadata';
import { parseArgs } from 'node:util';
import OpenAI from 'openai';
import sharp from 'sharp';
import { createPipeline } from '../src/create-pipeline.js';
import { buildServer } from '../src/serving/server.js';
import { ServingEngine } from '../src/serving/serving-engine.js';
import { buildTinyCheckpoint, makeTempDir, makeTestImage, mqaSpec } from '../src/tiny-models/tiny-checkpoint.js';

const { values: a } = parseArgs({
  options: {
    requests: { type: 'string', default: '1000' },
    concurrency: { type: 'string', default: '16' },
    backend: { type: 'string', default: 'reference' },
    warmup: { type: 'string', default: '100' },
    // libvips (behind sharp) keeps a bounded cache of recent operations (50 MB by default): off
    // here, RSS shows what the server itself keeps.
    'sharp-cache': { type: 'string', default: 'on' },
  },
});
if (a['sharp-cache'] === 'off') sharp.cache(false);
const N = Number(a.requests), C = Number(a.concurrency), WARM = Number(a.warmup);
const IMAGES = 24, CACHE = 8, MAX_TOKENS = 6;
const log = (s: string) => process.stderr.write(`${s}\n`);

const dir = await makeTempDir('pg-soak-');
await buildTinyCheckpoint(dir, mqaSpec());
const pipe = await createPipeline({ model: dir, backend: a.backend });
const images = await Promise.all(Array.from({ length: IMAGES }, (_, i) => {
  const { data, width, height } = makeTestImage(32, 32, 100 + i);
  return sharp(Buffer.from(data), { raw: { width, height, channels: 3 } }).png().toBuffer();
}));
const urls = images.map((b) => `data:image/png;base64,${b.toString('base64')}`);
log(`reference answers for ${IMAGES} images…`);
const want: string[] = [];
for (const im of images) want.push((await pipe.generate(new Uint8Array(im), 'caption en', { maxNewTokens: MAX_TOKENS })).text);

const engine = new ServingEngine(pipe, { maxBatch: 8, maxQueue: 4 * C, visionCacheSize: CACHE });
const app = await buildServer(engine, { modelId: 'tiny' });
const address = await app.listen({ port: 0, host: '127.0.0.1' });
const client = new OpenAI({ baseURL: `${address}/v1`, apiKey: 'unused', maxRetries: 0 });
const imageOf = (i: number) => (i % 2 === 0 ? (i >> 1) % 4 : i % IMAGES);
const messages = (i: number) => [{ role: 'user' as const, content: [{ type: 'text' as const, text: 'caption en' }, { type: 'image_url' as const, image_url: { url: urls[imageOf(i)] } }] }];

const counts = { ok: 0, wrong: 0, rejected400: 0, disconnected: 0, other: 0 };
async function one(i: number): Promise<void> {
  const w = want[imageOf(i)];
  try {
    if (i % 25 === 24) {
      const r = await fetch(`${address}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"messages": [' });
      await r.arrayBuffer();
      if (r.status === 400) counts.rejected400++; else counts.other++;
      return;
    }
    if (i % 50 === 48) {
      const ac = new AbortController();
      const stream = await client.chat.completions.create({ model: 'tiny', messages: messages(i), max_tokens: 64, stream: true }, { signal: ac.signal });
      try { for await (const _ of stream) { ac.abort(); } } catch { /* aborted on purpose */ }
      counts.disconnected++;
      return;
    }
    if (i % 3 === 0) {
      let text = '';
      for await (const c of await client.chat.completions.create({ model: 'tiny', messages: messages(i), max_tokens: MAX_TOKENS, stream: true })) text += c.choices[0]?.delta.content ?? '';
      if (text === w) counts.ok++; else counts.wrong++;
      return;
    }
    const n = i % 7 === 0 ? 2 : 1;
    const r = await client.chat.completions.create({ model: 'tiny', messages: messages(i), max_tokens: MAX_TOKENS, n, temperature: 0 });
    if (r.choices.length === n && r.choices.every((c) => c.message.content === w)) counts.ok++; else counts.wrong++;
  } catch {
    counts.other++;
  }
}

async function run(from: number, to: number): Promise<void> {
  let next = from;
  await Promise.all(Array.from({ length: C }, async () => { while (next < to) await one(next++); }));
}
const gc = (globalThis as { gc?: () => void }).gc;
const settle = async () => { for (let k = 0; k < 3; k++) { gc?.(); await new Promise((r) => setTimeout(r, 50)); } };
const mib = (x: number) => `${(x / 2 ** 20).toFixed(1)} MiB`;

const t0 = performance.now();
log(`warm-up: ${WARM} requests…`);
await run(0, WARM);
await settle();
const m0 = process.memoryUsage();
log(`soak: ${N} requests, ${C} at a time…`);
const t1 = performance.now();
await run(WARM, WARM + N);
const soakS = (performance.now() - t1) / 1000;
await settle();
const m1 = process.memoryUsage();
const s = engine.scheduler.stats;
console.log(`serve soak — ${pipe.backendName}, tiny checkpoint, ${N} requests after ${WARM} warm-up, ${C} concurrent, ${IMAGES} images / vision cache ${CACHE}, sharp cache ${a['sharp-cache']}${gc ? ', GC forced before each reading' : ' (no --expose-gc: readings without a forced GC)'}`);
console.log(`  RSS  ${mib(m0.rss)} → ${mib(m1.rss)} (${((m1.rss - m0.rss) / 2 ** 20 / (N / 1000)).toFixed(1)} MiB per 1000 requests)`);
console.log(`  heap ${mib(m0.heapUsed)} → ${mib(m1.heapUsed)}; external ${mib(m0.external)} → ${mib(m1.external)}`);
console.log(`  answers: ${counts.ok} correct, ${counts.wrong} wrong, ${counts.rejected400} malformed → 400, ${counts.disconnected} disconnected mid-stream, ${counts.other} other`);
console.log(`  scheduler: ${s.completed} completed, ${s.cancelled} cancelled, mean batch ${(s.stepRows / s.steps).toFixed(2)}, active ${engine.scheduler.active}, queued ${engine.scheduler.queued}; vision cache ${engine.vision.size}/${CACHE}, hits ${engine.vision.hits}/${engine.vision.hits + engine.vision.misses}`);
console.log(`  ${(N / soakS).toFixed(0)} requests/s over the soak; total ${((performance.now() - t0) / 1000).toFixed(0)} s`);
await app.close();
await engine.drain();
await pipe.close();
if (counts.wrong > 0 || counts.other > 0 || engine.scheduler.active !== 0) process.exit(1);
