/**
 * The default models of a conformance run: the tiny checkpoints (random weights, real Hugging
 * Face layout) in their three attention layouts, built into a temporary folder per run.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTinyCheckpoint, gqaSpec, mhaSpec, mqaSpec } from '../testing/tiny-checkpoint.js';

const TINY = [
  { label: 'tiny-mqa (1 kv head)', folder: 'mqa', spec: mqaSpec },
  { label: 'tiny-mha', folder: 'mha', spec: mhaSpec },
  { label: 'tiny-gqa (2 kv groups)', folder: 'gqa', spec: gqaSpec },
];

export interface ModelFolder {
  label: string;
  dir: string;
}

/** Builds the tiny checkpoints; `remove()` deletes them again. */
export async function buildTinyModels(): Promise<{ models: ModelFolder[]; remove(): Promise<void> }> {
  const root = await mkdtemp(join(tmpdir(), 'paligemma-conformance-'));
  const models: ModelFolder[] = [];
  for (const t of TINY) {
    const dir = join(root, t.folder);
    await buildTinyCheckpoint(dir, t.spec());
    models.push({ label: t.label, dir });
  }
  return { models, remove: () => rm(root, { recursive: true, force: true }) };
}

/** Labels of the default models, known before they are built (for test titles). */
export const TINY_MODEL_LABELS: readonly string[] = TINY.map((t) => t.label);
