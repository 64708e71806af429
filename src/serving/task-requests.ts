/**
 * The task helpers (detect / segment / caption / ocr / answer, src/tasks) behind `POST
 * /v1/generate` with a `task` field, run through the serving engine, so a task request joins the
 * decode batch like any other:
 *
 * ```json
 * {"image": "data:image/png;base64,…", "task": "detect", "labels": ["cat", "dog"]}
 * → {"task": "detect", "prompt": "detect cat ; dog", "objects": [{"label": "cat", "box": {x0, y0, x1, y1}, "loc": [y0, x0, y1, x1]}],
 *    "skipped": [], "text": "<loc…>… cat", "image": {width, height}, "tokens": […], "finishReason": "stop", …}
 * ```
 *
 * Boxes are in the original image's pixels. A segment mask is sent as `segment --json` prints it:
 * {width, height, area, rle}, rle the row-major run lengths alternating 0s and 1s, starting
 * with 0s. The VQ-VAE weights segment needs are found where the
 * CLI's segment finds them ($PALIGEMMA_VAE, or vae-oid.npz in the model folder); a request
 * never names a server file.
 */
import type { ImageInput, RawPixels } from '../interfaces/image-processor.js';
import type { GenerateOptions, GenerationResult } from '../generation/generation-types.js';
import { maskToRle } from '../tasks/mask-paste.js';
import { PaliGemmaTasks, type DetectedObject, type SegmentedObject, type TaskPipeline } from '../tasks/paligemma-tasks.js';
import { RequestError } from './openai-request.js';
import type { CompletionParams, CompletionResult, ServingEngine } from './serving-engine.js';

export const TASK_NAMES = ['detect', 'segment', 'caption', 'ocr', 'answer'] as const;
export type TaskName = typeof TASK_NAMES[number];

export interface TaskFields {
  task: TaskName;
  labels?: string[];
  label?: string;
  question?: string;
  lang?: string;
}

/** The fields each task takes, beyond the sampling ones. */
const TASK_FIELDS: Record<TaskName, { need: string[]; may: string[] }> = {
  detect: { need: ['labels'], may: [] },
  segment: { need: ['label'], may: [] },
  caption: { need: [], may: ['lang'] },
  ocr: { need: [], may: [] },
  answer: { need: ['question'], may: ['lang'] },
};
export const TASK_FIELD_NAMES = ['task', 'labels', 'label', 'question', 'lang'];

/** Validates the task part of a /v1/generate body (`prompt` must then be absent). */
export function parseTaskFields(b: Record<string, unknown>): TaskFields {
  const task = b.task;
  if (typeof task !== 'string' || !(TASK_NAMES as readonly string[]).includes(task)) {
    throw new RequestError(`task: expected one of ${TASK_NAMES.join(', ')}`, 'task');
  }
  if (b.prompt !== undefined) throw new RequestError(`prompt: a ${task} request builds its own prompt; give either task or prompt`, 'prompt');
  const t = task as TaskName;
  const { need, may } = TASK_FIELDS[t];
  for (const k of TASK_FIELD_NAMES.slice(1)) {
    if (b[k] === undefined) continue;
    if (!need.includes(k) && !may.includes(k)) throw new RequestError(`${k}: not a field of task ${t}`, k, 'unknown_parameter');
  }
  for (const k of need) if (b[k] === undefined) throw new RequestError(`${k}: task ${t} needs it`, k);
  const str = (k: string) => {
    if (b[k] === undefined) return undefined;
    if (typeof b[k] !== 'string') throw new RequestError(`${k}: expected a string`, k);
    return b[k] as string;
  };
  let labels: string[] | undefined;
  if (b.labels !== undefined) {
    const l = b.labels;
    labels = typeof l === 'string' ? [l] : Array.isArray(l) && l.every((x) => typeof x === 'string') ? l as string[] : undefined;
    if (labels === undefined) throw new RequestError('labels: expected a string or an array of strings', 'labels');
  }
  return { task: t, labels, label: str('label'), question: str('question'), lang: str('lang') };
}

/** The sampling part of an engine request; the task helpers set image, prompt and max tokens. */
export type TaskSampling = Omit<CompletionParams, 'image' | 'prompt' | 'maxNewTokens' | 'n' | 'stop'> & { maxNewTokens?: number };

export class ServingTasks {
  private readonly tasks: PaliGemmaTasks;
  /** The engine's result behind each GenerationResult handed to the tasks (for usage and timings). */
  private readonly results = new WeakMap<GenerationResult, CompletionResult>();

  constructor(private readonly engine: ServingEngine) {
    const pipe = engine.pipeline;
    const adapter: TaskPipeline = {
      tokenizer: pipe.tokenizer,
      backend: pipe.backend,
      generate: (image, prompt, opts) => this.generate(image, prompt, opts ?? {}),
    };
    this.tasks = new PaliGemmaTasks(adapter, { modelDir: pipe.modelDir });
  }

  /** Runs a task on encoded image bytes; the JSON answer of /v1/generate. */
  async run(f: TaskFields, image: Uint8Array, sampling: TaskSampling): Promise<Record<string, unknown>> {
    // Only options the tasks take: temperature / top_p travel as the sampler they make.
    const opts: GenerateOptions = {
      maxNewTokens: sampling.maxNewTokens,
      sampler: this.engine.samplerFactory(sampling)(),
      ...(sampling.seed !== undefined ? { seed: sampling.seed } : {}),
      ...(sampling.wantLogprobs ? { logprobs: Math.max(1, sampling.topLogprobs ?? 0) } : {}),
      ...(sampling.signal ? { signal: sampling.signal } : {}),
    };
    if (f.task === 'detect' || f.task === 'segment') {
      const r = f.task === 'detect' ? await this.tasks.detect(image, f.labels!, opts) : await this.tasks.segment(image, f.label!, opts);
      const objects = r.objects.map((o: DetectedObject | SegmentedObject) => {
        const base = { label: o.label, box: o.box, loc: o.loc };
        if (!('mask' in o)) return base;
        const area = o.mask.binary.reduce((n, v) => n + v, 0);
        return { ...base, seg: o.seg, mask: { width: o.mask.width, height: o.mask.height, area, rle: maskToRle(o.mask.binary) } };
      });
      return { task: f.task, prompt: r.prompt, text: r.text, objects, skipped: r.skipped, image: r.image, ...this.summary(r.generation) };
    }
    const r = f.task === 'caption' ? await this.tasks.caption(image, { ...opts, lang: f.lang })
      : f.task === 'ocr' ? await this.tasks.ocr(image, opts)
        : await this.tasks.answer(image, f.question!, { ...opts, lang: f.lang });
    return { task: f.task, prompt: r.prompt, text: r.text, ...this.summary(r.generation) };
  }

  /** Frees the mask decoders' tensors. */
  dispose(): Promise<void> { return this.tasks.dispose(); }

  private summary(g: GenerationResult) {
    const out = this.results.get(g)!;
    const c = out.choices[0];
    return {
      tokens: g.tokens,
      ...(g.logprobs ? { logprobs: g.logprobs } : {}),
      finishReason: c.finishReason,
      promptTokens: out.promptTokens,
      timings: out.timings,
    };
  }

  private async generate(image: ImageInput, prompt: string, opts: GenerateOptions): Promise<GenerationResult> {
    const raw = image as RawPixels;                                    // PaliGemmaTasks decodes once and passes pixels
    const topN = opts.logprobs ?? 0;
    const out = await this.engine.complete({
      image: raw, prompt, maxNewTokens: opts.maxNewTokens!, sampler: opts.sampler, seed: opts.seed, signal: opts.signal,
      wantLogprobs: topN > 0, topLogprobs: topN,
    });
    const c = out.choices[0];
    const g: GenerationResult = {
      text: c.text,
      tokens: c.tokens.map((t) => t.token),
      // No stop strings here: 'stop' is always the end-of-sequence token.
      finishReason: c.finishReason === 'stop' ? 'eos' : c.finishReason,
      ...(topN > 0 ? { logprobs: c.tokens.map((t) => ({ token: t.token, logprob: t.logprob!, top: t.top ?? [] })) } : {}),
      backend: this.engine.pipeline.backendName,
      // The tasks keep these; the route answers with the engine's own timings (summary).
      timings: {
        imageMs: 0, visionMs: 0, prefillMs: out.timings.ttftMs, decodeMs: out.timings.totalMs - out.timings.ttftMs,
        decodeMsPerToken: c.tokens.length > 1 ? (out.timings.totalMs - out.timings.ttftMs) / (c.tokens.length - 1) : 0,
        totalMs: out.timings.totalMs, promptTokens: out.promptTokens, generatedTokens: c.tokens.length,
      },
    };
    this.results.set(g, out);
    return g;
  }
}
