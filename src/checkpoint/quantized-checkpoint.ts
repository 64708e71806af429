/**
 * The loader's side of a `paligemma quantize` folder (quantized-format.ts): checks
 * quantized.safetensors against config.json and hands each weight's codes and scales to the
 * backend as they are (TensorBackend.uploadBlockQuantized), so nothing is quantized again.
 * A backend without that method, a folder that does not match its config, or a file that does
 * not hold what its header says is refused with one line naming the file and what is wrong.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PaliGemmaError } from '../interfaces/errors.js';
import type { BlockQuantizedWeight, Tensor, TensorBackend } from '../interfaces/tensor-backend.js';
import type { PaliGemmaConfig } from '../model/config-types.js';
import {
  QSCALES, QUANTIZED_WEIGHTS_FILE, QWEIGHT, quantizedShape, readQuantizationMarker, type QuantizationMarker,
} from './quantized-format.js';
import { SafetensorsFile, type SafetensorsEntry } from './safetensors.js';
import { EMBED_TOKENS, LM_HEAD } from './weight-names.js';

export interface QuantizedWeights {
  marker: QuantizationMarker;
  /** Canonical names the quantized file supplies (model.safetensors must not hold them). */
  names: ReadonlySet<string>;
  /** Bytes the quantized file's tensors hold. */
  totalBytes: number;
  /** Uploads every quantized weight into `weights` (the tied lm_head is attached to the embedding table). */
  upload(weights: Map<string, Tensor>, onBytes: (n: number, tensor: string) => void): Promise<void>;
  close(): Promise<void>;
}

/** The quantized weights of a folder, or undefined when config.json has no quantization_config. */
export async function openQuantizedWeights(root: string, config: PaliGemmaConfig, backend: TensorBackend): Promise<QuantizedWeights | undefined> {
  const configPath = join(root, 'config.json');
  const marker = readQuantizationMarker(JSON.parse(await readFile(configPath, 'utf8')), configPath, config);
  if (!marker) return undefined;
  const what = `int${marker.bits} block-quantized weights (paligemma quantize)`;
  if (!backend.uploadBlockQuantized || (marker.tied_lm_head && !backend.attachBlockQuantized)) {
    throw new PaliGemmaError(`model folder ${root} holds ${what}, which backend ${backend.name} cannot load (use --backend onnx or reference, or the unquantized folder)`, 'unsupported_dtype');
  }
  const path = join(root, QUANTIZED_WEIGHTS_FILE);
  const file = await SafetensorsFile.open(path);
  try {
    const fail = (problem: string): never => {
      throw new PaliGemmaError(`${path}: ${problem} (re-create the folder with paligemma quantize)`, 'corrupt_checkpoint');
    };
    const blob = (marker.block_size * marker.bits) / 8;
    const plan: Array<{ name: string; codes: SafetensorsEntry; scales: SafetensorsEntry; n: number; k: number; kBlocks: number }> = [];
    for (const name of marker.quantized) {
      const [n, k] = quantizedShape(config, name);
      const kBlocks = Math.ceil(k / marker.block_size);
      const codes = file.entries.get(name + QWEIGHT), scales = file.entries.get(name + QSCALES);
      if (!codes || !scales) fail(`no ${name}${codes ? QSCALES : QWEIGHT}`);
      const expect = (e: SafetensorsEntry, dtype: string, shape: number[]) => {
        if (e.dtype !== dtype || e.shape.join() !== shape.join()) {
          fail(`${e.name} is ${e.dtype} [${e.shape}], expected ${dtype} [${shape}] for int${marker.bits} blocks of ${marker.block_size}`);
        }
      };
      expect(codes!, 'U8', [n, kBlocks, blob]);
      expect(scales!, 'F32', [n, kBlocks]);
      plan.push({ name, codes: codes!, scales: scales!, n, k, kBlocks });
    }
    if (file.entries.size !== plan.length * 2) fail(`holds ${file.entries.size} tensors, expected ${plan.length * 2}`);
    const totalBytes = plan.reduce((a, p) => a + (p.codes.end - p.codes.begin) + (p.scales.end - p.scales.begin), 0);
    return {
      marker,
      names: new Set(marker.quantized.filter((n) => !(n === LM_HEAD && marker.tied_lm_head))),
      totalBytes,
      async upload(weights, onBytes) {
        for (const p of plan) {
          const data = await file.readBytes(p.codes.name, (b) => onBytes(b, p.name));
          const raw = await file.readBytes(p.scales.name, (b) => onBytes(b, p.name));
          const scales = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
          for (let i = 0; i < scales.length; i++) {
            if (!Number.isFinite(scales[i])) fail(`${p.scales.name} holds a non-finite scale at element ${i}`);
          }
          const q: BlockQuantizedWeight = { bits: marker.bits, blockSize: marker.block_size, n: p.n, k: p.k, kBlocks: p.kBlocks, data, scales };
          if (p.name === LM_HEAD && marker.tied_lm_head) {
            const table = weights.get(EMBED_TOKENS);
            if (!table) fail(`the tied lm_head has no ${EMBED_TOKENS} to attach to`);
            backend.attachBlockQuantized!(table!, q);
          } else {
            weights.set(p.name, backend.uploadBlockQuantized!(q));
          }
        }
      },
      close: () => file.close(),
    };
  } catch (e) {
    await file.close().catch(() => undefined);
    throw e;
  }
}
