/**
 * A job's `task` turned into the prompt PaliGemma's mix checkpoints were trained on
 * (`caption en`, `ocr`, `detect cat ; dog`, `segment cat`, `answer en QUESTION`). The batch
 * results carry the raw text and tokens; turning loc/seg tokens into boxes and masks is the task
 * helpers' job.
 *
 * Merge note: a minimal local builder, kept here so batch does not wait on src/tasks/; once the
 * task module lands, this file should call its prompt builders instead of holding its own.
 */
import { PaliGemmaError } from '../interfaces/errors.js';

export type BatchTask =
  | string
  | { type: 'caption'; lang?: string }
  | { type: 'ocr' }
  | { type: 'detect'; labels: string[] }
  | { type: 'segment'; labels: string[] }
  | { type: 'answer'; question: string; lang?: string };

export const TASK_TYPES = ['caption', 'ocr', 'detect', 'segment', 'answer'] as const;

const FIELDS: Record<string, readonly string[]> = {
  caption: ['lang'], ocr: [], detect: ['labels'], segment: ['labels'], answer: ['question', 'lang'],
};

/**
 * The prompt for a task: a string names a task with no arguments (`"caption"`, `"ocr"`); an object
 * carries its arguments. `where` prefixes every error (e.g. `jobs.jsonl line 3: task`).
 */
export function taskPrompt(task: unknown, where: string): string {
  const t = typeof task === 'string' ? { type: task } : task;
  if (t === null || typeof t !== 'object' || Array.isArray(t)) {
    throw new PaliGemmaError(`${where} must be a task name (${TASK_TYPES.join(', ')}) or an object with a type, got ${JSON.stringify(task)}`);
  }
  const o = t as Record<string, unknown>;
  const type = o.type;
  if (typeof type !== 'string' || !(type in FIELDS)) {
    throw new PaliGemmaError(`${where}: unknown type ${JSON.stringify(type)}: expected one of ${TASK_TYPES.join(', ')}`);
  }
  for (const k of Object.keys(o)) {
    if (k !== 'type' && !FIELDS[type].includes(k)) {
      throw new PaliGemmaError(`${where}: ${type} takes no field ${JSON.stringify(k)} (expected ${FIELDS[type].join(', ') || 'none'})`);
    }
  }
  const text = (k: string, required: boolean): string | undefined => {
    const v = o[k];
    if (v === undefined && !required) return undefined;
    if (typeof v !== 'string' || v.trim() === '') throw new PaliGemmaError(`${where}: ${type} needs ${k} as a non-empty string`);
    return v;
  };
  const labels = (): string => {
    const v = o.labels;
    if (!Array.isArray(v) || v.length === 0 || v.some((l) => typeof l !== 'string' || l.trim() === '' || l.includes(';'))) {
      throw new PaliGemmaError(`${where}: ${type} needs labels as a non-empty list of strings without ';'`);
    }
    return (v as string[]).map((l) => l.trim()).join(' ; ');
  };
  switch (type) {
    case 'caption': return `caption ${text('lang', false) ?? 'en'}`;
    case 'ocr': return 'ocr';
    case 'detect': return `detect ${labels()}`;
    case 'segment': return `segment ${labels()}`;
    default: return `answer ${text('lang', false) ?? 'en'} ${text('question', true)}`;
  }
}
