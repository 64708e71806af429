/**
 * The default models of a conformance run: the tiny checkpoints (random weights, real Hugging
 * Face layout) in their three attention layouts, and two tiny PaliGemma 2 ones (Gemma 2 decoder:
 * soft-caps, a window of 5 shorter than the 21-row prefix, four norms per layer), built into a
 * temporary folder per run.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTinyCheckpoint, gemma2Spec, gqaSpec, mhaSpec, mqaSpec, type TinySpec } from '../tiny-models/tiny-checkpoint.js';

const TINY = [
  { label: 'tiny-mqa (1 kv head)', folder: 'mqa', spec: mqaSpec },
  { label: 'tiny-mha', folder: 'mha', spec: mhaSpec },
  { label: 'tiny-gqa (2 kv groups)', folder: 'gqa', spec: gqaSpec },
  { label: 'tiny-paligemma2 (Gemma 2, window 5)', folder: 'gemma2', spec: gemma2Spec },
  { label: 'tiny-paligemma2 (1 kv head, full first, bf16)', folder: 'gemma2-mqa', spec: gemma2MqaSpec },
];

/**
 * The second PaliGemma 2 layout: one kv head, layer_types full/sliding (the window on the odd
 * layer, unlike the default), stored in bf16 as the published checkpoints are, newer weight names.
 */
function gemma2MqaSpec(): TinySpec {
  const base = gemma2Spec();
  return {
    ...base,
    text: { ...base.text, numKvHeads: 1, numLayers: 2 },
    gemma2: { ...base.gemma2!, layerTypes: ['full_attention', 'sliding_attention'] },
    dtype: 'BF16',
    nameScheme: 'newer',
  };
}

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
