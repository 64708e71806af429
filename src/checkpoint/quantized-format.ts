/**
 * The folder `paligemma quantize` writes (docs/quantized-format.md): a PaliGemma folder whose
 * linear weights are stored block-quantized, in the layout onnxruntime's MatMulNBits reads
 * (src/tensor/block-quantization.ts), so the loader hands them over without
 * quantizing again.
 *
 * - config.json: the source's, plus `quantization_config` (QuantizationMarker below).
 * - model.safetensors: every tensor that is not quantized (embedding table, norms, biases,
 *   patch and position embeddings), as the source stored it.
 * - quantized.safetensors: for each quantized [N, K] weight NAME (canonical name),
 *   `NAME.qweight` U8 [N, ceil(K/B), B·bits/8] and `NAME.scales` F32 [N, ceil(K/B)]; the tied
 *   lm_head (quantized from the embedding table) as `language_model.lm_head.weight.*`.
 * - every other file of the source folder (tokenizer, preprocessor config), copied.
 */
import { PaliGemmaError } from '../interfaces/errors.js';
import type { PaliGemmaConfig } from '../model/config-types.js';
import { EMBED_TOKENS, LM_HEAD, expectedShapes } from './weight-names.js';

export const QUANTIZED_WEIGHTS_FILE = 'quantized.safetensors';
/** `quantization_config.quant_method` of our folders; a loader that does not know it refuses the folder. */
export const QUANT_METHOD = 'paligemma-blockwise';
export const QUANT_FORMAT_VERSION = 1;

export type QuantizedBits = 4 | 8;

/** `quantization_config` in config.json. */
export interface QuantizationMarker {
  quant_method: typeof QUANT_METHOD;
  format_version: number;
  bits: QuantizedBits;
  block_size: number;
  symmetric: true;
  /** The lm_head is the embedding table (its quantized copy is stored as the lm_head). */
  tied_lm_head: boolean;
  /** Canonical names of the quantized weights, in file order. */
  quantized: string[];
}

/** Suffixes of a quantized weight's two tensors in quantized.safetensors. */
export const QWEIGHT = '.qweight';
export const QSCALES = '.scales';

/** Linear weights ([N, K], used as x · Wᵀ): the ones a backend's weight-only quantization takes. */
const LINEAR = /\.(q_proj|k_proj|v_proj|o_proj|out_proj|fc1|fc2|gate_proj|up_proj|down_proj|linear)\.weight$/;

/** The canonical names `paligemma quantize` stores quantized, in expectedShapes order, lm_head last. */
export function quantizedNames(config: PaliGemmaConfig): string[] {
  const names = [...expectedShapes(config).keys()].filter((n) => LINEAR.test(n));
  names.push(LM_HEAD);
  return names;
}

/** [N, K] of a quantized name (the lm_head is the embedding table's shape). */
export function quantizedShape(config: PaliGemmaConfig, name: string): [number, number] {
  const shape = expectedShapes(config).get(name === LM_HEAD ? EMBED_TOKENS : name);
  if (!shape || shape.length !== 2) throw new Error(`quantizedShape: ${name} is not a 2-D weight`);
  return [shape[0], shape[1]];
}

const bad = (path: string, what: string): never => {
  throw new PaliGemmaError(`${path}: quantization_config ${what}; re-create the folder with paligemma quantize`, 'corrupt_checkpoint');
};

/**
 * config.json's `quantization_config` as a marker, undefined when absent; anything else under
 * that key (another tool's quantization, another version of ours) is refused by name.
 */
export function readQuantizationMarker(json: unknown, path: string, config: PaliGemmaConfig): QuantizationMarker | undefined {
  const raw = (json as Record<string, unknown> | null)?.quantization_config;
  if (raw === undefined) return undefined;
  if (typeof raw !== 'object' || raw === null) return bad(path, 'is not an object');
  const m = raw as Record<string, unknown>;
  if (m.quant_method !== QUANT_METHOD) {
    throw new PaliGemmaError(
      `${path}: quantization_config.quant_method ${JSON.stringify(m.quant_method)} is not supported (this SDK reads ${QUANT_METHOD} folders written by paligemma quantize)`,
      'unsupported_dtype');
  }
  if (m.format_version !== QUANT_FORMAT_VERSION) bad(path, `format_version ${JSON.stringify(m.format_version)} is not ${QUANT_FORMAT_VERSION}`);
  if (m.bits !== 4 && m.bits !== 8) bad(path, `bits ${JSON.stringify(m.bits)} is not 4 or 8`);
  const b = m.block_size;
  if (!(typeof b === 'number' && Number.isInteger(b) && b >= 16 && (b & (b - 1)) === 0)) bad(path, `block_size ${JSON.stringify(b)} is not a power of two ≥ 16`);
  if (m.symmetric !== true) bad(path, 'symmetric must be true');
  if (typeof m.tied_lm_head !== 'boolean') bad(path, 'tied_lm_head must be true or false');
  const want = quantizedNames(config);
  if (!Array.isArray(m.quantized) || m.quantized.length !== want.length || want.some((n, i) => (m.quantized as unknown[])[i] !== n)) {
    bad(path, `quantized does not list the ${want.length} linear weights of this config (model mismatch?)`);
  }
  return m as unknown as QuantizationMarker;
}
