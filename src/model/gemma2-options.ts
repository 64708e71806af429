/**
 * The two Gemma 2 conventions on which the references disagree, as explicit options. Defaults
 * follow Hugging Face transformers' current PaliGemmaForConditionalGeneration.
 *
 * ```ts
 * createPipeline({ model: 'paligemma2-3b-pt-224', gemma2: { finalLogitSoftcap: 'auto' } });
 * ```
 */
import { PaliGemmaError } from '../interfaces/errors.js';
import type { TextConfig } from './config-types.js';

export interface Gemma2Options {
  /**
   * Final logit soft-cap, logits ← cap · tanh(logits / cap).
   * - 'off' (default): none, as the transformers 5 PaliGemma head does;
   * - 'auto': text_config.final_logit_softcapping (30 in the published configs), as big_vision,
   *   older transformers and Gemma2ForCausalLM do;
   * - a positive number: that cap.
   * Greedy tokens agree either way; log-probabilities, `score` and temperature sampling do not.
   */
  finalLogitSoftcap?: 'auto' | 'off' | number;
  /**
   * Sliding-window attention on the layers text_config.layer_types marks 'sliding_attention'
   * (even layers by default).
   * - 'auto' (default): text_config.sliding_window with the prefix rule of transformers: rows of
   *   the bidirectional prefix (image + prompt) see the whole prefix, later rows see causal ∩ window;
   * - 'off': no window on any layer, as big_vision runs PaliGemma 2.
   * The two differ only when a row sits more than sliding_window rows after a key it reads
   * outside the prefix (896 px: 4096 image rows plus the prompt).
   */
  slidingWindow?: 'auto' | 'off';
}

/** The effective values for one model. */
export interface ResolvedGemma2Options {
  finalLogitSoftcap: number | undefined;
  slidingWindow: number | undefined;
}

export function resolveGemma2Options(text: TextConfig, opts: Gemma2Options = {}): ResolvedGemma2Options {
  const cap = opts.finalLogitSoftcap ?? 'off';
  let finalLogitSoftcap: number | undefined;
  if (cap === 'auto') finalLogitSoftcap = text.finalLogitSoftcapping;
  else if (cap === 'off') finalLogitSoftcap = undefined;
  else if (typeof cap === 'number' && Number.isFinite(cap) && cap > 0) finalLogitSoftcap = cap;
  else {
    throw new PaliGemmaError(`invalid gemma2.finalLogitSoftcap ${JSON.stringify(cap)}: expected 'auto', 'off' or a positive number`, 'invalid_option');
  }
  const window = opts.slidingWindow ?? 'auto';
  if (window !== 'auto' && window !== 'off') {
    throw new PaliGemmaError(`invalid gemma2.slidingWindow ${JSON.stringify(window)}: expected 'auto' or 'off'`, 'invalid_option');
  }
  return { finalLogitSoftcap, slidingWindow: window === 'auto' ? text.slidingWindow : undefined };
}

/** Parses a CLI value of --final-logit-softcap: auto, off or a number. */
export function parseFinalLogitSoftcap(value: string): Gemma2Options['finalLogitSoftcap'] {
  if (value === 'auto' || value === 'off') return value;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) {
    throw new PaliGemmaError(`invalid --final-logit-softcap ${JSON.stringify(value)}: expected auto, off or a positive number`, 'invalid_option');
  }
  return n;
}
