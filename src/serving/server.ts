/**
 * The HTTP face of the serving engine (fastify): OpenAI chat completions (JSON and SSE), model
 * list, health, a native /v1/generate, Prometheus /metrics. Errors are OpenAI-shaped:
 * {error: {message, type, param, code}}.
 */
import { randomUUID, timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { PaliGemmaError } from '../interfaces/errors.js';
import { imageUrlBytes, type ImageUrlPolicy } from './image-url.js';
import { RequestError, parseChatRequest } from './openai-request.js';
import { ServingTasks, TASK_FIELD_NAMES, parseTaskFields } from './task-requests.js';
import type { ChoiceDelta, CompletionParams, CompletionResult, ServingEngine, TokenInfo } from './serving-engine.js';

export interface ServerOptions {
  /** The id clients name in `model` (default 'paligemma'). */
  modelId?: string;
  apiKey?: string;
  /** Largest request body in bytes (default 25 MiB). */
  maxBody?: number;
  images?: ImageUrlPolicy;
  /** max_tokens when a request does not say (default 256). */
  defaultMaxTokens?: number;
  logger?: boolean;
}

interface ApiError { status: number; message: string; type: string; param: string | null; code: string | null }

const TYPE: Record<number, string> = {
  400: 'invalid_request_error', 401: 'authentication_error', 404: 'not_found_error', 413: 'invalid_request_error',
  429: 'rate_limit_error', 500: 'server_error', 503: 'server_error',
};

/** Codes that say the server or its model failed, not the request: 500, never a client's 400. */
const SERVER_FAULTS = new Set([
  'internal', 'plugin_failed', 'capacity', 'non_finite', 'missing_dependency', 'engine_conflict', 'out_of_memory',
]);

/** @internal exported for the status mapping test */
export function apiError(e: unknown): ApiError {
  if (e instanceof RequestError) return { status: e.status, message: e.message, type: TYPE[e.status], param: e.param, code: e.code };
  if (e instanceof PaliGemmaError) {
    const status = e.code === 'queue_full' ? 429 : e.code === 'shutting_down' ? 503 : SERVER_FAULTS.has(e.code ?? '') ? 500 : 400;
    return { status, message: e.message, type: TYPE[status], param: null, code: e.code };
  }
  const f = e as { statusCode?: number; code?: string; message?: string };
  if (typeof f.statusCode === 'number' && f.statusCode >= 400 && f.statusCode < 500) {
    const status = f.code === 'FST_ERR_CTP_BODY_TOO_LARGE' ? 413 : f.statusCode;
    return { status, message: f.message ?? 'bad request', type: TYPE[status] ?? 'invalid_request_error', param: null, code: f.code ?? null };
  }
  return { status: 500, message: 'internal error', type: 'server_error', param: null, code: null };
}

function sendError(reply: FastifyReply, e: ApiError): FastifyReply {
  return reply.code(e.status).send({ error: { message: e.message, type: e.type, param: e.param, code: e.code } });
}

const toLogprob = (t: TokenInfo, top: boolean, decode: (id: number) => string) => ({
  token: t.text || decode(t.token),
  logprob: t.logprob!,
  bytes: [...Buffer.from(t.text || decode(t.token))],
  top_logprobs: top ? (t.top ?? []).map((x) => ({ token: decode(x.token), logprob: x.logprob, bytes: [...Buffer.from(decode(x.token))] })) : [],
});

export async function buildServer(engine: ServingEngine, opts: ServerOptions = {}): Promise<FastifyInstance> {
  const modelId = opts.modelId ?? 'paligemma';
  const defaultMaxTokens = opts.defaultMaxTokens ?? 256;
  const app = Fastify({ bodyLimit: opts.maxBody ?? 25 * 1024 * 1024, logger: opts.logger ?? false, return503OnClosing: true });
  const tokenizer = engine.pipeline.tokenizer;
  const decode = (id: number) => tokenizer.decode([id], { skipSpecialTokens: false });
  let draining = false;
  const tasks = new ServingTasks(engine);

  // ── metrics ──
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'paligemma_' });
  const requests = new Counter({ name: 'paligemma_requests_total', help: 'HTTP requests by route and status', labelNames: ['route', 'status'], registers: [registry] });
  const tokensOut = new Counter({ name: 'paligemma_generated_tokens_total', help: 'Tokens generated', registers: [registry] });
  const ttft = new Histogram({ name: 'paligemma_time_to_first_token_seconds', help: 'Arrival to first token', buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers: [registry] });
  const s = engine.scheduler.stats, v = engine.vision;
  const gauge = (name: string, help: string, value: () => number) =>
    new Gauge({ name, help, registers: [registry], collect() { this.set(value()); } });
  gauge('paligemma_active_sequences', 'Sequences in the decode batch', () => engine.scheduler.active);
  gauge('paligemma_queued_requests', 'Requests waiting for the batch', () => engine.scheduler.queued);
  gauge('paligemma_vision_cache_hits', 'Image rows found in the vision cache', () => v.hits);
  gauge('paligemma_vision_cache_misses', 'Images that ran the vision tower', () => v.misses);
  gauge('paligemma_vision_cache_hit_rate', 'hits / (hits + misses)', () => (v.hits + v.misses ? v.hits / (v.hits + v.misses) : 0));
  gauge('paligemma_prefix_forks', 'Choices (n > 1) that forked another choice\'s prefill instead of running their own', () => s.forks);
  gauge('paligemma_prefix_reuse_rate', 'forks / (forks + prefills)', () => (s.forks + s.prefills ? s.forks / (s.forks + s.prefills) : 0));
  gauge('paligemma_decode_steps', 'Batched decode steps run', () => s.steps);
  gauge('paligemma_mean_batch_size', 'Sequences per decode step, on average', () => (s.steps ? s.stepRows / s.steps : 0));

  app.addHook('onResponse', async (req, reply) => {
    requests.inc({ route: req.routeOptions.url ?? 'unknown', status: String(reply.statusCode) });
  });

  // ── auth ──
  if (opts.apiKey !== undefined) {
    const want = Buffer.from(`Bearer ${opts.apiKey}`);
    app.addHook('onRequest', async (req, reply) => {
      if (req.url === '/health') return;
      const got = Buffer.from(req.headers.authorization ?? '');
      if (got.length !== want.length || !timingSafeEqual(got, want)) {
        return sendError(reply, { status: 401, message: 'missing or wrong API key (Authorization: Bearer KEY)', type: TYPE[401], param: null, code: 'invalid_api_key' });
      }
    });
  }

  app.setErrorHandler((e, _req, reply) => sendError(reply, apiError(e)));
  app.setNotFoundHandler((req, reply) => sendError(reply, { status: 404, message: `no route ${req.method} ${req.url.split('?')[0]}`, type: TYPE[404], param: null, code: 'not_found' }));

  const checkModel = (model: string | undefined) => {
    if (model !== undefined && model !== modelId) {
      throw new RequestError(`the model ${JSON.stringify(model)} does not exist; this server has ${JSON.stringify(modelId)}`, 'model', 'model_not_found', 404);
    }
  };

  /** An AbortSignal that fires when the client goes away before the answer is complete. */
  const disconnectSignal = (req: FastifyRequest, reply: FastifyReply) => {
    const ac = new AbortController();
    reply.raw.on('close', () => { if (!reply.raw.writableFinished) ac.abort(); });
    req.raw.on('aborted', () => ac.abort());
    return ac.signal;
  };

  // ── routes ──
  app.get('/health', async () => ({
    status: draining ? 'draining' : 'ok',
    model: modelId,
    backend: engine.pipeline.backendName,
    batched: true,
    maxBatch: engine.maxBatch,
    active: engine.scheduler.active,
    queued: engine.scheduler.queued,
    visionCache: { size: v.size, hits: v.hits, misses: v.misses, hitRate: v.hits + v.misses ? v.hits / (v.hits + v.misses) : 0 },
    prefix: { prefills: s.prefills, forks: s.forks },
  }));

  app.get('/metrics', async (_req, reply) => reply.type(registry.contentType).send(await registry.metrics()));

  const modelEntry = { id: modelId, object: 'model', created: Math.floor(Date.now() / 1000), owned_by: 'paligemma-sdk' };
  app.get('/v1/models', async () => ({ object: 'list', data: [modelEntry] }));
  app.get<{ Params: { id: string } }>('/v1/models/:id', async (req) => { checkModel(req.params.id); return modelEntry; });

  app.post('/v1/chat/completions', async (req, reply) => {
    const r = parseChatRequest(req.body);
    checkModel(r.model);
    const signal = disconnectSignal(req, reply);
    const image = await imageUrlBytes(r.imageUrl, opts.images ?? {}, signal);
    const params: CompletionParams = {
      image, prompt: r.prompt, maxNewTokens: r.maxNewTokens ?? defaultMaxTokens, temperature: r.temperature, topP: r.topP,
      seed: r.seed, n: r.n, stop: r.stop, wantLogprobs: r.logprobs, topLogprobs: r.topLogprobs, signal,
    };
    const id = `chatcmpl-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    if (!r.stream) {
      const out = await engine.complete(params);
      ttft.observe(out.timings.ttftMs / 1000);
      tokensOut.inc(out.completionTokens);
      return {
        id, object: 'chat.completion', created, model: modelId, system_fingerprint: null,
        choices: out.choices.map((c, index) => ({
          index,
          message: { role: 'assistant', content: c.text, refusal: null },
          logprobs: r.logprobs ? { content: c.tokens.map((t) => toLogprob(t, r.topLogprobs > 0, decode)), refusal: null } : null,
          finish_reason: c.finishReason === 'aborted' ? 'stop' : c.finishReason,
        })),
        usage: usageOf(out),
      };
    }
    // SSE: headers go out once the request is valid and queued; errors after that are an event.
    const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
      `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created, model: modelId, system_fingerprint: null, choices, ...extra })}\n\n`;
    let started = false;
    const start = () => {
      if (started) return;
      started = true;
      reply.hijack();
      reply.raw.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive' });
      for (let c = 0; c < r.n; c++) reply.raw.write(chunk([{ index: c, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]));
    };
    const onDelta = (d: ChoiceDelta) => {
      start();
      if (reply.raw.destroyed) return;
      if (d.text === '' && d.tokens.length === 0 && d.finishReason === undefined) return;
      reply.raw.write(chunk([{
        index: d.choice,
        delta: d.text ? { content: d.text } : {},
        logprobs: r.logprobs && d.tokens.length ? { content: d.tokens.map((t) => toLogprob(t, r.topLogprobs > 0, decode)), refusal: null } : null,
        finish_reason: d.finishReason === undefined ? null : d.finishReason === 'aborted' ? 'stop' : d.finishReason,
      }]));
    };
    try {
      const out = await engine.complete(params, onDelta);
      ttft.observe(out.timings.ttftMs / 1000);
      tokensOut.inc(out.completionTokens);
      start();
      if (r.includeUsage) reply.raw.write(chunk([], { usage: usageOf(out) }));
      reply.raw.write('data: [DONE]\n\n');
      reply.raw.end();
    } catch (e) {
      if (!started) throw e;
      const err = apiError(e);
      if (!reply.raw.destroyed) {
        reply.raw.write(`data: ${JSON.stringify({ error: { message: err.message, type: err.type, param: err.param, code: err.code } })}\n\n`);
        reply.raw.write('data: [DONE]\n\n');
        reply.raw.end();
      }
    }
    return reply;
  });

  app.post('/v1/generate', async (req, reply) => {
    const b = req.body as Record<string, unknown> | null;
    if (typeof b !== 'object' || b === null || Array.isArray(b)) throw new RequestError('the body must be a JSON object', null);
    const known = new Set(['image', 'prompt', 'maxNewTokens', 'temperature', 'topP', 'seed', 'stop', 'logprobs', 'model', ...TASK_FIELD_NAMES]);
    for (const k of Object.keys(b)) if (!known.has(k)) throw new RequestError(`unknown field ${k}`, k, 'unknown_parameter');
    checkModel(b.model as string | undefined);
    if (typeof b.image !== 'string') throw new RequestError('image: expected a data: URL or base64 string', 'image');
    const task = b.task === undefined ? undefined : parseTaskFields(b);
    if (task && b.stop !== undefined) throw new RequestError('stop: not with a task (the task reads the whole answer)', 'stop');
    if (!task && typeof b.prompt !== 'string') throw new RequestError('prompt: expected a string (or give a task)', 'prompt');
    const field = (k: string, ok: (x: number) => boolean, what: string) => {
      const x = b[k];
      if (x === undefined) return undefined;
      if (typeof x !== 'number' || !ok(x)) throw new RequestError(`${k}: expected ${what}`, k);
      return x;
    };
    const stop = b.stop === undefined ? [] : Array.isArray(b.stop) && b.stop.every((x) => typeof x === 'string') ? b.stop as string[] : null;
    if (stop === null) throw new RequestError('stop: expected an array of strings', 'stop');
    // A bare base64 string is taken as a data: URL's payload. Plain paths are not taken here (use
    // file://): base64 may start with '/' (every JPEG's does: "/9j/").
    const url = /^(data:|[a-z]+:\/\/)/i.test(b.image) ? b.image : `data:image/unknown;base64,${b.image}`;
    const signal = disconnectSignal(req, reply);
    const image = await imageUrlBytes(url, opts.images ?? {}, signal);
    const topN = field('logprobs', (x) => Number.isInteger(x) && x >= 0 && x <= 20, 'an integer from 0 to 20') ?? 0;
    const sampling = {
      signal,
      maxNewTokens: field('maxNewTokens', (x) => Number.isInteger(x) && x >= 1, 'an integer ≥ 1'),
      temperature: field('temperature', (x) => x >= 0 && x <= 2, 'a number from 0 to 2'),
      topP: field('topP', (x) => x > 0 && x <= 1, 'a number in (0, 1]'),
      seed: field('seed', Number.isSafeInteger, 'an integer'),
      wantLogprobs: topN > 0, topLogprobs: topN,
    };
    if (task) {
      // The task's own default length (room for several boxes) unless the request sets one.
      const answer = await tasks.run(task, image, sampling);
      const timings = answer.timings as CompletionResult['timings'];
      ttft.observe(timings.ttftMs / 1000);
      tokensOut.inc((answer.tokens as number[]).length);
      return answer;
    }
    const out = await engine.complete({
      ...sampling, image, prompt: b.prompt as string, stop: stop.filter((x) => x.length > 0),
      maxNewTokens: sampling.maxNewTokens ?? defaultMaxTokens,
    });
    ttft.observe(out.timings.ttftMs / 1000);
    tokensOut.inc(out.completionTokens);
    const c = out.choices[0];
    return {
      text: c.text,
      tokens: c.tokens.map((t) => t.token),
      ...(topN > 0 ? { logprobs: c.tokens.map((t) => ({ token: t.token, logprob: t.logprob, top: t.top })) } : {}),
      finishReason: c.finishReason,
      promptTokens: out.promptTokens,
      timings: out.timings,
    };
  });

  app.addHook('onClose', async () => { draining = true; });
  app.addHook('onClose', async () => { await tasks.dispose(); });
  return app;
}

function usageOf(out: CompletionResult) {
  return { prompt_tokens: out.promptTokens, completion_tokens: out.completionTokens, total_tokens: out.promptTokens + out.completionTokens };
}
