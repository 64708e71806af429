/**
 * Argument checks of the task helpers (detect, segment, caption, ocr, answer), as the
 * pipeline's own entry points check theirs: before any work, a PaliGemmaError with code
 * invalid_argument (or unknown_option for a key no task reads) naming the argument. The
 * generation options inside are checked again, by value, by generate().
 */
import { GENERATE_OPTIONS, checkImage, checkKnownKeys, invalidArgument, isObject } from '../generation/api-arguments.js';

/** Options each task reads besides generate()'s. */
const TASK_OPTIONS = {
  detect: [],
  segment: ['vae'],
  caption: ['lang'],
  ocr: [],
  answer: ['lang'],
} as const satisfies Record<string, readonly string[]>;

export type TaskName = keyof typeof TASK_OPTIONS;

/** The image and the options object of a task call. */
export function checkTaskCall(task: TaskName, image: unknown, opts: unknown): void {
  checkImage(image);
  if (opts === undefined) return;
  if (!isObject(opts)) throw invalidArgument(`${task} options`, 'an object', opts);
  checkKnownKeys(`${task} option`, opts, [...GENERATE_OPTIONS, ...TASK_OPTIONS[task]]);
  if (opts.lang !== undefined && typeof opts.lang !== 'string') throw invalidArgument('lang', 'a language code such as "en"', opts.lang);
  if (opts.vae !== undefined && !(typeof opts.vae === 'string' && opts.vae !== '') && !(isObject(opts.vae) && opts.vae.codebook instanceof Float32Array)) {
    throw invalidArgument('vae', 'the path of vae-oid.npz (or a safetensors conversion) or weights from loadVqVaeDecoderWeights', opts.vae);
  }
}

/** detect's labels: one string or an array of strings (each is checked for ';' and '<' when the prompt is made). */
export function checkLabels(labels: unknown): void {
  if (typeof labels === 'string') return;
  if (!Array.isArray(labels) || labels.some((l) => typeof l !== 'string')) {
    throw invalidArgument('detect labels', 'a string or an array of strings', labels);
  }
}

