/**
 * config.json names the model it describes in `architectures` and each sub-config's
 * `model_type`; anything but PaliGemma over a SigLIP vision tower is refused by name rather than
 * run as PaliGemma. Fields this SDK does not read are accepted: transformers writes many.
 *
 * ```ts
 * checkArchitecture(json, 'model/config.json');   // throws PaliGemmaError for e.g. architectures ["LlavaForConditionalGeneration"]
 * ```
 */
import { PaliGemmaError } from '../interfaces/errors.js';

/** Vision `model_type` values of the SigLIP tower PaliGemma uses. */
export const VISION_MODEL_TYPES: readonly string[] = ['siglip_vision_model'];

/**
 * Activation names Hugging Face resolves to the tanh-approximated GELU, the one every backend
 * computes (0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))). Exact-erf 'gelu' and anything else
 * would compute another function than the file asks for.
 */
export const TANH_GELU_NAMES: readonly string[] = ['gelu_pytorch_tanh', 'gelu_new', 'gelu_fast', 'gelu_python_tanh'];

function fail(path: string, message: string): never {
  throw new PaliGemmaError(`${path}: ${message}`, 'unsupported_model');
}

export function checkArchitecture(json: Record<string, unknown>, path: string): void {
  const arch = json.architectures;
  if (arch !== undefined && arch !== null) {
    if (!Array.isArray(arch) || !arch.every((a) => typeof a === 'string')) {
      throw new PaliGemmaError(`${path}: architectures must be a list of class names, got ${JSON.stringify(arch)}`, 'invalid_config');
    }
    const other = (arch as string[]).filter((a) => !a.startsWith('PaliGemma'));
    if (other.length > 0) {
      fail(path, `architectures ${JSON.stringify(arch)} names ${other.join(', ')}, which is not supported (expected PaliGemmaForConditionalGeneration)`);
    }
  }
  const vision = json.vision_config;
  const vt = typeof vision === 'object' && vision !== null ? (vision as Record<string, unknown>).model_type : undefined;
  if (vt !== undefined && !VISION_MODEL_TYPES.includes(vt as string)) {
    fail(path, `vision_config.model_type ${JSON.stringify(vt)} is not supported (expected ${VISION_MODEL_TYPES.map((t) => JSON.stringify(t)).join(' or ')}, the SigLIP vision tower)`);
  }
  const text = typeof json.text_config === 'object' && json.text_config !== null ? json.text_config as Record<string, unknown> : {};
  const visionObj = typeof vision === 'object' && vision !== null ? vision as Record<string, unknown> : {};
  // Gemma configs name it hidden_activation (hidden_act is the legacy spelling it falls back to).
  const acts: [string, unknown][] = [
    ['text_config.hidden_activation', text.hidden_activation ?? text.hidden_act],
    ['vision_config.hidden_act', visionObj.hidden_act],
  ];
  for (const [field, act] of acts) {
    if (act !== undefined && act !== null && !TANH_GELU_NAMES.includes(act as string)) {
      fail(path, `${field} ${JSON.stringify(act)} is not supported: PaliGemma runs the tanh GELU (${TANH_GELU_NAMES.map((n) => JSON.stringify(n)).join(', ')})`);
    }
  }
}

/**
 * text_config's RoPE base: `rope_theta`, or `rope_parameters.rope_theta` as transformers 5
 * writes it (undefined when neither is given). Only the plain ("default") RoPE is computed, so
 * any scaling type is refused.
 */
export function ropeThetaOf(json: Record<string, unknown>, path: string): number | undefined {
  const text = json.text_config as Record<string, unknown> | undefined;
  const rp = text?.rope_parameters ?? text?.rope_scaling;
  let fromParams: number | undefined;
  if (rp !== undefined && rp !== null) {
    if (typeof rp !== 'object' || Array.isArray(rp)) {
      throw new PaliGemmaError(`${path}: text_config.rope_parameters must be an object, got ${JSON.stringify(rp)}`, 'invalid_config');
    }
    const r = rp as Record<string, unknown>;
    const type = r.rope_type ?? r.type;
    if (type !== undefined && type !== 'default') {
      fail(path, `text_config RoPE type ${JSON.stringify(type)} is not supported (only "default" RoPE is computed)`);
    }
    if (r.rope_theta !== undefined) {
      if (typeof r.rope_theta !== 'number' || !Number.isFinite(r.rope_theta) || r.rope_theta <= 0) {
        throw new PaliGemmaError(`${path}: text_config.rope_parameters.rope_theta must be a positive number, got ${JSON.stringify(r.rope_theta)}`, 'invalid_config');
      }
      fromParams = r.rope_theta;
    }
  }
  const direct = text?.rope_theta;
  if (fromParams !== undefined && typeof direct === 'number' && direct !== fromParams) {
    throw new PaliGemmaError(`${path}: text_config.rope_theta ${direct} disagrees with rope_parameters.rope_theta ${fromParams}`, 'invalid_config');
  }
  return fromParams;
}
