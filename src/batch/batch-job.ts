/**
 * A batch job and what comes of it. One JSONL line of a job file is one job; its `id` is the
 * job's identity everywhere (the queue's job id, the results file's key), so submitting a file
 * twice or running a job twice still gives one result per id.
 *
 * ```jsonl
 * {"id": "cat-1", "image": "photos/cat.jpg", "task": "caption"}
 * {"id": "cat-2", "image": "https://example.test/b.png", "prompt": "detect cat", "options": {"maxNewTokens": 16}}
 * ```
 */
import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { PaliGemmaError } from '../interfaces/errors.js';
import { taskPrompt } from './task-prompt.js';

/** Generation options a job line may set (the same meanings as `paligemma generate`'s flags). */
export interface JobOptions {
  maxNewTokens?: number;
  seed?: number;
  /** Sampler name: greedy (default), temperature, top-k, top-p, or a plugin's. */
  sampler?: string;
  temperature?: number;
  topK?: number;
  topP?: number;
  logprobs?: number;
}

/** A validated job: `image` is an absolute path or an http(s) URL; a task is already its prompt. */
export interface BatchJob {
  id: string;
  image: string;
  prompt: string;
  options: JobOptions;
  /** 1-based line of the job file it came from (results keep the file's order). */
  line: number;
}

/** What a completed job records. */
export interface JobResult {
  text: string;
  tokens: number[];
  finishReason: 'eos' | 'length' | 'aborted';
  logprobs?: Array<{ token: number; logprob: number; top: Array<{ token: number; logprob: number }> }>;
}

/** One line of a results file. */
export type JobOutcome =
  | ({ id: string; status: 'completed' } & JobResult)
  | { id: string; status: 'failed'; error: string };

/** Job counts as `batch status` prints them. */
export interface QueueCounts {
  waiting: number;
  active: number;
  completed: number;
  failed: number;
}

const LINE_FIELDS = ['id', 'image', 'prompt', 'task', 'options'];
const OPTION_CHECKS: Record<keyof JobOptions, [(v: unknown) => boolean, string]> = {
  maxNewTokens: [(v) => Number.isInteger(v) && (v as number) >= 1, 'an integer ≥ 1'],
  seed: [(v) => Number.isInteger(v), 'an integer'],
  sampler: [(v) => typeof v === 'string' && v !== '', 'a sampler name'],
  temperature: [(v) => typeof v === 'number' && v >= 0, 'a number ≥ 0'],
  topK: [(v) => Number.isInteger(v) && (v as number) >= 1, 'an integer ≥ 1'],
  topP: [(v) => typeof v === 'number' && v > 0 && v <= 1, 'a number in (0, 1]'],
  logprobs: [(v) => Number.isInteger(v) && (v as number) >= 1, 'an integer ≥ 1'],
};

/**
 * Parses one job line. A relative image path is resolved against `baseDir` (the job file's
 * folder), so workers see the same absolute path; `where` prefixes every error.
 */
export function parseJobLine(text: string, line: number, baseDir: string, where: string): BatchJob {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new PaliGemmaError(`${where}: not valid JSON (${(e as Error).message})`, 'invalid_job');
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw new PaliGemmaError(`${where}: expected an object {id, image, prompt | task, options}`, 'invalid_job');
  }
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!LINE_FIELDS.includes(k)) throw new PaliGemmaError(`${where}: unknown field ${JSON.stringify(k)} (expected ${LINE_FIELDS.join(', ')})`, 'invalid_job');
  }
  // Numbers are accepted as ids because JSONL files often count lines; the id is a string from here on.
  const id = typeof o.id === 'number' && Number.isInteger(o.id) ? String(o.id) : o.id;
  if (typeof id !== 'string' || id === '' || id.length > 512) {
    throw new PaliGemmaError(`${where}: id must be a non-empty string (at most 512 characters)`, 'invalid_job');
  }
  if (typeof o.image !== 'string' || o.image === '') {
    throw new PaliGemmaError(`${where}: image must be a file path or an http(s) URL`, 'invalid_job');
  }
  const isUrl = /^https?:\/\//i.test(o.image);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(o.image) && !isUrl) {
    throw new PaliGemmaError(`${where}: image URL must be http or https, got ${JSON.stringify(o.image)}`, 'invalid_job');
  }
  const image = isUrl || isAbsolute(o.image) ? o.image : resolve(baseDir, o.image);
  if ((o.prompt === undefined) === (o.task === undefined)) {
    throw new PaliGemmaError(`${where}: give exactly one of prompt or task`, 'invalid_job');
  }
  let prompt: string;
  if (o.prompt !== undefined) {
    if (typeof o.prompt !== 'string') throw new PaliGemmaError(`${where}: prompt must be a string`, 'invalid_job');
    prompt = o.prompt;
  } else {
    prompt = taskPrompt(o.task, `${where}: task`);
  }
  const options = parseOptions(o.options, where);
  return { id, image, prompt, options, line };
}

function parseOptions(v: unknown, where: string): JobOptions {
  if (v === undefined) return {};
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new PaliGemmaError(`${where}: options must be an object`, 'invalid_job');
  const out: Record<string, unknown> = {};
  for (const [k, value] of Object.entries(v)) {
    const check = OPTION_CHECKS[k as keyof JobOptions];
    if (!check) throw new PaliGemmaError(`${where}: unknown option ${JSON.stringify(k)} (expected ${Object.keys(OPTION_CHECKS).join(', ')})`, 'invalid_job');
    if (!check[0](value)) throw new PaliGemmaError(`${where}: options.${k} must be ${check[1]}, got ${JSON.stringify(value)}`, 'invalid_job');
    out[k] = value;
  }
  return out as JobOptions;
}

/**
 * Reads and validates a whole job file before anything is queued, so a typo on line 900 fails
 * the submit instead of job 900. Blank lines are skipped; an id given twice is refused (the
 * second line would silently be dropped otherwise).
 */
export async function readJobFile(path: string): Promise<BatchJob[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new PaliGemmaError(`cannot read job file ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'invalid_job');
  }
  const baseDir = dirname(resolve(path));
  const jobs: BatchJob[] = [];
  const seen = new Map<string, number>();
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i].trim();
    if (raw === '') continue;
    const job = parseJobLine(raw, i + 1, baseDir, `${path} line ${i + 1}`);
    const first = seen.get(job.id);
    if (first !== undefined) throw new PaliGemmaError(`${path} line ${i + 1}: id ${JSON.stringify(job.id)} is already used on line ${first}`, 'invalid_job');
    seen.set(job.id, i + 1);
    jobs.push(job);
  }
  if (jobs.length === 0) throw new PaliGemmaError(`job file ${path} has no jobs`, 'invalid_job');
  return jobs;
}
