/**
 * The bench's random weights written as a checkpoint would hold them (one model.safetensors
 * in F32, BF16 or F16, and a config.json), so `paligemma bench --weights …` loads them through
 * the real loading path (loadCheckpoint: the backend gets the stored bits, as it would from a
 * downloaded file) instead of uploading float32 arrays it built itself.
 *
 * Each tensor is drawn and narrowed in chunks, so the writer never holds the model.
 */
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PaliGemmaError } from '../interfaces/errors.js';
import type { PaliGemmaConfig } from '../model/config-types.js';
import { f32ToBf16, f32ToF16 } from '../tensor/dtype.js';
import { tinyConfigJson, type TinySpec } from '../tiny-models/tiny-checkpoint.js';
import { elementsOf, fillUniform, weightSpecs } from './paligemma-shapes.js';

export type BenchWeights = 'f32' | 'bf16' | 'f16';
export const BENCH_WEIGHTS: readonly BenchWeights[] = ['f32', 'bf16', 'f16'];

const STORED: Record<BenchWeights, 'F32' | 'BF16' | 'F16'> = { f32: 'F32', bf16: 'BF16', f16: 'F16' };
/** Elements drawn and converted per write. */
const CHUNK = 1 << 22;

export function parseBenchWeights(value: string): BenchWeights {
  const v = value.toLowerCase();
  if (!(BENCH_WEIGHTS as readonly string[]).includes(v)) {
    throw new PaliGemmaError(`invalid --weights '${value}': expected one of ${BENCH_WEIGHTS.join(', ')}`, 'invalid_argument');
  }
  return v as BenchWeights;
}

/** config.json for `config` (the bench's PaliGemma-3B shapes at some depth). */
export function benchConfigJson(config: PaliGemmaConfig, dtype: BenchWeights): Record<string, unknown> {
  const v = config.vision, t = config.text;
  const spec: TinySpec = {
    dtype: STORED[dtype],
    vision: { hiddenSize: v.hiddenSize, intermediateSize: v.intermediateSize, numLayers: v.numLayers, numHeads: v.numHeads, patchSize: v.patchSize, imageSize: v.imageSize },
    text: { hiddenSize: t.hiddenSize, intermediateSize: t.intermediateSize, numLayers: t.numLayers, numHeads: t.numHeads, numKvHeads: t.numKvHeads, headDim: t.headDim },
    ...(t.modelType === 'gemma2' ? { gemma2: {
      slidingWindow: t.slidingWindow!, attnLogitSoftcapping: t.attnLogitSoftcapping ?? null,
      finalLogitSoftcapping: t.finalLogitSoftcapping ?? null, queryPreAttnScalar: t.queryPreAttnScalar!,
    } } : {}),
  };
  const json = tinyConfigJson(spec);
  (json.text_config as Record<string, unknown>).vocab_size = t.vocabSize;
  json.image_token_index = config.imageTokenIndex;
  return json;
}

/**
 * Writes the checkpoint into a new temporary folder and returns it with its weight bytes;
 * `remove()` deletes it.
 */
export async function writeBenchCheckpoint(
  config: PaliGemmaConfig, dtype: BenchWeights, seed: number,
): Promise<{ dir: string; fileBytes: number; remove(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), `paligemma-bench-${dtype}-`));
  const remove = () => rm(dir, { recursive: true, force: true });
  try {
    const specs = weightSpecs(config);
    const width = dtype === 'f32' ? 4 : 2;
    const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
    let offset = 0;
    for (const w of specs) {
      const bytes = elementsOf(w.shape) * width;
      header[w.name] = { dtype: STORED[dtype], shape: w.shape, data_offsets: [offset, offset + bytes] };
      offset += bytes;
    }
    let text = JSON.stringify(header);
    while ((8 + text.length) % 8 !== 0) text += ' ';
    const fh = await open(join(dir, 'model.safetensors'), 'w');
    try {
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(text.length));
      await fh.write(len);
      await fh.write(Buffer.from(text, 'utf8'));
      const chunk = new Float32Array(CHUNK);
      for (const [i, w] of specs.entries()) {
        for (let at = 0, n = elementsOf(w.shape), part = 0; at < n; at += CHUNK, part++) {
          const values = fillUniform(chunk.subarray(0, Math.min(CHUNK, n - at)), (seed * 7919 + i) * 4099 + part, w.scale, w.offset);
          const out = dtype === 'f32' ? values : dtype === 'bf16' ? f32ToBf16(values) : f32ToF16(values);
          await fh.write(new Uint8Array(out.buffer, out.byteOffset, out.byteLength));
        }
      }
    } finally {
      await fh.close();
    }
    await writeFile(join(dir, 'config.json'), JSON.stringify(benchConfigJson(config, dtype), null, 2));
    return { dir, fileBytes: offset, remove };
  } catch (e) {
    await remove();
    throw e;
  }
}
