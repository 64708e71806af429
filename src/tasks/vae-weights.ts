/**
 * Weights of PaliGemma's mask VQ-VAE decoder, from the file Google publishes (`vae-oid.npz`,
 * the one big_vision's segmentation code loads) or a safetensors file with the same tensor
 * names. The names and layouts are PyTorch's (the VAE was trained in PyTorch):
 *
 *   _vq_vae._embedding        [128, D]        codebook, one row per <segNNN>
 *   decoder.0                 Conv2d 1×1      D → C         weight [C, D, 1, 1]
 *   decoder.{2,3}.net.{0,2,4} residual blocks: Conv2d 3×3 C → C, 3×3 C → C, 1×1 C → C
 *   decoder.{4,6,8,10}        ConvTranspose2d 4×4, stride 2, padding 1; weight [in, out, 4, 4]
 *                             C → C, C → C/2, C/2 → C/4, C/4 → C/8
 *   decoder.12                Conv2d 1×1      C/8 → 1
 * with `.weight` and `.bias` each; C = 128 in the published file. (The encoder's tensors in the
 * same file are not needed to decode.)
 *
 * Where to find it: `--vae PATH` / `{ vae: PATH }`, else $PALIGEMMA_VAE, else `vae-oid.npz`
 * (or `vae-oid.safetensors`) inside the model folder. See docs/tasks.md.
 */
import { access, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PaliGemmaError } from '../interfaces/errors.js';
import { SafetensorsFile } from '../checkpoint/safetensors.js';
import { readNpz, type NpyArray } from './npz-reader.js';

export interface ConvWeights {
  /** PyTorch layout: Conv2d [out, in, k, k]; ConvTranspose2d [in, out, k, k]. */
  weight: Float32Array;
  bias: Float32Array;
  shape: [number, number, number, number];
}

export interface VqVaeDecoderWeights {
  /** [codes, dim] row-major. */
  codebook: Float32Array;
  codes: number;
  dim: number;
  conv0: ConvWeights;
  res: Array<[ConvWeights, ConvWeights, ConvWeights]>;
  up: ConvWeights[];
  out: ConvWeights;
  /** The file the weights came from. */
  source: string;
}

export const CODEBOOK_NAME = '_vq_vae._embedding';
const RES_BLOCKS = ['decoder.2.net', 'decoder.3.net'];
const UP_LAYERS = ['decoder.4', 'decoder.6', 'decoder.8', 'decoder.10'];

/** Every tensor name the decoder reads. */
export function vaeDecoderTensorNames(): string[] {
  const convs = ['decoder.0', ...RES_BLOCKS.flatMap((b) => [`${b}.0`, `${b}.2`, `${b}.4`]), ...UP_LAYERS, 'decoder.12'];
  return [CODEBOOK_NAME, ...convs.flatMap((c) => [`${c}.weight`, `${c}.bias`])];
}

/** File names looked for inside a model folder, in order. */
export const DEFAULT_VAE_FILES = ['vae-oid.npz', 'vae-oid.safetensors'];
export const VAE_ENV = 'PALIGEMMA_VAE';

/**
 * Where the VAE is: an explicit path (must exist), else $PALIGEMMA_VAE, else a default file
 * in the model folder. The error names every place looked at.
 */
export async function resolveVaePath(explicit: string | undefined, modelDir: string | undefined): Promise<string> {
  const exists = (p: string) => access(p).then(() => true, () => false);
  if (explicit) {
    if (await exists(explicit)) return explicit;
    throw new PaliGemmaError(`VQ-VAE weights not found: ${explicit} (--vae); segment needs vae-oid.npz, see docs/tasks.md`, 'not_found');
  }
  const env = process.env[VAE_ENV];
  if (env) {
    if (await exists(env)) return env;
    throw new PaliGemmaError(`VQ-VAE weights not found: ${env} ($${VAE_ENV}); segment needs vae-oid.npz, see docs/tasks.md`, 'not_found');
  }
  const looked: string[] = [];
  if (modelDir) {
    for (const f of DEFAULT_VAE_FILES) {
      const p = join(modelDir, f);
      if (await exists(p)) return p;
      looked.push(p);
    }
  }
  throw new PaliGemmaError(
    `segment needs the VQ-VAE mask decoder weights (vae-oid.npz): pass --vae PATH (API: { vae: PATH }), set $${VAE_ENV}, `
    + `or put the file in the model folder${looked.length ? ` (looked for ${looked.join(', ')})` : ''}; see docs/tasks.md`,
    'not_found');
}

type Lookup = (name: string) => Promise<NpyArray | undefined>;

async function fromLookup(get: Lookup, source: string): Promise<VqVaeDecoderWeights> {
  const need = async (name: string, rank: number): Promise<NpyArray> => {
    const a = await get(name);
    if (!a) throw new PaliGemmaError(`${source}: no tensor named ${name}; is this PaliGemma's VQ-VAE (vae-oid.npz)?`, 'corrupt_checkpoint');
    if (a.shape.length !== rank) throw new PaliGemmaError(`${source}: ${name} has shape [${a.shape.join(', ')}], expected ${rank} dimensions`, 'corrupt_checkpoint');
    return a;
  };
  const conv = async (name: string, k: number, transposed: boolean, inC: number, outC?: number): Promise<ConvWeights> => {
    const w = await need(`${name}.weight`, 4);
    const b = await need(`${name}.bias`, 1);
    const [s0, s1, kh, kw] = w.shape;
    const [o, i] = transposed ? [s1, s0] : [s0, s1];
    const want = transposed ? `[${inC}, ${outC ?? 'out'}, ${k}, ${k}]` : `[${outC ?? 'out'}, ${inC}, ${k}, ${k}]`;
    if (i !== inC || kh !== k || kw !== k || (outC !== undefined && o !== outC)) {
      throw new PaliGemmaError(`${source}: ${name}.weight has shape [${w.shape.join(', ')}], expected ${want}`, 'corrupt_checkpoint');
    }
    if (b.shape[0] !== o) throw new PaliGemmaError(`${source}: ${name}.bias has ${b.shape[0]} elements, expected ${o}`, 'corrupt_checkpoint');
    return { weight: w.data, bias: b.data, shape: [s0, s1, kh, kw] };
  };
  const cb = await need(CODEBOOK_NAME, 2);
  const [codes, dim] = cb.shape;
  const conv0 = await conv('decoder.0', 1, false, dim);
  const c = conv0.shape[0];
  const res: Array<[ConvWeights, ConvWeights, ConvWeights]> = [];
  for (const b of RES_BLOCKS) {
    res.push([await conv(`${b}.0`, 3, false, c, c), await conv(`${b}.2`, 3, false, c, c), await conv(`${b}.4`, 1, false, c, c)]);
  }
  const up: ConvWeights[] = [];
  let ch = c;
  for (const name of UP_LAYERS) {
    const u = await conv(name, 4, true, ch);
    up.push(u);
    ch = u.shape[1];
  }
  const out = await conv('decoder.12', 1, false, ch, 1);
  return { codebook: cb.data, codes, dim, conv0, res, up, out, source };
}

/** Loads the decoder's weights from `.npz` (NumPy) or `.safetensors`, chosen by content. */
export async function loadVqVaeDecoderWeights(path: string): Promise<VqVaeDecoderWeights> {
  let head: Uint8Array;
  let bytes: Uint8Array | undefined;
  try {
    bytes = await readFile(path);
    head = bytes.subarray(0, 4);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new PaliGemmaError(code === 'ENOENT' ? `VQ-VAE weights not found: ${path}` : `cannot read VQ-VAE weights ${path}: ${(e as Error).message}`,
      code === 'ENOENT' ? 'not_found' : 'invalid_input');
  }
  // A ZIP starts with "PK"; safetensors with its header length.
  if (head[0] === 0x50 && head[1] === 0x4b) {
    const arrays = readNpz(bytes, path);
    return fromLookup(async (n) => arrays.get(n), path);
  }
  bytes = undefined;
  const file = await SafetensorsFile.open(path);
  try {
    return await fromLookup(async (n) => {
      const e = file.entries.get(n);
      return e ? { data: await file.readF32(n), shape: [...e.shape] } : undefined;
    }, path);
  } finally {
    await file.close();
  }
}
