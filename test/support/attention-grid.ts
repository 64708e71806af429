/**
 * The attention cases a backend's kernel is checked on against the reference kernel, as mocha
 * `it`s: every mask kind × GQA ratio over full and partial caches, then soft-capping, sliding
 * window and large scores. The suite supplies `run`, which builds the inputs on its backend and
 * compares one call (and notes its error).
 */
import { expect } from 'chai';
import { ReferenceBackend } from '../../src/backends/reference/reference-backend.js';
import type { AttentionKernel, AttentionMask, AttentionOptions } from '../../src/interfaces/attention-kernel.js';
import { rand } from './seeded-values.js';

/** q [tq, hq, d], k/v [cap, hkv, d] from `seed`; one attend call compared against the reference. */
export type AttentionRun = (tq: number, hq: number, hkv: number, d: number, cap: number, opts: AttentionOptions, seed: number) => Promise<void>;

const MASKS: AttentionMask[] = [{ kind: 'bidirectional' }, { kind: 'causal' }, { kind: 'prefixLm', prefixLength: 3 }];

export function itAttentionGrid(run: AttentionRun): void {
  for (const mask of MASKS) {
    for (const [hq, hkv] of [[4, 4], [4, 2], [8, 1]]) {
      it(`${mask.kind}, GQA ratio ${hq / hkv} (Hq ${hq}, Hkv ${hkv}), full and partial cache`, async function () {
        // Whole buffer valid, queries from row 0.
        await run(5, hq, hkv, 16, 5, { scale: 0.25, mask }, 900 + hq * 7 + hkv);
        // Prefill into a larger buffer: 4 queries at rows 0..3 of a 9-row cache.
        await run(4, hq, hkv, 8, 9, { scale: 8 ** -0.5, mask, queryOffset: 0, kvLength: 4 }, 950 + hq);
        // Decode: one query at row 6, 7 valid rows of 12.
        await run(1, hq, hkv, 8, 12, { scale: 8 ** -0.5, mask, queryOffset: 6, kvLength: 7 }, 990 + hkv);
        // Chunk in the middle: 3 queries at rows 4..6, 7 valid rows of 10.
        await run(3, hq, hkv, 32, 10, { scale: 32 ** -0.5, mask, queryOffset: 4, kvLength: 7 }, 1020 + hq);
        // A single key row.
        await run(1, hq, hkv, 4, 3, { scale: 0.5, mask, queryOffset: 0, kvLength: 1 }, 1050 + hq);
      });
    }
  }

  it('soft-capping, sliding window, large scores', async function () {
    await run(4, 4, 2, 8, 10, { scale: 1, mask: { kind: 'causal' }, softCap: 5, queryOffset: 2, kvLength: 6 }, 1100);
    await run(6, 2, 1, 8, 8, { scale: 0.5, mask: { kind: 'causal' }, slidingWindow: 3 }, 1110);
    await run(5, 8, 1, 16, 5, { scale: 40, mask: { kind: 'prefixLm', prefixLength: 2 } }, 1120);
  });
}

/** A backend's own kernel handed another backend's tensors runs the plain kernel on that backend. */
export function itFallsBackOnAnotherBackend(kernel: AttentionKernel): void {
  it('falls back to the plain kernel on another backend', function () {
    const ref = new ReferenceBackend();
    const q = ref.upload(rand(2 * 2 * 4, 1), [2, 2, 4]);
    const k = ref.upload(rand(3 * 1 * 4, 2), [3, 1, 4]);
    const out = kernel.attend(ref, q, k, k, { scale: 0.5, mask: { kind: 'causal' }, queryOffset: 1 });
    expect([...out.shape]).to.deep.equal([2, 2, 4]);
  });
}
