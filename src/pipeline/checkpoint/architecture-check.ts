/**
 * config.json names the model it describes in `architectures` and each sub-config's
 * `model_type`; anything but PaliGemma over a SigLIP vision tower is refused by name rather than
 * run as PaliGemma. Fields this SDK does not read are accepted: transformers writes many.
 *
 * ```ts
 * checkArchitecture(json, 'model/config.json');   // throws PaliGemmaError for e.g. architectures ["LlavaForConditionalGeneration"]
 * ```
 */
import { PaliGemmaError } from '../../interfaces/errors.js';

/** Vision `model_type` values of the SigLIP tower PaliGemma uses. */
export const VISION_MODEL_TYPES: readonly string[] = ['siglip_vision_model'];

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
}
