/**
 * Which files of a hub repository a pipeline reads: configs, weights, tokenizer and processor
 * files at the top level. READMEs, other weight formats and sub-folders are never fetched.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

const NEEDED = new Set([
  'config.json', 'generation_config.json',
  'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'tokenizer.model',
  'preprocessor_config.json', 'processor_config.json', 'chat_template.json', 'chat_template.jinja',
]);

export const SAFETENSORS_INDEX = 'model.safetensors.index.json';

/** True for a top-level file a pipeline needs. */
export function isNeededFile(path: string): boolean {
  if (path.includes('/')) return false;
  return NEEDED.has(path) || path.endsWith('.safetensors') || path.endsWith('.safetensors.index.json');
}

/** The weight files a folder's pipeline loads: the index's shards, else model.safetensors. */
export async function weightFilesOf(folder: string): Promise<string[]> {
  let index: string;
  try {
    index = await readFile(join(folder, SAFETENSORS_INDEX), 'utf8');
  } catch {
    return ['model.safetensors'];
  }
  const map = (JSON.parse(index) as { weight_map?: Record<string, string> }).weight_map ?? {};
  return [SAFETENSORS_INDEX, ...new Set(Object.values(map))];
}

/** The needed files a snapshot folder lacks (empty: usable as it is). */
export async function missingModelFiles(folder: string): Promise<string[]> {
  const wanted = ['config.json', 'tokenizer.json', 'preprocessor_config.json'];
  try {
    wanted.push(...await weightFilesOf(folder));
  } catch {
    return [SAFETENSORS_INDEX];               // unreadable index: fetch it again
  }
  const missing: string[] = [];
  for (const f of wanted) {
    // stat follows the link: a dangling one (blob deleted) counts as missing.
    if (!(await stat(join(folder, f)).catch(() => undefined))?.isFile()) missing.push(f);
  }
  return missing;
}
