/**
 * Where a model folder keeps its image preprocessing settings: `preprocessor_config.json`
 * (transformers 4.x and Google's folders), or the `image_processor` section of
 * `processor_config.json` (transformers 5 `save_pretrained` writes only that). A processor
 * type other than SigLIP's is refused by name: it would resize or normalise differently.
 *
 * ```ts
 * const found = await readImageProcessorConfig('model');   // { cfg, source } or undefined (defaults apply)
 * ```
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PaliGemmaError } from '../interfaces/errors.js';

export const PREPROCESSOR_FILE = 'preprocessor_config.json';
export const PROCESSOR_FILE = 'processor_config.json';

type Json = Record<string, unknown>;

async function readObject(path: string, name: string): Promise<Json | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new PaliGemmaError(`cannot read ${name} (${path}): ${(e as Error).message}`);
  }
  let cfg: unknown;
  try {
    cfg = JSON.parse(text);
  } catch (e) {
    throw new PaliGemmaError(`${name} is not valid JSON (${path}): ${(e as Error).message}`);
  }
  if (cfg === null || typeof cfg !== 'object' || Array.isArray(cfg)) throw new PaliGemmaError(`${name} must hold a JSON object (${path})`);
  return cfg as Json;
}

export async function readImageProcessorConfig(modelDir: string): Promise<{ cfg: Json; source: string } | undefined> {
  const pre = join(modelDir, PREPROCESSOR_FILE);
  let found: { cfg: Json; source: string } | undefined;
  const direct = await readObject(pre, PREPROCESSOR_FILE);
  if (direct) found = { cfg: direct, source: pre };
  else {
    const proc = join(modelDir, PROCESSOR_FILE);
    const whole = await readObject(proc, PROCESSOR_FILE);
    const section = whole?.image_processor;
    if (section !== undefined) {
      if (section === null || typeof section !== 'object' || Array.isArray(section)) {
        throw new PaliGemmaError(`${proc}: image_processor must be an object`);
      }
      found = { cfg: section as Json, source: `${proc} (image_processor)` };
    }
  }
  const type = found?.cfg.image_processor_type;
  if (found && type !== undefined && !(typeof type === 'string' && type.startsWith('SiglipImageProcessor'))) {
    throw new PaliGemmaError(`${found.source}: image_processor_type ${JSON.stringify(type)} is not supported (PaliGemma uses SiglipImageProcessor)`, 'unsupported_model');
  }
  return found;
}
