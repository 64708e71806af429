/**
 * PaliGemma's task prompts on top of a pipeline: detection boxes and segmentation masks in
 * original-image pixels, captions, OCR and answers.
 *
 * ```ts
 * const tasks = new PaliGemmaTasks(pipe, { modelDir: './paligemma-3b-mix-224' });
 * const { objects, skipped } = await tasks.detect('cat.jpg', ['cat', 'dog']);
 * // objects: [{ label: 'cat', box: { x0, y0, x1, y1 }, loc: [y0, x0, y1, x1] }]
 * const seg = await tasks.segment('cat.jpg', 'cat', { vae: 'vae-oid.npz' });
 * // seg.objects[0].mask: { width, height, binary: Uint8Array, soft: Float32Array }
 * ```
 *
 * The image is decoded once: its size maps the boxes back, and the same pixels go to the
 * model. Malformed entries in the model's answer are listed in `skipped` with a reason.
 */
import { PaliGemmaError } from '../interfaces/errors.js';
import type { ImageInput } from '../interfaces/image-processor.js';
import type { TensorBackend } from '../interfaces/tensor-backend.js';
import type { Tokenizer } from '../interfaces/tokenizer.js';
import type { GenerateOptions, GenerationResult } from '../generation/generation-types.js';
import { decodeToRgb, type RgbImage } from '../image/siglip-image-processor.js';
import { locToBox, maskRect, type PixelBox } from './box-geometry.js';
import { parseLocOutput, type LocQuad, type SkippedEntry } from './loc-parser.js';
import { MASK_SIZE, VqVaeDecoder } from './vqvae-decoder.js';
import { pasteMask } from './mask-paste.js';
import { requireTaskTokens, taskText } from './task-tokens.js';
import { checkLabels, checkTaskCall } from './task-arguments.js';
import { checkText } from '../generation/api-arguments.js';
import { answerPrompt, captionPrompt, detectPrompt, ocrPrompt, segmentPrompt } from './task-prompts.js';
import { loadVqVaeDecoderWeights, resolveVaePath, type VqVaeDecoderWeights } from './vae-weights.js';

/** What the tasks need of a pipeline (PaliGemmaPipeline has it all). */
export interface TaskPipeline {
  readonly tokenizer: Tokenizer;
  readonly backend: TensorBackend;
  generate(image: ImageInput, prompt: string, opts?: GenerateOptions): Promise<GenerationResult>;
}

export interface TasksOptions {
  /** Model folder, searched for vae-oid.npz / vae-oid.safetensors when no `vae` is given. */
  modelDir?: string;
  /** VQ-VAE weights for segment: a file path, or weights already loaded. */
  vae?: string | VqVaeDecoderWeights;
}

export interface DetectedObject {
  label: string;
  /** In original-image pixels (floats). */
  box: PixelBox;
  /** The model's bins, (y_min, x_min, y_max, x_max) in 0..1023. */
  loc: LocQuad;
}

export interface ObjectMask {
  width: number;
  height: number;
  /** 1 inside, 0 outside; width·height, row-major. */
  binary: Uint8Array;
  /** Decoder values resized into the box (inside where > 0), -1 outside the box. */
  soft: Float32Array;
}

export interface SegmentedObject extends DetectedObject {
  /** The 16 codebook indices. */
  seg: number[];
  mask: ObjectMask;
}

export interface LocTaskResult<T> {
  prompt: string;
  objects: T[];
  /** Entries of the answer that could not be used, with why. */
  skipped: SkippedEntry[];
  /** The answer with loc/seg tokens written out. */
  text: string;
  image: { width: number; height: number };
  generation: GenerationResult;
}

export type DetectResult = LocTaskResult<DetectedObject>;
export type SegmentResult = LocTaskResult<SegmentedObject>;

export interface TextTaskResult {
  prompt: string;
  text: string;
  generation: GenerationResult;
}

export interface SegmentOptions extends GenerateOptions {
  /** Overrides the VQ-VAE weights given to the constructor. */
  vae?: string | VqVaeDecoderWeights;
}

/** Room for several objects: a detection entry is ~6 tokens, a segmentation entry ~22. */
const LOC_TASK_MAX_TOKENS = 256;
const TEXT_TASK_MAX_TOKENS = 64;

export class PaliGemmaTasks {
  private decoders = new Map<string | VqVaeDecoderWeights, Promise<VqVaeDecoder>>();

  constructor(readonly pipe: TaskPipeline, private readonly options: TasksOptions = {}) {}

  /** `detect a ; b`: boxes of each label found. */
  async detect(image: ImageInput, labels: string | readonly string[], opts: GenerateOptions = {}): Promise<DetectResult> {
    checkTaskCall('detect', image, opts);
    checkLabels(labels);
    const prompt = detectPrompt(labels);
    requireTaskTokens(this.pipe.tokenizer, 'detect');
    const { rgb, generation, text } = await this.run(image, prompt, opts, LOC_TASK_MAX_TOKENS);
    const parsed = parseLocOutput(text, 'detect');
    return {
      prompt,
      objects: parsed.objects.map((o) => ({ label: o.label, box: locToBox(o.loc, rgb.width, rgb.height), loc: o.loc })),
      skipped: parsed.skipped,
      text,
      image: { width: rgb.width, height: rgb.height },
      generation,
    };
  }

  /** `segment a`: box and mask (at the original size) of each instance found. */
  async segment(image: ImageInput, label: string, opts: SegmentOptions = {}): Promise<SegmentResult> {
    checkTaskCall('segment', image, opts);
    checkText('segment label', label);
    const prompt = segmentPrompt(label);
    requireTaskTokens(this.pipe.tokenizer, 'segment');
    // Find the weights before the (slow) generation, so a missing file fails at once.
    const decoder = await this.decoder(opts.vae ?? this.options.vae);
    const { vae: _, ...gen } = opts;
    const { rgb, generation, text } = await this.run(image, prompt, gen, LOC_TASK_MAX_TOKENS);
    const parsed = parseLocOutput(text, 'segment');
    const objects: SegmentedObject[] = [];
    const skipped = [...parsed.skipped];
    for (const o of parsed.objects) {
      const rect = maskRect(o.loc, rgb.width, rgb.height);
      if (rect.x1 <= rect.x0 || rect.y1 <= rect.y0) {
        // As in big_vision: a box thinner than a pixel after truncation holds no mask.
        skipped.push({ text: o.label, reason: `box ${JSON.stringify(rect)} is under one pixel wide or high at ${rgb.width}×${rgb.height}` });
        continue;
      }
      const m64 = await decoder.decode(o.seg!);
      const { binary, soft } = pasteMask(m64, rect, rgb.width, rgb.height, MASK_SIZE);
      objects.push({
        label: o.label, box: locToBox(o.loc, rgb.width, rgb.height), loc: o.loc, seg: o.seg!,
        mask: { width: rgb.width, height: rgb.height, binary, soft },
      });
    }
    return { prompt, objects, skipped, text, image: { width: rgb.width, height: rgb.height }, generation };
  }

  /** `caption <lang>`. */
  async caption(image: ImageInput, opts: GenerateOptions & { lang?: string } = {}): Promise<TextTaskResult> {
    checkTaskCall('caption', image, opts);
    const { lang, ...gen } = opts;
    return this.textTask(image, captionPrompt(lang), gen);
  }

  /** `ocr`. */
  async ocr(image: ImageInput, opts: GenerateOptions = {}): Promise<TextTaskResult> {
    checkTaskCall('ocr', image, opts);
    return this.textTask(image, ocrPrompt(), opts);
  }

  /** `answer <lang> <question>`. */
  async answer(image: ImageInput, question: string, opts: GenerateOptions & { lang?: string } = {}): Promise<TextTaskResult> {
    checkTaskCall('answer', image, opts);
    checkText('question', question);
    const { lang, ...gen } = opts;
    return this.textTask(image, answerPrompt(question, lang), gen);
  }

  /** Releases the mask decoders' backend tensors. */
  async dispose(): Promise<void> {
    const all = [...this.decoders.values()];
    this.decoders.clear();
    for (const d of all) (await d.catch(() => undefined))?.dispose();
  }

  private async textTask(image: ImageInput, prompt: string, opts: GenerateOptions): Promise<TextTaskResult> {
    const { generation } = await this.run(image, prompt, opts, TEXT_TASK_MAX_TOKENS);
    return { prompt, text: generation.text.trim(), generation };
  }

  private async run(image: ImageInput, prompt: string, opts: GenerateOptions, defaultMax: number):
    Promise<{ rgb: RgbImage; generation: GenerationResult; text: string }> {
    const rgb = await decodeToRgb(image);
    const generation = await this.pipe.generate({ data: rgb.data, width: rgb.width, height: rgb.height, channels: 3 }, prompt,
      { ...opts, maxNewTokens: opts.maxNewTokens ?? defaultMax });
    return { rgb, generation, text: taskText(this.pipe.tokenizer, generation.tokens) };
  }

  private decoder(vae: string | VqVaeDecoderWeights | undefined): Promise<VqVaeDecoder> {
    const key = vae ?? '';
    let d = this.decoders.get(key);
    if (!d) {
      d = (async () => {
        const weights = typeof vae === 'object' ? vae : await loadVqVaeDecoderWeights(await resolveVaePath(vae, this.options.modelDir));
        return new VqVaeDecoder(this.pipe.backend, weights);
      })();
      // A failed load is not cached: the user may fix the path and retry.
      d.catch(() => this.decoders.delete(key));
      this.decoders.set(key, d);
    }
    return d;
  }
}

/** Makes sure a value is a task pipeline, with a clear error otherwise. */
export function asTaskPipeline(pipe: unknown): TaskPipeline {
  const p = pipe as Partial<TaskPipeline> | null;
  if (!p || typeof p.generate !== 'function' || !p.tokenizer || !p.backend) {
    throw new PaliGemmaError('PaliGemmaTasks needs a pipeline (from createPipeline)', 'invalid_argument');
  }
  return p as TaskPipeline;
}
