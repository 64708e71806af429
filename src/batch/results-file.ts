/**
 * The results file: one JSON line per job id. Writing is idempotent and atomic: the outcomes
 * are merged with what the file already holds (one line per id, a completed result is never
 * replaced by a failure), written to a temp file beside it and renamed over it, so a reader or
 * a crash never sees half a file.
 */
import { randomBytes } from 'node:crypto';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { PaliGemmaError } from '../interfaces/errors.js';
import type { JobOutcome } from './batch-job.js';

/** The outcomes a results file holds, keyed by id (an absent file holds none). */
export async function readResultsFile(path: string): Promise<Map<string, JobOutcome>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return new Map();
    throw new PaliGemmaError(`cannot read results file ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const out = new Map<string, JobOutcome>();
  text.split('\n').forEach((raw, i) => {
    if (raw.trim() === '') return;
    let v: JobOutcome;
    try {
      v = JSON.parse(raw) as JobOutcome;
    } catch {
      throw new PaliGemmaError(`results file ${path} line ${i + 1} is not JSON: refusing to overwrite a file that is not ours`);
    }
    if (typeof v?.id !== 'string' || (v.status !== 'completed' && v.status !== 'failed')) {
      throw new PaliGemmaError(`results file ${path} line ${i + 1} is not a job result ({id, status}): refusing to overwrite it`);
    }
    out.set(v.id, v);
  });
  return out;
}

/**
 * Merges `outcomes` into the results file at `path`. Lines already there keep their place; new
 * ids follow in the order given. Returns the number of lines written.
 */
export async function writeResultsFile(path: string, outcomes: readonly JobOutcome[]): Promise<number> {
  const merged = await readResultsFile(path);
  for (const o of outcomes) {
    const old = merged.get(o.id);
    if (old?.status === 'completed' && o.status === 'failed') continue;
    merged.set(o.id, o);
  }
  const text = [...merged.values()].map((o) => `${JSON.stringify(o)}\n`).join('');
  const temp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    await writeFile(temp, text);
    await rename(temp, path);
  } catch (e) {
    await rm(temp, { force: true });
    throw new PaliGemmaError(`cannot write results file ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return merged.size;
}
