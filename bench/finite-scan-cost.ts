/**
 * Cost of loadCheckpoint's load-time NaN/Inf scan (`checkFinite`, on by default) on a full-size
 * checkpoint, as a fraction of reading the weights.
 *
 *   npx tsx bench/full-checkpoint-memory.ts --backends '' --dir DIR   # writes PaliGemma-3B-224 (BF16) once
 *   npx tsx bench/finite-scan-cost.ts --dir DIR [--repeats 2]
 *
 * Every tensor of every shard is read as loadCheckpoint reads it (SafetensorsFile.readStored),
 * then scanned with the same function; the read and the scan are timed tensor by tensor in the
 * same pass, so machine load shifts both alike. Reading excludes a backend's upload, which only
 * adds to a real load: the printed fraction is an upper bound. The first pass fills the page
 * cache and is not counted (a cold read from disk would make the fraction smaller still).
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { SafetensorsFile } from '../src/pipeline/checkpoint/safetensors.js';
import { firstNonFiniteStored } from '../src/pipeline/finite-check.js';

const { values: args } = parseArgs({ options: { dir: { type: 'string' }, repeats: { type: 'string', default: '2' } } });
if (!args.dir) throw new Error('--dir DIR is required (see the file comment)');
const shards = (await readdir(args.dir)).filter((f) => f.endsWith('.safetensors')).sort();

async function pass(): Promise<{ readMs: number; scanMs: number; bytes: number; hits: number }> {
  let readMs = 0, scanMs = 0, bytes = 0, hits = 0;
  for (const shard of shards) {
    const file = await SafetensorsFile.open(join(args.dir!, shard));
    try {
      for (const e of file.entries.values()) {
        const t0 = performance.now();
        const data = await file.readStored(e.name);
        const t1 = performance.now();
        if (firstNonFiniteStored(data, e.dtype === 'F32' ? 'f32' : e.dtype === 'F16' ? 'f16' : 'bf16') >= 0) hits++;
        scanMs += performance.now() - t1;
        readMs += t1 - t0;
        bytes += e.end - e.begin;
      }
    } finally {
      await file.close();
    }
  }
  return { readMs, scanMs, bytes, hits };
}

await pass();                                                                    // page cache
for (let i = 0; i < Number(args.repeats); i++) {
  const r = await pass();
  console.log(`${(r.bytes / 1e9).toFixed(2)} GB: read ${Math.round(r.readMs)} ms, scan ${Math.round(r.scanMs)} ms`
    + ` = ${(r.scanMs / r.readMs * 100).toFixed(1)}% of the read (${(r.bytes / 1e6 / r.scanMs).toFixed(0)} MB/ms… i.e. ${(r.bytes / 1e9 / (r.scanMs / 1000)).toFixed(1)} GB/s scanned; ${r.hits} tensors with NaN/Inf)`);
}
