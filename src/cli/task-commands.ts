/**
 * `paligemma detect|segment|caption|ocr|answer`: the task prompts, with boxes and masks in
 * original-image pixels, `--json` for scripts and `--draw out.png` for a picture.
 */
import { writeFile } from 'node:fs/promises';
import { Command } from 'commander';
import { PaliGemmaError } from '../interfaces/errors.js';
import type { GenerateOptions, GenerationResult } from '../generation/generation-types.js';
import type { PaliGemmaPipeline } from '../paligemma-pipeline.js';
import { decodeToRgb } from '../image/siglip-image-processor.js';
import { drawObjects } from '../tasks/draw-overlay.js';
import { maskToRle } from '../tasks/mask-paste.js';
import type { DetectResult, SegmentResult, TextTaskResult } from '../tasks/paligemma-tasks.js';
import { parseInteger } from './cli-errors.js';
import { IMAGE_HELP, imageArg } from './image-arg.js';
import { onInterrupt } from './interrupt.js';
import { collect, parseKeyValueOptions } from './key-value-options.js';
import { addModelOptions, pipelineFor, type ModelFlags } from './model-options.js';

interface TaskFlags extends ModelFlags {
  image: string;
  maxNewTokens?: string;
  sampler?: string;
  samplerOption: string[];
  seed?: string;
  json?: boolean;
  draw?: string;
  vae?: string;
  lang?: string;
}

function taskCommand(name: string, description: string): Command {
  return addModelOptions(new Command(name)
    .description(description)
    .requiredOption('--image <file>', IMAGE_HELP)
    .option('--max-new-tokens <n>', 'stop after this many tokens (default: 256 for detect/segment, 64 otherwise)')
    .option('--sampler <name>', 'greedy (default), temperature, top-k, top-p, or a plugin sampler')
    .option('--sampler-option <key=value>', 'sampler option (VALUE read as JSON when it parses); repeatable', collect, [])
    .option('--seed <s>', 'RNG seed', '0')
    .option('--json', 'print one JSON object'));
}

/** Loads the pipeline, runs `task`, closes; the image is read (stdin too) before the model loads. */
async function runTask<T>(flags: TaskFlags, task: (pipe: PaliGemmaPipeline, image: Awaited<ReturnType<typeof imageArg>>, gen: GenerateOptions) => Promise<T>): Promise<T> {
  const maxNewTokens = parseInteger('--max-new-tokens', flags.maxNewTokens, 1);
  const seed = parseInteger('--seed', flags.seed)!;
  const samplerOptions = parseKeyValueOptions('--sampler-option', flags.samplerOption);
  const image = await imageArg(flags.image);
  const pipe = await pipelineFor(flags, { sampler: flags.sampler ?? 'greedy', samplerOptions });
  // Ctrl-C stops the generation; what was found is printed (finishReason 'aborted') and the exit is 130.
  const interrupt = onInterrupt();
  try {
    return await task(pipe, image, { seed, signal: interrupt.signal, ...(maxNewTokens !== undefined ? { maxNewTokens } : {}) });
  } finally {
    await pipe.close();
    interrupt.release();
  }
}

const round = (v: number) => Math.round(v * 100) / 100;
const boxText = (b: { x0: number; y0: number; x1: number; y1: number }) => `${round(b.x0)},${round(b.y0)},${round(b.x1)},${round(b.y1)}`;
const generationJson = (g: GenerationResult) => ({ finishReason: g.finishReason, tokens: g.tokens, backend: g.backend });

function printLocResult(r: DetectResult | SegmentResult, flags: TaskFlags, json: unknown): void {
  if (flags.json) {
    process.stdout.write(`${JSON.stringify(json)}\n`);
    return;
  }
  for (const o of r.objects) {
    const area = 'mask' in o ? `  mask ${(o.mask as { binary: Uint8Array }).binary.reduce((a, b) => a + b, 0)} px` : '';
    process.stdout.write(`${o.label}\t${boxText(o.box)}${area}\n`);
  }
  if (r.objects.length === 0) process.stderr.write('no objects found\n');
  for (const s of r.skipped) process.stderr.write(`skipped ${JSON.stringify(s.text)}: ${s.reason}\n`);
}

async function draw(flags: TaskFlags, image: Awaited<ReturnType<typeof imageArg>>, r: DetectResult | SegmentResult): Promise<void> {
  if (!flags.draw) return;
  const rgb = await decodeToRgb(image);
  try {
    await writeFile(flags.draw, await drawObjects(rgb, r.objects));
  } catch (e) {
    throw new PaliGemmaError(`cannot write --draw ${flags.draw}: ${(e as Error).message.split('\n')[0]}`);
  }
  if (!flags.json) process.stderr.write(`wrote ${flags.draw}\n`);
}

/** Labels from the arguments; `cat ; dog` as one argument works too. */
function labelsOf(args: string[]): string[] {
  return args.flatMap((a) => a.split(';')).map((s) => s.trim()).filter((s) => s !== '');
}

export function detectCommand(): Command {
  return taskCommand('detect', 'boxes of the named objects (prompt "detect a ; b"), in image pixels')
    .argument('<labels...>', 'object names, e.g. cat dog (or "cat ; dog")')
    .option('--draw <out.png>', 'write the image with the boxes and labels drawn')
    .action(async (labels: string[], flags: TaskFlags) => {
      await runTask(flags, async (pipe, image, gen) => {
        const r = await pipe.detect(image, labelsOf(labels), gen);
        await draw(flags, image, r);
        printLocResult(r, flags, {
          prompt: r.prompt, text: r.text, image: r.image,
          objects: r.objects.map((o) => ({ label: o.label, box: o.box, loc: o.loc })),
          skipped: r.skipped, ...generationJson(r.generation),
        });
      });
    });
}

export function segmentCommand(): Command {
  return taskCommand('segment', 'box and mask of an object (prompt "segment a"); needs the VQ-VAE weights')
    .argument('<label...>', 'what to segment, e.g. cat or "red car"')
    .option('--vae <path>', 'VQ-VAE weights: vae-oid.npz or a safetensors conversion (default: $PALIGEMMA_VAE, then vae-oid.npz in the model folder)')
    .option('--draw <out.png>', 'write the image with the masks, boxes and labels drawn')
    .action(async (label: string[], flags: TaskFlags) => {
      await runTask(flags, async (pipe, image, gen) => {
        const r = await pipe.segment(image, label.join(' '), { ...gen, ...(flags.vae ? { vae: flags.vae } : {}) });
        await draw(flags, image, r);
        printLocResult(r, flags, {
          prompt: r.prompt, text: r.text, image: r.image,
          objects: r.objects.map((o) => ({
            label: o.label, box: o.box, loc: o.loc, seg: o.seg,
            mask: { width: o.mask.width, height: o.mask.height, area: o.mask.binary.reduce((a, b) => a + b, 0), rle: maskToRle(o.mask.binary) },
          })),
          skipped: r.skipped, ...generationJson(r.generation),
        });
      });
    });
}

function printText(r: TextTaskResult, flags: TaskFlags): void {
  process.stdout.write(flags.json ? `${JSON.stringify({ prompt: r.prompt, text: r.text, ...generationJson(r.generation) })}\n` : `${r.text}\n`);
}

export function captionCommand(): Command {
  return taskCommand('caption', 'a short caption (prompt "caption <lang>")')
    .option('--lang <code>', 'language of the caption', 'en')
    .action(async (flags: TaskFlags) => {
      await runTask(flags, async (pipe, image, gen) => printText(await pipe.caption(image, { ...gen, lang: flags.lang }), flags));
    });
}

export function ocrCommand(): Command {
  return taskCommand('ocr', 'the text in the image (prompt "ocr")')
    .action(async (flags: TaskFlags) => {
      await runTask(flags, async (pipe, image, gen) => printText(await pipe.ocr(image, gen), flags));
    });
}

export function answerCommand(): Command {
  return taskCommand('answer', 'answer a question about the image (prompt "answer <lang> <question>")')
    .argument('<question...>', 'the question')
    .option('--lang <code>', 'language of the question and answer', 'en')
    .action(async (question: string[], flags: TaskFlags) => {
      await runTask(flags, async (pipe, image, gen) => printText(await pipe.answer(image, question.join(' '), { ...gen, lang: flags.lang }), flags));
    });
}
