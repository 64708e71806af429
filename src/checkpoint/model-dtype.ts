/**
 * The one `dtype` option (`fp32`, `fp16`, `bf16`, `q8`, `q4`, `auto`), in the vocabulary
 * transformers.js users know, mapped onto what each backend can do.
 *
 * `dtype` names how the weights are held; arithmetic stays float32 on every backend.
 * - `auto`: as the checkpoint stores them (16-bit files stay 16-bit where a backend can).
 * - `fp32`: widened to float32 at load (exact; twice the memory of a 16-bit file).
 * - `fp16` / `bf16`: rounded to that type at load (round to nearest even), as
 *   `from_pretrained(..., dtype=torch.float16)` does to the weights; lossy from a float32 file.
 *   A backend that cannot store 16-bit tensors keeps the rounded values widened.
 * - `q8` / `q4`: weight-only int8 / int4 quantization, on the backends that implement it.
 */
import type { BackendOptions } from '../interfaces/contributions.js';
import { PaliGemmaError } from '../interfaces/errors.js';

export const MODEL_DTYPES = ['auto', 'fp32', 'fp16', 'bf16', 'q8', 'q4'] as const;
export type ModelDtype = (typeof MODEL_DTYPES)[number];

/** How the loader holds weights: as stored, or converted to one float type. */
export type WeightStorage = 'auto' | 'f32' | 'f16' | 'bf16';

/** Backends with weight-only quantization, and the backend option each dtype maps to. */
const QUANTIZE_OPTION: Readonly<Record<string, Partial<Record<ModelDtype, BackendOptions>>>> = {
  onnx: { q8: { quantize: 'int8' }, q4: { quantize: 'int4' } },
};

export function isModelDtype(x: unknown): x is ModelDtype {
  return typeof x === 'string' && (MODEL_DTYPES as readonly string[]).includes(x);
}

/** `x` as a dtype, or a PaliGemmaError naming the accepted values. */
export function parseModelDtype(x: unknown, where = 'dtype'): ModelDtype {
  if (isModelDtype(x)) return x;
  throw new PaliGemmaError(`${where}: unknown dtype ${JSON.stringify(x)} (use ${MODEL_DTYPES.join(', ')})`, 'invalid_option');
}

export interface DtypePlan {
  weights: WeightStorage;
  /** Options merged into the backend's own (they must not contradict them). */
  backendOptions: BackendOptions;
}

/** What `dtype` means on the backend named `backend`; a dtype it cannot do is refused by name. */
export function planDtype(dtype: ModelDtype, backend: string, given: BackendOptions = {}): DtypePlan {
  switch (dtype) {
    case 'auto': return { weights: 'auto', backendOptions: {} };
    case 'fp32': return { weights: 'f32', backendOptions: {} };
    case 'fp16': return { weights: 'f16', backendOptions: {} };
    case 'bf16': return { weights: 'bf16', backendOptions: {} };
    case 'q8':
    case 'q4': {
      const options = QUANTIZE_OPTION[backend]?.[dtype];
      if (!options) {
        const where = Object.keys(QUANTIZE_OPTION).filter((b) => QUANTIZE_OPTION[b][dtype]).join(', ');
        throw new PaliGemmaError(
          `dtype ${dtype} is not available on backend ${backend}: weight quantization runs on ${where} (or use dtype auto, fp32, fp16 or bf16)`,
          'unsupported_dtype');
      }
      for (const [key, value] of Object.entries(options)) {
        if (given[key] !== undefined && given[key] !== value) {
          throw new PaliGemmaError(
            `dtype ${dtype} sets the ${backend} backend option ${key}=${String(value)}, but ${key}=${String(given[key])} was given too; drop one`,
            'invalid_option');
        }
      }
      return { weights: 'auto', backendOptions: options };
    }
  }
}
