/**
 * Cost of loadCheckpoint's load-time NaN/Inf scan (`checkFinite`, on by default) on a full-size
 * checkpoint, as a fraction of reading the weights.
 *
 *   npx tsx bench/full-checkpoint-memory.ts --backends '' --dir DIR   # writes PaliGemma-3B-224 (BF16) once
 *   npx tsx bench/finite-scan-cost.ts --dir DIR [--repeats 2] [--load reference]
 *
 * Every tensor of every shard is read as loadCheckpoint reads it (SafetensorsFile.readStored),
 * then scanned with the same function; the read and the scan are timed tensor by tensor in the
 * same pass, so machine load shifts both alike. Reading excludes a backend's upload, which only
 * adds to a real load: the printed fraction is an upper bound. The first pass fills the page
 * cache and is not counted (a cold read from disk would make the fraction smaller still).
 * Both wall time and CPU time (process.cpuUsage, the read's thread-pool work included) are
 * printed: on a shared machine the wall times stretch with the load, the CPU times much less.
 *
 * With --load BACKEND it then times whole loadCheckpoint calls onto that backend (upload
 * included), alternating checkFinite on and off, and prints what the scan adds to a real load.
 * `--load copy` is a stand-in backend that copies each uploaded tensor into its own buffer and
 * drops it, as a backend with its own storage (onnx, tfjs, webgpu) copies, while holding one
 * tensor at a time (the real backends hold the whole model: 6-12 GB).
 *
 * Why both: the first pass over freshly read bytes costs several times a later one, whatever
 * the pass is (measured on these VMs: the scan of a just-read 67 MB tensor ~150 ms CPU, a
 * second scan ~20 ms; a copy as the first pass ~300 ms). The read+scan pass charges all of
 * that to the scan; in a load, the upload would pay it if the scan did not.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { SafetensorsFile } from '../src/checkpoint/safetensors.js';
import { loadCheckpoint } from '../src/checkpoint/load-checkpoint.js';
import { createRegistry, startBackend } from '../src/create-pipeline.js';
import type { Tensor, TensorBackend } from '../src/interfaces/tensor-backend.js';

/** Copies what is uploaded, keeps nothing: the storage cost of a backend that holds its own copy. */
function copyingBackend(): TensorBackend {
  let kept = 0;
  const stub = {
    name: 'copy',
    supports: (op: string) => op === 'upload',
    upload(data: Float32Array | Uint16Array, shape: readonly number[], dtype = 'f32') {
      kept += data.slice()[0] === undefined ? 0 : 1;       // a real copy of every element
      return { shape: [...shape], dtype } as unknown as Tensor;
    },
    dispose() {},
    get kept() { return kept; },
  };
  return stub as unknown as TensorBackend;
}
import { firstNonFiniteStored } from '../src/tensor/finite-check.js';

const { values: args } = parseArgs({
  options: { dir: { type: 'string' }, repeats: { type: 'string', default: '2' }, load: { type: 'string' } },
});
if (!args.dir) throw new Error('--dir DIR is required (see the file comment)');
const shards = (await readdir(args.dir)).filter((f) => f.endsWith('.safetensors')).sort();

/** CPU milliseconds of this process (every thread) since `from`. */
const cpuMs = (from: NodeJS.CpuUsage) => { const c = process.cpuUsage(from); return (c.user + c.system) / 1000; };

async function pass(): Promise<{ readMs: number; scanMs: number; readCpuMs: number; scanCpuMs: number; bytes: number; hits: number }> {
  let readMs = 0, scanMs = 0, readCpuMs = 0, scanCpuMs = 0, bytes = 0, hits = 0;
  for (const shard of shards) {
    const file = await SafetensorsFile.open(join(args.dir!, shard));
    try {
      for (const e of file.entries.values()) {
        const c0 = process.cpuUsage();
        const t0 = performance.now();
        const data = await file.readStored(e.name);
        const t1 = performance.now();
        const c1 = process.cpuUsage();
        if (firstNonFiniteStored(data, e.dtype === 'F32' ? 'f32' : e.dtype === 'F16' ? 'f16' : 'bf16') >= 0) hits++;
        scanMs += performance.now() - t1;
        scanCpuMs += cpuMs(c1);
        readMs += t1 - t0;
        readCpuMs += cpuMs(c0) - cpuMs(c1);
        bytes += e.end - e.begin;
      }
    } finally {
      await file.close();
    }
  }
  return { readMs, scanMs, readCpuMs, scanCpuMs, bytes, hits };
}

await pass();                                                                    // page cache
for (let i = 0; i < Number(args.repeats); i++) {
  const r = await pass();
  console.log(`${(r.bytes / 1e9).toFixed(2)} GB: read ${Math.round(r.readMs)} ms wall / ${Math.round(r.readCpuMs)} ms cpu, `
    + `scan ${Math.round(r.scanMs)} ms wall / ${Math.round(r.scanCpuMs)} ms cpu = ${(r.scanMs / r.readMs * 100).toFixed(1)}% of the read `
    + `(cpu: ${(r.scanCpuMs / r.readCpuMs * 100).toFixed(1)}%; ${(r.bytes / 1e9 / (r.scanCpuMs / 1000)).toFixed(1)} GB/s per cpu-second; `
    + `${r.hits} tensors with NaN/Inf)`);
}

if (args.load) {
  const backend = args.load === 'copy' ? copyingBackend() : await startBackend(await createRegistry(), args.load);
  const times: Record<'on' | 'off', Array<{ wall: number; cpu: number }>> = { on: [], off: [] };
  for (let i = 0; i < Number(args.repeats); i++) {
    for (const mode of ['on', 'off'] as const) {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      const ck = await loadCheckpoint(args.dir, backend, { checkFinite: mode === 'on' });
      times[mode].push({ wall: performance.now() - t0, cpu: cpuMs(c0) });
      ck.dispose();
    }
  }
  const mean = (xs: Array<{ wall: number; cpu: number }>, k: 'wall' | 'cpu') => xs.reduce((a, x) => a + x[k], 0) / xs.length;
  for (const k of ['wall', 'cpu'] as const) {
    const on = mean(times.on, k), off = mean(times.off, k);
    console.log(`loadCheckpoint onto ${backend.name}, ${k}: checkFinite on ${Math.round(on)} ms, off ${Math.round(off)} ms `
      + `(mean of ${times.on.length}): the scan adds ${((on - off) / off * 100).toFixed(1)}% `
      + `[runs on: ${times.on.map((x) => Math.round(x[k])).join(', ')}; off: ${times.off.map((x) => Math.round(x[k])).join(', ')}]`);
  }
  await backend.close?.();
}
