/**
 * Validates an OpenAI chat-completions body for PaliGemma, which takes exactly one image and one
 * prompt: one user message whose content has one image_url part and text parts. Anything that
 * would change the answer and that we cannot honour is refused with a 400 naming the field,
 * rather than ignored.
 */
export class RequestError extends Error {
  constructor(message: string, readonly param: string | null, readonly code = 'invalid_value', readonly status = 400) {
    super(message);
  }
}

export interface ChatRequest {
  model?: string;
  imageUrl: string;
  prompt: string;
  maxNewTokens?: number;
  temperature?: number;
  topP?: number;
  seed?: number;
  n: number;
  stop: string[];
  logprobs: boolean;
  topLogprobs: number;
  stream: boolean;
  includeUsage: boolean;
}

/** Fields that change results and that this server cannot honour. */
const REFUSED = ['tools', 'tool_choice', 'functions', 'function_call', 'logit_bias', 'audio', 'modalities', 'prediction'] as const;
/** Accepted and without effect here (metadata, or a no-op value). */
const IGNORED = new Set(['user', 'metadata', 'store', 'service_tier', 'parallel_tool_calls', 'reasoning_effort', 'stream_options']);
const KNOWN = new Set(['model', 'messages', 'max_tokens', 'max_completion_tokens', 'temperature', 'top_p', 'seed', 'n', 'stop',
  'logprobs', 'top_logprobs', 'stream', 'frequency_penalty', 'presence_penalty', 'response_format', ...REFUSED, ...IGNORED]);

const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

function num(body: Record<string, unknown>, key: string, ok: (n: number) => boolean, expected: string): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) throw new RequestError(`${key}: expected ${expected}`, key);
  return v;
}

export function parseChatRequest(body: unknown): ChatRequest {
  if (!isObj(body)) throw new RequestError('the body must be a JSON object', null);
  for (const k of Object.keys(body)) {
    if (!KNOWN.has(k)) throw new RequestError(`unknown parameter ${k}`, k, 'unknown_parameter');
  }
  for (const k of REFUSED) {
    if (body[k] !== undefined && body[k] !== null) throw new RequestError(`${k} is not supported by PaliGemma`, k, 'unsupported_parameter');
  }
  for (const k of ['frequency_penalty', 'presence_penalty']) {
    if (body[k] !== undefined && body[k] !== null && body[k] !== 0) throw new RequestError(`${k}: only 0 is supported`, k, 'unsupported_parameter');
  }
  const rf = body.response_format;
  if (rf !== undefined && rf !== null && !(isObj(rf) && rf.type === 'text')) {
    throw new RequestError('response_format: only {"type": "text"} is supported', 'response_format', 'unsupported_parameter');
  }
  if (body.model !== undefined && typeof body.model !== 'string') throw new RequestError('model: expected a string', 'model');

  const messages = body.messages;
  if (!Array.isArray(messages) || messages.length === 0) throw new RequestError('messages: expected a non-empty array', 'messages');
  if (messages.length > 1) {
    throw new RequestError(`messages: PaliGemma takes one image and one prompt in a single user message; got ${messages.length} messages`,
      'messages', 'unsupported_conversation');
  }
  const msg = messages[0];
  if (!isObj(msg) || msg.role !== 'user') throw new RequestError('messages[0]: expected a message with role "user"', 'messages');
  const parts: unknown[] = typeof msg.content === 'string' ? [{ type: 'text', text: msg.content }]
    : Array.isArray(msg.content) ? msg.content : [];
  if (!Array.isArray(msg.content) && typeof msg.content !== 'string') throw new RequestError('messages[0].content: expected a string or an array of parts', 'messages');
  const texts: string[] = [];
  const images: string[] = [];
  parts.forEach((p, i) => {
    const where = `messages[0].content[${i}]`;
    if (!isObj(p)) throw new RequestError(`${where}: expected an object`, 'messages');
    if (p.type === 'text' && typeof p.text === 'string') texts.push(p.text);
    else if (p.type === 'image_url' && isObj(p.image_url) && typeof p.image_url.url === 'string') images.push(p.image_url.url);
    else throw new RequestError(`${where}: expected {type: "text", text} or {type: "image_url", image_url: {url}}`, 'messages');
  });
  if (images.length !== 1) {
    throw new RequestError(`messages[0].content: PaliGemma takes exactly one image per request; got ${images.length}`, 'messages', 'image_count');
  }

  const maxTokens = num(body, 'max_completion_tokens', (n) => Number.isInteger(n) && n >= 1, 'an integer ≥ 1')
    ?? num(body, 'max_tokens', (n) => Number.isInteger(n) && n >= 1, 'an integer ≥ 1');
  const stopRaw = body.stop;
  let stop: string[] = [];
  if (typeof stopRaw === 'string') stop = [stopRaw];
  else if (Array.isArray(stopRaw) && stopRaw.length <= 4 && stopRaw.every((s) => typeof s === 'string')) stop = stopRaw as string[];
  else if (stopRaw !== undefined && stopRaw !== null) throw new RequestError('stop: expected a string or up to 4 strings', 'stop');
  stop = stop.filter((s) => s.length > 0);
  if (body.logprobs !== undefined && body.logprobs !== null && typeof body.logprobs !== 'boolean') throw new RequestError('logprobs: expected a boolean', 'logprobs');
  const logprobs = body.logprobs === true;
  const topLogprobs = num(body, 'top_logprobs', (n) => Number.isInteger(n) && n >= 0 && n <= 20, 'an integer from 0 to 20') ?? 0;
  if (topLogprobs > 0 && !logprobs) throw new RequestError('top_logprobs: needs logprobs: true', 'top_logprobs');
  if (body.stream !== undefined && body.stream !== null && typeof body.stream !== 'boolean') throw new RequestError('stream: expected a boolean', 'stream');
  const so = body.stream_options;
  if (so !== undefined && so !== null && !isObj(so)) throw new RequestError('stream_options: expected an object', 'stream_options');

  return {
    model: body.model as string | undefined,
    imageUrl: images[0],
    prompt: texts.join('\n'),
    maxNewTokens: maxTokens,
    temperature: num(body, 'temperature', (n) => n >= 0 && n <= 2, 'a number from 0 to 2'),
    topP: num(body, 'top_p', (n) => n > 0 && n <= 1, 'a number in (0, 1]'),
    seed: num(body, 'seed', Number.isSafeInteger, 'an integer'),
    n: num(body, 'n', (n) => Number.isInteger(n) && n >= 1 && n <= 128, 'an integer ≥ 1') ?? 1,
    stop,
    logprobs,
    topLogprobs,
    stream: body.stream === true,
    includeUsage: isObj(so) && so.include_usage === true,
  };
}
