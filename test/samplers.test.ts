import { expect } from 'chai';
import { PaliGemmaError } from '../src/interfaces/errors.js';
import type { Sampler } from '../src/interfaces/sampler.js';
import {
  chainSampler, createSampler, greedy, keptSet, logSoftmax, seededRng, softmax, temperature,
  temperatureSampler, topK, topKSampler, topP, topPSampler, type LogitsTransform,
} from '../src/samplers/index.js';

const f32 = (...xs: number[]) => Float32Array.from(xs);

/** Probabilities of `logits` after `transforms`, renormalized over the kept set (float64). */
function expected(logits: Float32Array, transforms: LogitsTransform[]): Float64Array {
  let x = logits;
  for (const t of transforms) x = t.apply(x);
  return softmax(x);
}

/** χ² critical value at p = 1e-4 (Wilson–Hilferty). */
function chiSquareCritical(df: number): number {
  const z = 3.719, a = 2 / (9 * df);
  return df * (1 - a + z * Math.sqrt(a)) ** 3;
}

function expectError(fn: () => unknown, message: string): void {
  let caught: unknown;
  try { fn(); } catch (e) { caught = e; }
  expect(caught, 'expected a PaliGemmaError').to.be.instanceOf(PaliGemmaError);
  expect((caught as Error).message).to.equal(message);
}

describe('samplers', () => {
  describe('seededRng', () => {
    it('repeats itself for a seed and differs across seeds', () => {
      const draw = (seed: number) => { const r = seededRng(seed); return Array.from({ length: 1000 }, () => r.next()); };
      expect(draw(42)).to.deep.equal(draw(42));
      expect(draw(42)).not.to.deep.equal(draw(43));
      expect(draw(0)).not.to.deep.equal(draw(1));
      expect(draw(-1)).not.to.deep.equal(draw(2 ** 32 - 1));
      expect(draw(2 ** 40)).not.to.deep.equal(draw(0));
      expect(draw(0.5)).not.to.deep.equal(draw(0));
    });

    it('draws uniform numbers in [0, 1)', () => {
      const r = seededRng(7);
      const bins = new Array<number>(10).fill(0);
      let lo = 1, hi = 0;
      for (let i = 0; i < 100_000; i++) {
        const u = r.next();
        lo = Math.min(lo, u); hi = Math.max(hi, u);
        bins[Math.floor(u * 10)]++;
      }
      expect(lo).to.be.at.least(0);
      expect(hi).to.be.below(1);
      const chi2 = bins.reduce((a, c) => a + (c - 10_000) ** 2 / 10_000, 0);
      expect(chi2).to.be.below(chiSquareCritical(9));
    });

    it('is pinned: the first outputs of seed 0 never change', () => {
      const r = seededRng(0);
      const first = [r.nextUint32(), r.nextUint32(), r.nextUint32()];
      expect(first).to.deep.equal(PINNED_SEED0);
    });
  });

  describe('logSoftmax / softmax', () => {
    it('matches a float64 reference and sums to 1', () => {
      const x = f32(1, 2, 3, -1, 0.5);
      const ref = Array.from(x, (v) => v - Math.log(Array.from(x).reduce((a, b) => a + Math.exp(b), 0)));
      const lp = logSoftmax(x);
      lp.forEach((v, i) => expect(v).to.be.closeTo(ref[i], 1e-12));
      expect(softmax(x).reduce((a, b) => a + b, 0)).to.be.closeTo(1, 1e-12);
    });

    it('is stable for large logits and keeps -Infinity entries at -Infinity / 0', () => {
      const lp = logSoftmax(f32(1000, 1000, -Infinity));
      expect(lp[0]).to.be.closeTo(-Math.LN2, 1e-12);
      expect(lp[2]).to.equal(-Infinity);
      expect(softmax(f32(1000, -Infinity))[1]).to.equal(0);
    });
  });

  describe('greedy', () => {
    it('picks the argmax, the lowest id on ties, and ignores NaN', () => {
      const ctx = { rng: seededRng(0) };
      expect(greedy().sample(f32(0, 3, 1, 3), ctx)).to.equal(1);
      expect(greedy().sample(f32(NaN, -1, 2), ctx)).to.equal(2);
      expect(greedy().sample(f32(-Infinity, -Infinity), ctx)).to.equal(0);
    });

    it('is what temperature 0 gives, whatever the kind', () => {
      const logits = f32(0.1, 2, 2, -1);
      for (const s of [temperatureSampler(0), topKSampler(3, 0), topPSampler(0.5, 0), createSampler({ kind: 'top-p', temperature: 0 })]) {
        expect(s.name).to.equal('greedy');
        expect(s.sample(logits, { rng: seededRng(1) })).to.equal(1);
      }
      expect(keptSet(logits, [temperature(0)])).to.deep.equal([1]);
    });
  });

  describe('kept sets', () => {
    const logits = f32(1.0, 3.0, 2.0, 3.0, -1.0, 2.0, 0.0);

    it('top-k keeps exactly k, ties broken by lower id', () => {
      expect(keptSet(logits, [topK(1)])).to.deep.equal([1]);
      expect(keptSet(logits, [topK(2)])).to.deep.equal([1, 3]);
      expect(keptSet(logits, [topK(3)])).to.deep.equal([1, 2, 3]);
      expect(keptSet(logits, [topK(4)])).to.deep.equal([1, 2, 3, 5]);
      expect(keptSet(logits, [topK(5)])).to.deep.equal([0, 1, 2, 3, 5]);
      expect(keptSet(f32(5, 5, 5, 5), [topK(2)])).to.deep.equal([0, 1]);
    });

    it('top-k with k ≥ vocabulary keeps everything', () => {
      expect(keptSet(logits, [topK(7)])).to.deep.equal([0, 1, 2, 3, 4, 5, 6]);
      expect(keptSet(logits, [topK(1000)])).to.deep.equal([0, 1, 2, 3, 4, 5, 6]);
    });

    it('top-k matches a sort on a large random vocabulary', () => {
      const r = seededRng(3);
      const big = Float32Array.from({ length: 5000 }, () => Math.round(r.next() * 200) / 10); // many ties
      const ref = [...big.keys()].sort((a, b) => big[b] - big[a] || a - b).slice(0, 37).sort((a, b) => a - b);
      expect(keptSet(big, [topK(37)])).to.deep.equal(ref);
    });

    it('top-p keeps the smallest set reaching p, including the token that crosses it', () => {
      // probabilities 0.5, 0.25, 0.125, 0.0625, 0.0625
      const l = f32(Math.log(0.5), Math.log(0.25), Math.log(0.125), Math.log(0.0625), Math.log(0.0625));
      expect(keptSet(l, [topP(0.3)])).to.deep.equal([0]);
      expect(keptSet(l, [topP(0.5)])).to.deep.equal([0]);
      expect(keptSet(l, [topP(0.51)])).to.deep.equal([0, 1]);
      expect(keptSet(l, [topP(0.75)])).to.deep.equal([0, 1]);
      expect(keptSet(l, [topP(0.8)])).to.deep.equal([0, 1, 2]);
      expect(keptSet(l, [topP(0.9)])).to.deep.equal([0, 1, 2, 3]); // tie 3/4: lower id first
      expect(keptSet(l, [topP(0.99)])).to.deep.equal([0, 1, 2, 3, 4]);
      expect(keptSet(l, [topP(1e-9)])).to.deep.equal([0]);
    });

    it('top-p breaks ties in probability by lower id', () => {
      expect(keptSet(new Float32Array(10), [topP(0.35)])).to.deep.equal([0, 1, 2, 3]);
      expect(keptSet(f32(0, 1, 0, 1, 0), [topP(0.5)])).to.deep.equal([1, 3]);
      expect(keptSet(f32(0, 1, 0, 1, 0), [topP(0.3)])).to.deep.equal([1]);
    });

    it('top-p with p = 1 keeps every finite logit, even negligible ones', () => {
      const l = f32(0, -80, -200, -Infinity, 5);
      expect(keptSet(l, [topP(1)])).to.deep.equal([0, 1, 2, 4]);
    });

    it('top-p matches a full sort on a peaked large vocabulary', () => {
      const r = seededRng(11);
      const big = Float32Array.from({ length: 20000 }, (_, i) => (i % 997 === 0 ? 12 : 0) + 3 * (r.next() - 0.5) - 30 * r.next() ** 4);
      const p = softmax(big);
      for (const pp of [0.1, 0.5, 0.9, 0.999]) {
        const order = [...p.keys()].sort((a, b) => p[b] - p[a] || a - b);
        let cum = 0, n = 0;
        while (cum < pp) cum += p[order[n++]];
        expect(keptSet(big, [topP(pp)])).to.deep.equal(order.slice(0, n).sort((a, b) => a - b));
      }
    });

    it('chains apply in the order given; Hugging Face order is temperature → top-k → top-p', () => {
      const l = f32(2.0, 1.0, 0.0, -1.0);
      // At T = 1: p ≈ 0.644, 0.237, 0.087, 0.032 → top-p(0.8) keeps {0, 1}.
      expect(keptSet(l, [topP(0.8)])).to.deep.equal([0, 1]);
      // Temperature 0.25 first sharpens: p ≈ 0.982, 0.018, … → {0}.
      expect(keptSet(l, [temperature(0.25), topP(0.8)])).to.deep.equal([0]);
      // top-p before temperature measures p at T = 1, and then temperature cannot change the set.
      expect(keptSet(l, [topP(0.8), temperature(0.25)])).to.deep.equal([0, 1]);
      // T = 3 flattens: p ≈ 0.385, 0.276, 0.198, 0.142 → {0, 1, 2} (0.858 ≥ 0.8).
      expect(keptSet(l, [temperature(3), topP(0.8)])).to.deep.equal([0, 1, 2]);
      // top-k then top-p renormalizes over the k survivors: {0, 1} at p = 0.8 of (0.731, 0.269).
      expect(keptSet(l, [topK(2), topP(0.8)])).to.deep.equal([0, 1]);
      expect(keptSet(l, [topK(2), topP(0.7)])).to.deep.equal([0]);
      // the factories build the HF order
      const s = topPSampler(0.8, 0.25);
      for (let seed = 0; seed < 50; seed++) expect(s.sample(l, { rng: seededRng(seed) })).to.equal(0);
    });

    it('always keeps at least one token', () => {
      expect(keptSet(f32(-Infinity, -Infinity, 3), [topP(1e-12), topK(1)])).to.deep.equal([2]);
      expect(keptSet(f32(NaN, NaN), [topK(1)])).to.deep.equal([0]);
      expect(chainSampler([topK(1)]).sample(f32(NaN, NaN), { rng: seededRng(0) })).to.equal(0);
    });

    it('transforms are pure', () => {
      const l = f32(1, 2, 3, 4);
      for (const t of [temperature(0.5), temperature(0), temperature(1), topK(2), topK(10), topP(0.5), topP(1)]) {
        const out = t.apply(l);
        expect(out).not.to.equal(l);
        expect(Array.from(l)).to.deep.equal([1, 2, 3, 4]);
      }
    });
  });

  describe('drawing', () => {
    const STAT = f32(2.0, 1.5, 1.2, 1.0, 0.7, 0.5, 0.2, 0, -0.3, -0.8, -1.5, -3);
    const cases: [string, Sampler, LogitsTransform[]][] = [
      ['temperature 0.7', temperatureSampler(0.7), [temperature(0.7)]],
      ['plain softmax', temperatureSampler(1), []],
      ['top-k 4 at T 0.7', topKSampler(4, 0.7), [temperature(0.7), topK(4)]],
      ['top-p 0.8 at T 0.7', topPSampler(0.8, 0.7), [temperature(0.7), topP(0.8)]],
      ['top-p 0.5 at T 1.5', createSampler({ kind: 'top-p', topP: 0.5, temperature: 1.5 }), [temperature(1.5), topP(0.5)]],
      ['chain T 0.9 → top-k 6 → top-p 0.9', chainSampler([temperature(0.9), topK(6), topP(0.9)]), [temperature(0.9), topK(6), topP(0.9)]],
    ];

    for (const [name, sampler, transforms] of cases) {
      it(`${name}: never leaves the kept set and passes a χ² test (fixed seed)`, () => {
        const p = expected(STAT, transforms);
        const kept = keptSet(STAT, transforms);
        const draws = 20_000;
        const counts = new Float64Array(STAT.length);
        const rng = seededRng(20240917);
        const allowed = new Set(kept);
        const outside: number[] = [];
        for (let i = 0; i < draws; i++) {
          const id = sampler.sample(STAT, { rng });
          if (!allowed.has(id)) outside.push(id);
          counts[id]++;
        }
        expect(outside, 'draws outside the kept set').to.deep.equal([]);
        const chi2 = kept.reduce((a, i) => a + (counts[i] - draws * p[i]) ** 2 / (draws * p[i]), 0);
        expect(chi2, `χ² over ${kept.length} ids`).to.be.below(chiSquareCritical(Math.max(1, kept.length - 1)));
      });
    }

    it('same seed, same tokens; different seed, different tokens', () => {
      const r = seededRng(5);
      const logits = Float32Array.from({ length: 300 }, () => 4 * r.next());
      const run = (s: Sampler, seed: number) => { const rng = seededRng(seed); return Array.from({ length: 500 }, () => s.sample(logits, { rng })); };
      for (const s of [temperatureSampler(1), topKSampler(20), topPSampler(0.9, 0.8)]) {
        expect(run(s, 1)).to.deep.equal(run(s, 1));
        expect(run(s, 1)).not.to.deep.equal(run(s, 2));
      }
    });

    it('does not modify the logits it is given', () => {
      const l = f32(1, 2, 3);
      topPSampler(0.5, 0.5).sample(l, { rng: seededRng(0) });
      expect(Array.from(l)).to.deep.equal([1, 2, 3]);
    });
  });

  describe('createSampler and validation', () => {
    it('builds each kind with its own options only', () => {
      const o = { temperature: 0.7, topK: 4, topP: 0.8 };
      expect(createSampler({ ...o, kind: 'greedy' }).name).to.equal('greedy');
      expect(createSampler({ ...o, kind: 'temperature' }).name).to.equal('temperature');
      expect(createSampler({ ...o, kind: 'top-k' }).name).to.equal('top-k');
      expect(createSampler({ ...o, kind: 'top-p' }).name).to.equal('top-p');
      const rng = () => seededRng(9);
      const l = f32(2.0, 1.5, 1.2, 1.0, 0.7, 0.5);
      const draw = (s: Sampler) => { const r = rng(); return Array.from({ length: 200 }, () => s.sample(l, { rng: r })); };
      expect(draw(createSampler({ ...o, kind: 'top-k' }))).to.deep.equal(draw(topKSampler(4, 0.7)));
      expect(draw(createSampler({ ...o, kind: 'top-p' }))).to.deep.equal(draw(topPSampler(0.8, 0.7)));
    });

    it('rejects bad values with one-line messages naming the option', () => {
      expectError(() => topPSampler(1.5), 'invalid --top-p 1.5: expected a number in (0, 1]');
      expectError(() => topP(0), 'invalid --top-p 0: expected a number in (0, 1]');
      expectError(() => createSampler({ kind: 'top-p', topP: NaN }), 'invalid --top-p NaN: expected a number in (0, 1]');
      expectError(() => topKSampler(0), 'invalid --top-k 0: expected an integer ≥ 1');
      expectError(() => topK(2.5), 'invalid --top-k 2.5: expected an integer ≥ 1');
      expectError(() => createSampler({ kind: 'top-k', topK: -3 }), 'invalid --top-k -3: expected an integer ≥ 1');
      expectError(() => temperatureSampler(-0.1), 'invalid --temperature -0.1: expected a number ≥ 0');
      expectError(() => temperature(Infinity), 'invalid --temperature Infinity: expected a number ≥ 0');
      expectError(() => createSampler({ kind: 'greedy', temperature: -1 }), 'invalid --temperature -1: expected a number ≥ 0');
      expectError(() => createSampler({ kind: 'beam' as never }), 'unknown sampler "beam": expected one of greedy, temperature, top-k, top-p');
    });
  });
});

/** First three 32-bit outputs of seededRng(0); a change here changes every seeded result. */
const PINNED_SEED0 = [3809008728, 1133695204, 53579671];
