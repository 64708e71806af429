/**
 * Sampler cases. Samplers are plain JS over logits, so what is checked is that every registered
 * sampler picks the same token from the tested backend's logits as from the oracle's (same seed)
 * and repeats itself under the same seed. For the built-in kinds, also: draws never leave the
 * kept set, and (fixed seed, so the verdict never flickers) a chi-square test that they follow
 * the renormalized distribution that definition gives.
 */
import type { Sampler } from '../interfaces/sampler.js';
import type { TensorBackend } from '../interfaces/tensor-backend.js';
import type { PartRegistry } from '../plugin/part-registry.js';
import { seededRng } from '../samplers/rng.js';
import { samplerMismatchAllowed } from './lossy-weights.js';
import type { OpResult } from './report.js';
import { SeededData } from './seeded-data.js';

const OPTIONS = { temperature: 0.7, topK: 4, topP: 0.9 };   // top-p keeps 6 of STAT_LOGITS, top-k 4
const ROWS = 4, VOCAB = 1031, HIDDEN = 64, SEEDS = 16;
const DRAWS = 20_000;
/** The kinds whose distribution is checked against its definition. */
const DEFINED_KINDS = ['temperature', 'top-k', 'top-p'];
/** Twelve distinct logits: no ties for top-k, no probability mass sitting on the top-p edge. */
const STAT_LOGITS = Float32Array.of(2.0, 1.5, 1.2, 1.0, 0.7, 0.5, 0.2, 0, -0.3, -0.8, -1.5, -3);

/** Logits [ROWS, VOCAB] from an lm-head shaped matmul on `b`. */
async function headLogits(b: TensorBackend): Promise<Float32Array> {
  const d = new SeededData(7);
  const h = b.upload(d.normal(ROWS * HIDDEN), [ROWS, HIDDEN]);
  const table = b.upload(d.normal(VOCAB * HIDDEN, 0.4), [VOCAB, HIDDEN]);
  const logits = b.matmul(h, table, { transposeB: true });
  try {
    return await b.read(logits);
  } finally {
    b.dispose([h, table, logits]);
  }
}

const draw = (s: Sampler, logits: Float32Array, seed: number): number => s.sample(Float32Array.from(logits), { rng: seededRng(seed) });

export async function samplerCases(registry: PartRegistry, tested: { name: string; backend: TensorBackend }, oracle: { name: string; backend: TensorBackend }): Promise<OpResult[]> {
  const out: OpResult[] = [];
  const base = (name: string, what: string, threshold = 0) => ({ op: 'sampler', case: `${name}: ${what}`, shape: '', threshold });
  let mine: Float32Array | undefined, theirs: Float32Array | undefined, logitsProblem = '';
  if (!tested.backend.supports('matmul')) logitsProblem = `supports('matmul', 'f32') is false`;
  else {
    try {
      [mine, theirs] = [await headLogits(tested.backend), await headLogits(oracle.backend)];
    } catch (e) {
      logitsProblem = `logits matmul threw: ${(e as Error).message.split('\n')[0]}`;
    }
  }

  for (const name of registry.names('sampler')) {
    let sampler: Sampler;
    try {
      sampler = registry.get('sampler', name).create({ ...OPTIONS });
    } catch (e) {
      out.push({ ...base(name, 'create'), error: null, status: 'fail', detail: `create threw: ${(e as Error).message}` });
      continue;
    }
    const rows = (l: Float32Array) => Array.from({ length: ROWS }, (_, r) => l.subarray(r * VOCAB, (r + 1) * VOCAB));
    const shape = `${ROWS}×${SEEDS} draws from [${ROWS},${VOCAB}] logits`;
    if (!mine || !theirs) {
      out.push({ ...base(name, `same token from ${tested.name} and ${oracle.name} logits`), shape, error: null, status: 'unsupported', detail: logitsProblem });
      continue;
    }
    let repeatMiss = 0, crossMiss = 0, outside = 0, first = '';
    rows(mine).forEach((row, r) => {
      const other = rows(theirs!)[r];
      const expected = expectedDistribution(name, row);
      for (let seed = 0; seed < SEEDS; seed++) {
        const a = draw(sampler, row, seed), again = draw(sampler, row, seed), b = draw(sampler, other, seed);
        if (a !== again) repeatMiss++;
        if (a !== b) { crossMiss++; first ||= `row ${r} seed ${seed}: ${a} vs ${b}`; }
        if (expected && !(expected[a] > 0)) outside++;
      }
    });
    if (DEFINED_KINDS.includes(name)) {
      out.push({ ...base(name, `draws stay in the kept set of ${VOCAB} logits`), shape, error: outside, status: outside ? 'fail' : 'pass',
        detail: outside ? `${outside} draws outside the kept set` : undefined });
    }
    out.push({ ...base(name, 'same seed, same token'), shape, error: repeatMiss, status: repeatMiss ? 'fail' : 'pass',
      detail: repeatMiss ? `${repeatMiss} draws changed between two runs with the same seed` : undefined });
    // Exact weights: every draw must agree. Lossy weights move the logits, so a few draws near a
    // boundary of the inverse CDF may flip; wrong logits flip most of them.
    const allowed = samplerMismatchAllowed(ROWS * SEEDS, tested.backend.lossyWeights);
    out.push({ ...base(name, `same token from ${tested.name} and ${oracle.name} logits`, allowed), shape, error: crossMiss,
      status: crossMiss > allowed ? 'fail' : 'pass',
      detail: crossMiss ? `${crossMiss} of ${ROWS * SEEDS} draws differ (first: ${first})` : undefined });
  }
  for (const name of DEFINED_KINDS) {
    if (registry.names('sampler').includes(name)) {
      out.push(chiSquareCase(name, registry.get('sampler', name).create({ ...OPTIONS }), expectedDistribution(name, STAT_LOGITS)!));
    }
  }
  return out;
}

/** What a built-in kind must draw from `logits` with OPTIONS, by definition; undefined for other samplers. */
function expectedDistribution(kind: string, logits: ArrayLike<number>): Float64Array | undefined {
  const t = OPTIONS.temperature;
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]);
  const e = Float64Array.from(logits, (l) => Math.exp((l - max) / t));
  const sum = e.reduce((a, b) => a + b, 0);
  const p = e.map((x) => x / sum);
  const order = [...p.keys()].sort((a, b) => p[b] - p[a] || a - b);
  const keep = (ids: number[]) => {
    const kept = new Float64Array(p.length);
    const mass = ids.reduce((a, i) => a + p[i], 0);
    for (const i of ids) kept[i] = p[i] / mass;
    return kept;
  };
  if (kind === 'temperature') return p;
  if (kind === 'top-k') return keep(order.slice(0, OPTIONS.topK));
  if (kind === 'top-p') {
    let cum = 0, n = 0;
    while (cum < OPTIONS.topP) cum += p[order[n++]];
    return keep(order.slice(0, n));
  }
  return undefined;
}

function chiSquareCase(name: string, sampler: Sampler, expected: Float64Array): OpResult {
  const counts = new Float64Array(expected.length);
  const rng = seededRng(20240917);
  let outside = 0;
  for (let i = 0; i < DRAWS; i++) {
    const id = sampler.sample(Float32Array.from(STAT_LOGITS), { rng });
    if (!(expected[id] > 0)) outside++;
    else counts[id]++;
  }
  const kept = [...expected.keys()].filter((i) => expected[i] > 0);
  const chi2 = kept.reduce((a, i) => a + (counts[i] - DRAWS * expected[i]) ** 2 / (DRAWS * expected[i]), 0);
  const critical = chiSquareCritical(kept.length - 1);
  const c = {
    op: 'sampler', case: `${name}: chi-square, ${DRAWS} draws, fixed seed`,
    shape: `${STAT_LOGITS.length} logits, keeps ${kept.length}`, threshold: critical,
  };
  if (outside > 0) return { ...c, error: chi2, status: 'fail', detail: `${outside} draws outside the kept set {${kept.join(', ')}}` };
  return { ...c, error: chi2, status: chi2 <= critical ? 'pass' : 'fail',
    detail: chi2 <= critical ? undefined : `χ² ${chi2.toFixed(1)} > ${critical.toFixed(1)} (df ${kept.length - 1}); counts ${[...counts].join(' ')}` };
}

/** χ² critical value at p = 1e-4 (Wilson–Hilferty); with a fixed seed the verdict never flickers. */
export function chiSquareCritical(df: number): number {
  if (df <= 0) return 0;
  const z = 3.719, a = 2 / (9 * df);
  return df * (1 - a + z * Math.sqrt(a)) ** 3;
}
