/**
 * Cost of loadCheckpoint's load-time NaN/Inf scan (`checkFinite`, on by default) on a full-size
 * checkpoint, as a fraction of the load itself.
 *
 *   npx tsx bench/full-checkpoint-memory.ts --backends '' --dir DIR   # writes PaliGemma-3B-224 (BF16) once
 *   npx tsx bench/finite-scan-cost.ts --dir DIR [--repeats 3]
 *
 * The weights go to a backend that keeps nothing (upload returns a bare handle), so the load
 * time measured is reading and converting the files alone: a real backend's upload only adds to
 * it, making the printed fraction an upper bound. Runs alternate with and without the scan after
 * one warm-up load (page cache filled); the medians and their ratio are printed.
 */
import { parseArgs } from 'node:util';
import { ReferenceBackend } from '../src/backends/reference/reference-backend.js';
import type { DType, OpName, Tensor } from '../src/interfaces/tensor-backend.js';
import { loadCheckpoint } from '../src/pipeline/checkpoint/load-checkpoint.js';

const { values: args } = parseArgs({ options: { dir: { type: 'string' }, repeats: { type: 'string', default: '3' } } });
if (!args.dir) throw new Error('--dir DIR is required (see the file comment)');

class DiscardingBackend extends ReferenceBackend {
  override supports(op: OpName, dtype?: DType): boolean { return op === 'upload' || super.supports(op, dtype); }
  override upload(data: Float32Array | Uint16Array, shape: readonly number[], dtype: DType = 'f32'): Tensor {
    void data;
    return { shape: [...shape], dtype };
  }
  override dispose(): void {}
}

const backend = new DiscardingBackend();
async function timeLoad(checkFinite: boolean): Promise<{ ms: number; bytes: number }> {
  const t0 = performance.now();
  const ck = await loadCheckpoint(args.dir!, backend, { checkFinite });
  const ms = performance.now() - t0;
  ck.dispose();
  return { ms, bytes: ck.totalBytes };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const { bytes } = await timeLoad(false);                                         // warm-up
const off: number[] = [], on: number[] = [];
for (let i = 0; i < Number(args.repeats); i++) {
  off.push((await timeLoad(false)).ms);
  on.push((await timeLoad(true)).ms);
}
const a = median(off), b = median(on);
console.log(`${(bytes / 1e9).toFixed(2)} GB of weights: load ${Math.round(a)} ms without the scan, ${Math.round(b)} ms with it`
  + ` → scan cost ${(b - a).toFixed(0)} ms = ${((b - a) / a * 100).toFixed(1)}% of the load (medians of ${off.length}; runs off ${off.map(Math.round).join(', ')}; on ${on.map(Math.round).join(', ')})`);
