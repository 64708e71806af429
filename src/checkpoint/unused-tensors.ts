/**
 * The error for stored tensors that the configured architecture would not use. Loading around
 * them would run the files as another model than they describe (e.g. PaliGemma 1 over weights
 * that carry Gemma 2's extra norms), so they are refused by name.
 *
 * ```ts
 * throw unusedTensorError([{ name: 'language_model.model.layers.0.post_feedforward_layernorm.weight', file }], config);
 * ```
 */
import { PaliGemmaError } from '../interfaces/errors.js';
import type { PaliGemmaConfig } from '../model/config-types.js';

const SHOWN = 3;

/** Names that only another architecture stores, and what they point to. */
const HINTS: readonly [RegExp, string][] = [
  [/\.(pre|post)_feedforward_layernorm\./, 'Gemma 2 (PaliGemma 2) norms: set text_config.model_type to "gemma2" if this is a PaliGemma 2 checkpoint'],
  [/^(model\.)?vision_tower\.vision_model\.head\./, 'a SigLIP pooling head, which PaliGemma does not use'],
];

export function unusedTensorError(unused: readonly { name: string; file: string }[], config: PaliGemmaConfig): PaliGemmaError {
  const type = config.text.modelType ?? 'gemma';
  const shown = unused.slice(0, SHOWN).map((u) => u.name).join(', ');
  const more = unused.length > SHOWN ? ` and ${unused.length - SHOWN} more` : '';
  const files = [...new Set(unused.map((u) => u.file))].join(', ');
  const hint = HINTS.find(([re]) => unused.some((u) => re.test(u.name)))?.[1];
  return new PaliGemmaError(
    `${files} stores ${unused.length} tensor(s) that PaliGemma with text_config.model_type "${type}" does not use: `
    + `${shown}${more}${hint ? ` (${hint})` : ''}; refusing to run the files as a different model than they describe`,
    'unexpected_tensor');
}
