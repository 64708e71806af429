/**
 * model.safetensors.index.json, read strictly: `weight_map` names each tensor once (a name
 * written twice in the text is refused, since `JSON.parse` would keep the last silently), every
 * shard path stays inside the model folder, and, once the shards are open, every tensor sits in
 * exactly the shard the map names and every stored tensor is in the map.
 *
 * ```ts
 * const index = parseShardIndex(text, '/m/model.safetensors.index.json', '/m');
 * index.shards;                 // absolute shard paths, in first-mentioned order
 * checkShardContents(index, openedFiles);
 * ```
 */
import { isAbsolute, relative, resolve, sep, win32 } from 'node:path';
import { PaliGemmaError } from '../interfaces/errors.js';
import { findDuplicateKey } from './duplicate-keys.js';

export interface ShardIndex {
  /** The index file, for messages. */
  path: string;
  /** Absolute shard paths, each once, in the order the map first names them. */
  shards: string[];
  /** Tensor name (as stored) → absolute shard path. */
  weightMap: Map<string, string>;
}

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, ' ');
}

function corrupt(path: string, problem: string): never {
  throw new PaliGemmaError(`${path}: ${problem}`, 'corrupt_checkpoint');
}

/** Parses the index text; `root` is the resolved model folder. */
export function parseShardIndex(text: string, path: string, root: string): ShardIndex {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new PaliGemmaError(`${path}: not valid JSON (${oneLine((e as Error).message)})`, 'invalid_config');
  }
  const map = (json as { weight_map?: unknown } | null)?.weight_map;
  if (typeof map !== 'object' || map === null || Array.isArray(map)) corrupt(path, 'weight_map is missing or not an object');
  const dup = findDuplicateKey(text);
  if (dup && dup.path.length === 1 && dup.path[0] === 'weight_map') {
    corrupt(path, `weight_map maps tensor ${dup.key} twice (each tensor must be listed once)`);
  }
  if (dup) corrupt(path, `the key ${JSON.stringify(dup.key)} is written twice${dup.path.length ? ` in ${dup.path.join('.')}` : ''}`);
  const shards: string[] = [];
  const weightMap = new Map<string, string>();
  for (const [tensor, shard] of Object.entries(map as Record<string, unknown>)) {
    if (typeof shard !== 'string' || shard.length === 0) corrupt(path, `weight_map entry for ${tensor} is not a file name`);
    if (isAbsolute(shard) || win32.isAbsolute(shard)) {
      throw new PaliGemmaError(`${path}: refusing absolute shard path ${JSON.stringify(shard)} (shards must be inside the model folder)`, 'unsafe_path');
    }
    // The path as written must stay inside the folder; what a symlink there points to is the
    // user's business (the Hugging Face cache links snapshots/ files to blobs/).
    const abs = resolve(root, shard);
    const rel = relative(root, abs);
    if (rel === '' || rel === '..' || rel.startsWith(`..${sep}`) || isAbsolute(rel)) {
      throw new PaliGemmaError(`${path}: refusing shard path ${JSON.stringify(shard)}, which resolves outside the model folder`, 'unsafe_path');
    }
    if (!shards.includes(abs)) shards.push(abs);
    weightMap.set(tensor, abs);
  }
  if (shards.length === 0) corrupt(path, 'weight_map lists no shards');
  return { path, shards, weightMap };
}

/** What an opened shard offers: its path and the tensor names in its header. */
export interface ShardContents {
  path: string;
  entries: ReadonlyMap<string, unknown>;
}

/**
 * Every tensor of the map is in the shard it names, and every tensor a shard stores is mapped to
 * that shard: a tensor in the wrong shard, or present in two, is an error naming both.
 */
export function checkShardContents(index: ShardIndex, files: readonly ShardContents[]): void {
  const byPath = new Map(files.map((f) => [f.path, f]));
  for (const [tensor, shard] of index.weightMap) {
    if (!byPath.get(shard)?.entries.has(tensor)) {
      const holder = files.find((f) => f.entries.has(tensor));
      corrupt(index.path, `weight_map puts tensor ${tensor} in ${shard}, but ${holder ? `it is stored in ${holder.path}` : 'no shard stores it'}`);
    }
  }
  for (const f of files) {
    for (const tensor of f.entries.keys()) {
      const mapped = index.weightMap.get(tensor);
      if (mapped === undefined) corrupt(index.path, `tensor ${tensor} is stored in ${f.path} but weight_map does not list it`);
      if (mapped !== f.path) corrupt(index.path, `tensor ${tensor} is stored in ${f.path} and mapped to ${mapped} (present in two shards?)`);
    }
  }
}
