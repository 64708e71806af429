/**
 * Attention cases for one kernel: every mask kind at GQA ratios 1, 2 and 8, a length-1 and a
 * 300-long sequence, a decode step into a cache whose rows past kvLength hold garbage, a prefill
 * chunk that straddles the prefix boundary, and Gemma 2's soft-capping and sliding windows
 * (alone, together, and with the bidirectional prefix; in prefill, a chunk and a decode step).
 */
import type { AttentionMask, AttentionOptions } from '../interfaces/attention-kernel.js';
import { fmt, input, THRESHOLDS, type CaseSpec, type KernelSlot } from './op-case.js';

interface AttentionShape {
  label: string;
  tq: number;
  /** Rows of the k/v buffers (≥ kvLength). */
  tk: number;
  hq: number;
  hkv: number;
  d: number;
  opts: Omit<AttentionOptions, 'scale'>;
}

function maskName(m: AttentionMask): string {
  return m.kind === 'prefixLm' ? `prefixLm(${m.prefixLength})` : m.kind;
}

const causal: AttentionMask = { kind: 'causal' };

function shapes(): AttentionShape[] {
  const masks: AttentionMask[] = [{ kind: 'bidirectional' }, causal, { kind: 'prefixLm', prefixLength: 11 }];
  const grid = masks.flatMap((mask) => [8, 4, 1].map((hkv) => ({ label: 'T17', tq: 17, tk: 17, hq: 8, hkv, d: 16, opts: { mask } })));
  return [
    ...grid,
    { label: 'T1', tq: 1, tk: 1, hq: 8, hkv: 1, d: 16, opts: { mask: { kind: 'bidirectional' } } },
    { label: 'T300', tq: 300, tk: 300, hq: 2, hkv: 1, d: 32, opts: { mask: { kind: 'prefixLm', prefixLength: 260 } } },
    { label: 'T300', tq: 300, tk: 300, hq: 2, hkv: 2, d: 16, opts: { mask: causal } },
    { label: 'decode at 32, 65-row cache', tq: 1, tk: 65, hq: 8, hkv: 2, d: 64, opts: { mask: causal, queryOffset: 32, kvLength: 33 } },
    {
      label: 'chunk of 5 at 12, 20-row cache', tq: 5, tk: 20, hq: 4, hkv: 2, d: 16,
      opts: { mask: { kind: 'prefixLm', prefixLength: 14 }, queryOffset: 12, kvLength: 17 },
    },
    { label: 'T33 window 8', tq: 33, tk: 33, hq: 2, hkv: 1, d: 16, opts: { mask: causal, slidingWindow: 8 } },
    { label: 'T17 softCap 50', tq: 17, tk: 17, hq: 4, hkv: 2, d: 16, opts: { mask: { kind: 'bidirectional' }, softCap: 50 } },
    ...gemma2Shapes(),
  ];
}

/**
 * Gemma 2 (PaliGemma 2) attention: a cap small enough to bite (scaled scores have std ≈ 2 here,
 * so cap 50 moves them by < 0.1 %), windows shorter than the sequence, and the window combined
 * with the bidirectional prefix, where prefix rows keep the whole prefix (keyVisible's rule).
 */
function gemma2Shapes(): AttentionShape[] {
  const prefix = (prefixLength: number): AttentionMask => ({ kind: 'prefixLm', prefixLength });
  return [
    { label: 'T17 softCap 5', tq: 17, tk: 17, hq: 4, hkv: 2, d: 16, opts: { mask: causal, softCap: 5 } },
    { label: 'T40 window 8', tq: 40, tk: 40, hq: 4, hkv: 2, d: 16, opts: { mask: prefix(24), slidingWindow: 8 } },
    { label: 'T40 window 8 softCap 5', tq: 40, tk: 40, hq: 8, hkv: 1, d: 16, opts: { mask: prefix(24), slidingWindow: 8, softCap: 5 } },
    {
      label: 'chunk of 6 at 20 window 8 softCap 5, 32-row cache', tq: 6, tk: 32, hq: 4, hkv: 2, d: 16,
      opts: { mask: prefix(24), queryOffset: 20, kvLength: 26, slidingWindow: 8, softCap: 5 },
    },
    {
      label: 'decode at 40 window 8 softCap 5, 48-row cache', tq: 1, tk: 48, hq: 4, hkv: 2, d: 32,
      opts: { mask: prefix(24), queryOffset: 40, kvLength: 41, slidingWindow: 8, softCap: 5 },
    },
  ];
}

export function attentionCases(kernel: KernelSlot): CaseSpec[] {
  return shapes().map((s) => {
    const kvLength = s.opts.kvLength ?? s.tk;
    const q = [s.tq, s.hq, s.d], kv = [s.tk, s.hkv, s.d];
    return {
      op: 'attention', kernel, name: `${s.label} ${maskName(s.opts.mask)} gqa ${s.hq / s.hkv}`,
      shape: `q${fmt(q)} kv${fmt(kv)}${kvLength !== s.tk ? ` (${kvLength} valid)` : ''}`,
      threshold: THRESHOLDS.matmul, uses: [],
      work: { flops: 4 * s.tq * kvLength * s.hq * s.d },
      build: (g) => ({
        // Peaky scores (q std 2) so a wrong key choice cannot hide in a flat distribution.
        inputs: [input(g.normal(s.tq * s.hq * s.d, 2), q), input(g.normal(s.tk * s.hkv * s.d), kv), input(g.normal(s.tk * s.hkv * s.d), kv)],
        run: (b, [qt, kt, vt], ctx) => ctx.attention.attend(b, qt, kt, vt, { scale: 1 / Math.sqrt(s.d), ...s.opts }),
      }),
    };
  });
}
