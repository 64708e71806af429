/**
 * Loads a Hugging Face PaliGemma folder (config.json plus model.safetensors, or shards listed by
 * model.safetensors.index.json) onto a TensorBackend.
 *
 * Everything that can be checked before reading tensor data is checked first (config, every
 * header, names, shapes, dtypes), so a broken folder fails fast and uploads nothing. Tensors
 * are then read one at a time and uploaded at once; the host copy is dropped before the next
 * one is read, so the process never holds the model twice. 16-bit weights are uploaded as raw
 * bits when the backend stores that dtype, otherwise widened to float32 on the way.
 *
 * ```ts
 * const ckpt = await loadCheckpoint('paligemma-3b-mix-224', backend, {
 *   onProgress: ({ loadedBytes, totalBytes }) => console.log(loadedBytes / totalBytes),
 * });
 * ckpt.weights.get('language_model.model.embed_tokens.weight');
 * ckpt.dispose();
 * ```
 */
import { readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { PaliGemmaError } from '../interfaces/errors.js';
import type { DType, Tensor, TensorBackend } from '../interfaces/tensor-backend.js';
import type { PaliGemmaConfig } from '../model/config-types.js';
import type { WeightStorage } from './model-dtype.js';
import { parseConfig } from './config.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../tensor/dtype.js';
import { SafetensorsFile, isFloatDtype, type SafetensorsEntry, type SafetensorsFloatDtype } from './safetensors.js';
import { checkShardContents, parseShardIndex, type ShardIndex } from './shard-index.js';
import { firstNonFiniteStored, nonFiniteWeightError } from '../tensor/finite-check.js';
import { unusedTensorError } from './unused-tensors.js';
import { openQuantizedWeights } from './quantized-checkpoint.js';
import { QUANTIZED_WEIGHTS_FILE } from './quantized-format.js';
import { EMBED_TOKENS, LM_HEAD, canonicalName, declaredWeights, expectedShapes, newerName, optionalShapes } from './weight-names.js';

export const CONFIG_FILE = 'config.json';
export const SINGLE_WEIGHTS_FILE = 'model.safetensors';
export const WEIGHTS_INDEX_FILE = 'model.safetensors.index.json';

export interface LoadProgress {
  /** Tensor bytes read so far (file bytes, before any widening). */
  loadedBytes: number;
  /** Tensor bytes the load will read in all. */
  totalBytes: number;
  /** Canonical name of the tensor being read. */
  tensor: string;
}

export interface LoadCheckpointOptions {
  onProgress?: (p: LoadProgress) => void;
  /** How weights are held: as stored (default), or converted to one float type (see model-dtype.ts). */
  weights?: WeightStorage;
  /** Scan every weight for NaN/Inf as it loads and refuse the checkpoint naming the first one (default true). */
  checkFinite?: boolean;
}

export interface LoadedCheckpoint {
  /** The model folder, resolved. */
  dir: string;
  config: PaliGemmaConfig;
  /** Canonical (classic Hugging Face) name → tensor on the backend. No lm_head when tied. */
  weights: Map<string, Tensor>;
  /** Dtype embed_tokens is held in: as stored in the file, or the `weights` option's (√H is rounded to it). */
  weightDtype: DType;
  /** Tensor bytes read from disk. */
  totalBytes: number;
  /** Releases every uploaded tensor. */
  dispose(): void;
}

const DTYPE_OF: Readonly<Record<SafetensorsFloatDtype, DType>> = { F32: 'f32', F16: 'f16', BF16: 'bf16' };

function errnoCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, ' ');
}

async function readJsonFile(path: string, what: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') throw new PaliGemmaError(`${what} not found: ${path}`, 'not_found');
    throw new PaliGemmaError(`${path}: cannot read (${oneLine((e as Error).message)})`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new PaliGemmaError(`${path}: not valid JSON (${oneLine((e as Error).message)})`, 'invalid_config');
  }
}

async function requireFolder(dir: string): Promise<string> {
  const root = resolve(dir);
  let isDir: boolean;
  try {
    isDir = (await stat(root)).isDirectory();
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') throw new PaliGemmaError(`model folder not found: ${dir}`, 'not_found');
    throw new PaliGemmaError(`model folder ${dir}: cannot read (${oneLine((e as Error).message)})`);
  }
  if (!isDir) throw new PaliGemmaError(`model folder ${dir} is not a folder`);
  return root;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return false;
    throw new PaliGemmaError(`${path}: cannot read (${oneLine((e as Error).message)})`);
  }
}

/** Reads and resolves `dir/config.json`. */
export async function readCheckpointConfig(dir: string): Promise<PaliGemmaConfig> {
  const root = await requireFolder(dir);
  const path = join(root, CONFIG_FILE);
  return parseConfig(await readJsonFile(path, CONFIG_FILE), path);
}

/**
 * The safetensors files of a model folder, absolute: model.safetensors when present, else the
 * shards named by model.safetensors.index.json (each must stay inside the folder).
 */
export async function weightFiles(dir: string): Promise<string[]> {
  return (await weightLayout(dir)).paths;
}

async function weightLayout(dir: string): Promise<{ paths: string[]; index?: ShardIndex }> {
  const root = await requireFolder(dir);
  const single = join(root, SINGLE_WEIGHTS_FILE);
  if (await exists(single)) return { paths: [single] };
  const indexPath = join(root, WEIGHTS_INDEX_FILE);
  if (!(await exists(indexPath))) {
    throw new PaliGemmaError(`no weights in ${dir}: neither ${SINGLE_WEIGHTS_FILE} nor ${WEIGHTS_INDEX_FILE} exists`, 'not_found');
  }
  let text: string;
  try {
    text = await readFile(indexPath, 'utf8');
  } catch (e) {
    throw new PaliGemmaError(`${indexPath}: cannot read (${oneLine((e as Error).message)})`);
  }
  const index = parseShardIndex(text, indexPath, root);
  return { paths: index.shards, index };
}

interface Located {
  canonical: string;
  file: SafetensorsFile;
  fileIndex: number;
  entry: SafetensorsEntry;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

/**
 * Reads one tensor and uploads it held as `storage` asks: 16-bit bits go up as they are when the
 * backend stores that dtype, otherwise as float32 (holding values rounded to 16 bits if asked).
 */
async function uploadWeight(
  backend: TensorBackend, loc: Located, storage: WeightStorage, onBytes: (n: number) => void,
  scan: (data: Float32Array | Uint16Array, dtype: 'f32' | 'f16' | 'bf16', first?: number) => void,
): Promise<Tensor> {
  const stored = DTYPE_OF[loc.entry.dtype as SafetensorsFloatDtype];
  const target: DType = storage === 'auto' ? stored : storage;
  if (target === stored && backend.reserve && (stored === 'f32' || backend.supports('upload', stored))) {
    // Straight into the backend's memory: the weight is never held twice on the way in.
    const room = backend.reserve(loc.entry.shape, stored);
    try {
      await loc.file.readStoredInto(loc.entry.name, room.data, (part, first) => scan(part, stored, first), onBytes);
    } catch (e) {
      room.discard();
      throw e;
    }
    return room.commit();
  }
  if (target === stored && stored !== 'f32' && backend.supports('upload', stored)) {
    const bits = await loc.file.readStored(loc.entry.name, onBytes);
    scan(bits, stored as 'f16' | 'bf16');
    return backend.upload(bits, loc.entry.shape, stored);
  }
  const values = await loc.file.readF32(loc.entry.name, onBytes);
  scan(values, 'f32');
  if (target === 'f32' || target === stored) return backend.upload(values, loc.entry.shape, 'f32');
  const bits = target === 'f16' ? f32ToF16(values) : f32ToBf16(values);   // round to nearest even
  if (backend.supports('upload', target)) return backend.upload(bits, loc.entry.shape, target);
  return backend.upload(target === 'f16' ? f16ToF32(bits, values) : bf16ToF32(bits, values), loc.entry.shape, 'f32');
}

/** Loads config and weights of a model folder onto `backend`. See the file comment. */
export async function loadCheckpoint(
  dir: string, backend: TensorBackend, opts: LoadCheckpointOptions = {},
): Promise<LoadedCheckpoint> {
  const root = await requireFolder(dir);
  const config = await readCheckpointConfig(root);
  const { paths, index } = await weightLayout(root);
  const quantized = await openQuantizedWeights(root, config, backend);   // a `paligemma quantize` folder

  const files: SafetensorsFile[] = [];
  const weights = new Map<string, Tensor>();
  try {
    for (const p of paths) {
      try {
        files.push(await SafetensorsFile.open(p));
      } catch (e) {
        if (index && e instanceof PaliGemmaError && e.code === 'not_found') {
          throw new PaliGemmaError(`${index.path} lists shard ${p}, which is not found`, 'not_found');
        }
        throw e;
      }
    }
    if (index) checkShardContents(index, files);

    // Canonical name → where it lives; the same tensor twice (two shards, or both schemes) is an error.
    const found = new Map<string, Located>();
    const declared = declaredWeights(config);
    const unused: { name: string; file: string }[] = [];
    files.forEach((file, fileIndex) => {
      for (const entry of file.entries.values()) {
        const canonical = canonicalName(entry.name);
        if (canonical === undefined || !declared.has(canonical)) {
          unused.push({ name: entry.name, file: file.path });
          continue;
        }
        const prev = found.get(canonical);
        if (prev) {
          throw new PaliGemmaError(
            `duplicate tensor ${canonical}: stored as ${prev.entry.name} in ${prev.file.path} and as ${entry.name} in ${file.path}`,
            'corrupt_checkpoint');
        }
        found.set(canonical, { canonical, file, fileIndex, entry });
      }
    });

    if (unused.length > 0) throw unusedTensorError(unused, config);

    const check = (loc: Located, shape: readonly number[]): Located => {
      if (!sameShape(loc.entry.shape, shape)) {
        throw new PaliGemmaError(
          `tensor ${loc.entry.name} in ${loc.file.path}: expected shape ${fmt(shape)} (from ${CONFIG_FILE}), found ${fmt(loc.entry.shape)}`,
          'shape_mismatch');
      }
      if (!isFloatDtype(loc.entry.dtype)) {
        throw new PaliGemmaError(
          `tensor ${loc.entry.name} in ${loc.file.path} has dtype ${loc.entry.dtype}, which is not supported (use F32, F16 or BF16)`,
          'unsupported_dtype');
      }
      return loc;
    };

    const plan: Located[] = [];
    for (const [name, shape] of expectedShapes(config)) {
      const loc = found.get(name);
      if (quantized?.names.has(name)) {
        if (loc) throw new PaliGemmaError(`duplicate tensor ${name}: stored as ${loc.entry.name} in ${loc.file.path} and quantized in ${QUANTIZED_WEIGHTS_FILE}`, 'corrupt_checkpoint');
        continue;
      }
      if (!loc) {
        const where = paths.length === 1 ? paths[0] : `the shards of ${join(root, WEIGHTS_INDEX_FILE)}`;
        throw new PaliGemmaError(`missing tensor ${name} (newer name ${newerName(name)}) in ${where}`, 'missing_tensor');
      }
      plan.push(check(loc, shape));
    }
    const embed = found.get(EMBED_TOKENS)!;
    for (const [name, shape] of optionalShapes(config)) {
      const loc = found.get(name);
      if (!loc) continue;
      check(loc, shape);
      // An lm_head identical to embed_tokens is the tied case stored twice: keep one copy.
      if (name === LM_HEAD && loc.entry.dtype === embed.entry.dtype
        && await SafetensorsFile.sameBytes(loc.file, loc.entry.name, embed.file, embed.entry.name)) continue;
      plan.push(loc);
    }
    plan.sort((a, b) => a.fileIndex - b.fileIndex || a.entry.begin - b.entry.begin);

    const storage = opts.weights ?? 'auto';
    const totalBytes = plan.reduce((s, l) => s + (l.entry.end - l.entry.begin), 0) + (quantized?.totalBytes ?? 0);
    let loadedBytes = 0;
    for (const loc of plan) {
      const onBytes = (n: number) => {
        loadedBytes += n;
        opts.onProgress?.({ loadedBytes, totalBytes, tensor: loc.canonical });
      };
      const scan = (data: Float32Array | Uint16Array, dtype: 'f32' | 'f16' | 'bf16', first = 0) => {
        if (opts.checkFinite === false) return;
        const at = firstNonFiniteStored(data, dtype);
        if (at >= 0) throw nonFiniteWeightError(loc.entry.name, loc.file.path, first + at, loc.entry.shape);
      };
      weights.set(loc.canonical, await uploadWeight(backend, loc, storage, onBytes, scan));
    }
    await quantized?.upload(weights, (n, tensor) => {
      loadedBytes += n;
      opts.onProgress?.({ loadedBytes, totalBytes, tensor });
    });

    const weightDtype: DType = storage === 'auto' ? DTYPE_OF[embed.entry.dtype as SafetensorsFloatDtype] : storage;
    let disposed = false;
    return {
      dir: root,
      config,
      weights,
      weightDtype,
      totalBytes,
      dispose() {
        if (disposed) return;
        disposed = true;
        backend.dispose([...weights.values()]);
        weights.clear();
      },
    };
  } catch (e) {
    if (weights.size > 0) {
      try { backend.dispose([...weights.values()]); } catch { /* the original error matters more */ }
      weights.clear();
    }
    throw e;
  } finally {
    await Promise.all(files.map((f) => f.close().catch(() => undefined)));
    await quantized?.close().catch(() => undefined);
  }
}
