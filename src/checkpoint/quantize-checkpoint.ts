/**
 * `paligemma quantize`: writes a model folder's linear weights block-quantized (int8 or int4,
 * blocks of 32 along K, symmetric) into a new folder the loader reads directly, in the format
 * of quantized-format.ts (docs/quantized-format.md). The codes are made by the same function,
 * from the same float32 values, as the onnx backend's quantize-on-load, so both give the same
 * logits.
 *
 * Plain tensors are copied one at a time; quantized ones stream through in parts of rows (read,
 * quantize and write overlap; the scales of one tensor are held until its codes are written).
 * The lm_head of a tied model is quantized from the embedding table, which is also kept as it
 * is for the gather.
 *
 * ```ts
 * await quantizeCheckpoint({ model: 'paligemma-3b-mix-224', bits: 4, out: 'paligemma-3b-mix-224-int4' });
 * ```
 */
import { copyFile, mkdir, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { PaliGemmaError } from '../interfaces/errors.js';
import { quantizeBlockwise, type BlockQuantized } from '../tensor/block-quantization.js';
import { bf16ToF32, f16ToF32 } from '../tensor/dtype.js';
import { CONFIG_FILE, readCheckpointConfig, weightFiles, WEIGHTS_INDEX_FILE, SINGLE_WEIGHTS_FILE } from './load-checkpoint.js';
import {
  QSCALES, QUANT_FORMAT_VERSION, QUANT_METHOD, QUANTIZED_WEIGHTS_FILE, QWEIGHT, quantizedNames, quantizedShape,
  type QuantizationMarker, type QuantizedBits,
} from './quantized-format.js';
import { SafetensorsFile, elementCount, isFloatDtype, type SafetensorsEntry } from './safetensors.js';
import { EMBED_TOKENS, LM_HEAD, canonicalName, expectedShapes, optionalShapes } from './weight-names.js';

export const QUANT_BLOCK_SIZE = 32;

export interface QuantizeCheckpointOptions {
  /** Source folder (config.json + safetensors). */
  model: string;
  bits: QuantizedBits;
  /** New folder; must not exist or be empty. */
  out: string;
  onProgress?: (done: number, total: number, tensor: string) => void;
  /** Source bytes read and quantized per part of a tensor (default 8 MiB; small values for tests). */
  partBytes?: number;
}

export interface QuantizeCheckpointResult {
  out: string;
  quantized: number;
  /** Bytes of model.safetensors + quantized.safetensors. */
  outBytes: number;
  sourceBytes: number;
}

interface Source { file: SafetensorsFile; entry: SafetensorsEntry }

export async function quantizeCheckpoint(o: QuantizeCheckpointOptions): Promise<QuantizeCheckpointResult> {
  if (o.bits !== 4 && o.bits !== 8) throw new PaliGemmaError(`quantize: --to must be int8 or int4, got ${String(o.bits)}`, 'invalid_argument');
  const src = resolve(o.model), out = resolve(o.out);
  if (src === out) throw new PaliGemmaError('quantize: --out must be a new folder, not the model folder', 'invalid_argument');
  const config = await readCheckpointConfig(src);
  const json = JSON.parse(await readFile(join(src, CONFIG_FILE), 'utf8')) as Record<string, unknown>;
  if (json.quantization_config !== undefined) {
    throw new PaliGemmaError(`quantize: ${join(src, CONFIG_FILE)} already has a quantization_config; quantize the 16-bit or float32 folder instead`, 'invalid_argument');
  }
  await requireEmptyOrAbsent(out);

  const files = await Promise.all((await weightFiles(src)).map((p) => SafetensorsFile.open(p)));
  try {
    const found = new Map<string, Source>();
    for (const file of files) for (const entry of file.entries.values()) {
      const c = canonicalName(entry.name);
      if (c !== undefined) found.set(c, { file, entry });
    }
    const need = (name: string): Source => {
      const s = found.get(name);
      if (!s) throw new PaliGemmaError(`quantize: ${src} has no tensor ${name}`, 'missing_tensor');
      if (!isFloatDtype(s.entry.dtype)) throw new PaliGemmaError(`quantize: tensor ${s.entry.name} has dtype ${s.entry.dtype} (expected F32, F16 or BF16)`, 'unsupported_dtype');
      return s;
    };
    const head = found.get(LM_HEAD);
    const embed = need(EMBED_TOKENS);
    const tied = !head || (head.entry.dtype === embed.entry.dtype && await SafetensorsFile.sameBytes(head.file, head.entry.name, embed.file, embed.entry.name));
    const qNames = quantizedNames(config);
    const qSet = new Set(qNames);
    const shapes = expectedShapes(config);
    const plainNames = [...shapes.keys()].filter((n) => !qSet.has(n));
    for (const [n, shape] of [...shapes, ...optionalShapes(config)]) {
      if (n === LM_HEAD) continue;
      const s = need(n);
      if (s.entry.shape.join() !== shape.join()) {
        throw new PaliGemmaError(`quantize: tensor ${s.entry.name} has shape [${s.entry.shape}], config.json implies [${shape}]`, 'shape_mismatch');
      }
    }

    await mkdir(out, { recursive: true });
    // Plain tensors, as stored.
    const plain = await openWriter(join(out, SINGLE_WEIGHTS_FILE), plainNames.map((n) => {
      const s = need(n);
      return { name: n, dtype: s.entry.dtype, shape: [...s.entry.shape], bytes: s.entry.end - s.entry.begin };
    }));
    try {
      for (const n of plainNames) {
        const s = need(n);
        const data = await s.file.readStored(s.entry.name);
        await plain.write(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      }
    } finally {
      await plain.close();
    }

    // Quantized tensors: codes then scales, one weight at a time.
    const blob = (QUANT_BLOCK_SIZE * o.bits) / 8;
    const layout = qNames.flatMap((n) => {
      const [rows, k] = quantizedShape(config, n);
      const kb = Math.ceil(k / QUANT_BLOCK_SIZE);
      return [
        { name: n + QWEIGHT, dtype: 'U8', shape: [rows, kb, blob], bytes: rows * kb * blob },
        { name: n + QSCALES, dtype: 'F32', shape: [rows, kb], bytes: rows * kb * 4 },
      ];
    });
    const qw = await openWriter(join(out, QUANTIZED_WEIGHTS_FILE), layout, { format: QUANT_METHOD, bits: String(o.bits) });
    try {
      for (const [i, n] of qNames.entries()) {
        o.onProgress?.(i, qNames.length, n);
        const s = n === LM_HEAD ? (tied ? embed : need(LM_HEAD)) : need(n);
        await writeQuantizedSource(s, o.bits, (b) => qw.write(b), o.partBytes ?? PART_BYTES);
      }
      o.onProgress?.(qNames.length, qNames.length, '');
    } finally {
      await qw.close();
    }

    const marker: QuantizationMarker = {
      quant_method: QUANT_METHOD, format_version: QUANT_FORMAT_VERSION, bits: o.bits, block_size: QUANT_BLOCK_SIZE,
      symmetric: true, tied_lm_head: tied, quantized: qNames,
    };
    await writeFile(join(out, CONFIG_FILE), `${JSON.stringify({ ...json, quantization_config: marker }, null, 2)}\n`);
    // Everything else of the source folder (tokenizer, preprocessor config, …).
    for (const name of await readdir(src)) {
      if (name === CONFIG_FILE || name === WEIGHTS_INDEX_FILE || name.endsWith('.safetensors')) continue;
      if (!(await stat(join(src, name))).isFile()) continue;          // hub snapshots hold links: stat follows them
      await copyFile(join(src, name), join(out, name));
    }
    const sourceBytes = files.reduce((a, f) => a + f.fileSize, 0);
    const outBytes = (await stat(join(out, SINGLE_WEIGHTS_FILE))).size + (await stat(join(out, QUANTIZED_WEIGHTS_FILE))).size;
    return { out, quantized: qNames.length, outBytes, sourceBytes };
  } catch (e) {
    await rm(out, { recursive: true, force: true }).catch(() => undefined);
    throw e;
  } finally {
    await Promise.all(files.map((f) => f.close().catch(() => undefined)));
  }
}

/** Source bytes read per part (see writeQuantizedSource). */
const PART_BYTES = 8 * 2 ** 20;

/**
 * Writes a [N, K] source tensor's codes, then its scales, quantized block-wise a part of rows at
 * a time: each part is read into one of two reused buffers while the previous part is quantized
 * and its codes written, so reading, quantizing and writing overlap and no tensor-sized buffer
 * is allocated (on a VM, first touching fresh memory costs as much as quantizing it). The
 * codes are those of quantizing the whole tensor at once: rows are quantized independently.
 */
async function writeQuantizedSource(
  s: Source, bits: QuantizedBits, write: (b: Uint8Array) => Promise<void>, partBytes: number,
): Promise<void> {
  const [n, k] = s.entry.shape;
  const dtype = s.entry.dtype;
  const elem = dtype === 'F32' ? 4 : 2;
  const rowsPer = Math.max(1, Math.min(n, Math.floor(partBytes / (k * elem))));
  const kBlocks = Math.ceil(k / QUANT_BLOCK_SIZE);
  const scales = new Float32Array(n * kBlocks);
  const buffers = [new ArrayBuffer(rowsPer * k * elem), new ArrayBuffer(rowsPer * k * elem)];
  const read = (r0: number, buf: ArrayBuffer): Promise<ArrayBuffer> => {
    const rows = Math.min(rowsPer, n - r0);
    return s.file.readPart(s.entry.name, r0 * k * elem, new Uint8Array(buf, 0, rows * k * elem)).then(() => buf);
  };
  const widen = dtype === 'F16' ? f16ToF32 : bf16ToF32;
  let next: Promise<ArrayBuffer> = read(0, buffers[0]);
  let writing: Promise<void> = Promise.resolve();
  try {
    for (let r0 = 0, part = 0; r0 < n; r0 += rowsPer, part++) {
      const buf = await next;
      const rows = Math.min(rowsPer, n - r0);
      if (r0 + rows < n) next = read(r0 + rows, buffers[(part + 1) % 2]);
      const readRow = dtype === 'F32'
        ? (r: number, row: Float32Array) => row.set(new Float32Array(buf, r * k * 4, k))
        : (r: number, row: Float32Array) => { widen(new Uint16Array(buf, r * k * 2, k), row); };
      let q: BlockQuantized;
      try {
        q = quantizeBlockwise(rows, k, readRow, { bits, blockSize: QUANT_BLOCK_SIZE });
      } catch (e) {
        const msg = (e as Error).message.replace(/row (\d+)/, (_, r: string) => `row ${r0 + Number(r)}`);
        throw new PaliGemmaError(`quantize: tensor ${s.entry.name} in ${s.file.path}: ${msg}`, 'non_finite');
      }
      scales.set(q.scales, r0 * kBlocks);
      await writing;
      writing = write(q.data);
    }
  } finally {
    // A failed part must not leave a read or a write running on handles the caller closes.
    await Promise.allSettled([next, writing]);
  }
  await writing;
  await write(new Uint8Array(scales.buffer));
}

async function requireEmptyOrAbsent(dir: string): Promise<void> {
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new PaliGemmaError(`quantize: --out ${dir} is not a folder`, 'invalid_argument');
  }
  if (entries.length > 0) throw new PaliGemmaError(`quantize: --out ${dir} exists and is not empty`, 'invalid_argument');
}

interface Planned { name: string; dtype: string; shape: number[]; bytes: number }

/** A safetensors file whose header is written first; `write` then takes the tensors' bytes in order. */
async function openWriter(path: string, tensors: Planned[], metadata: Record<string, string> = { format: 'pt' }) {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const t of tensors) {
    if (elementCount(t.shape) * (t.dtype === 'U8' ? 1 : t.dtype === 'F32' ? 4 : 2) !== t.bytes) throw new Error(`quantize: ${t.name} size`);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.bytes] };
    offset += t.bytes;
  }
  let text = JSON.stringify(header);
  while ((8 + Buffer.byteLength(text)) % 8 !== 0) text += ' ';
  const fh = await open(path, 'w');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(text)));
  await fh.write(len);
  await fh.write(Buffer.from(text, 'utf8'));
  let written = 0;
  return {
    async write(bytes: Uint8Array) {
      for (let at = 0; at < bytes.byteLength;) {
        const { bytesWritten } = await fh.write(bytes, at, Math.min(1 << 24, bytes.byteLength - at));
        at += bytesWritten;
      }
      written += bytes.byteLength;
    },
    async close() {
      await fh.close();
      if (written !== offset) throw new Error(`quantize: wrote ${written} of ${offset} data bytes to ${path}`);
    },
  };
}
