/**
 * tokenLogprobs (the batch scheduler's per-row logprobs) against log-softmax written here in
 * plain float64 (log-sum-exp after the maximum), and bit for bit against the generate path's
 * topLogprobs(logSoftmax(·)), including -Infinity, NaN and +Infinity logits and ties.
 */
import { expect } from 'chai';
import fc from 'fast-check';
import { topLogprobs } from '../src/generation/generation-pipeline.js';
import { logSoftmax } from '../src/samplers/log-softmax.js';
import { tokenLogprobs } from '../src/serving/token-logprobs.js';

/** Independent: log p_i = x_i − (m + log Σ exp(x_j − m)), float64, -∞/NaN weigh nothing. */
function oracle(x: number[]): number[] {
  const finite = x.filter((v) => v > -Infinity);
  const m = finite.reduce((a, b) => (b > a ? b : a), -Infinity);
  let z = 0;
  for (const v of finite) z += Math.exp(v - m);
  return x.map((v) => (v > -Infinity ? v - (m + Math.log(z)) : -Infinity));
}

/** Indices of the n largest, highest first, lower index first among equals. */
function oracleTop(lp: number[], n: number): number[] {
  return lp.map((v, i) => ({ v, i })).sort((a, b) => b.v - a.v || a.i - b.i).slice(0, n).map((e) => e.i);
}

describe('serve: tokenLogprobs', () => {
  it('matches float64 log-softmax written here, and the top N in order', () => {
    fc.assert(fc.property(
      fc.array(fc.float({ min: -30, max: 30, noNaN: true }), { minLength: 1, maxLength: 64 }),
      fc.nat(), fc.integer({ min: 0, max: 8 }),
      (raw, pick, n) => {
        const logits = Float32Array.from(raw);
        const token = pick % logits.length;
        const want = oracle([...logits]);
        const got = tokenLogprobs(logits, token, n);
        expect(got.logprob).to.be.closeTo(want[token], 1e-12);
        expect(got.top.map((t) => t.token)).to.deep.equal(oracleTop(want, n));
        got.top.forEach((t) => expect(t.logprob).to.be.closeTo(want[t.token], 1e-12));
      }), { numRuns: 300 });
  });

  it('is bit-identical to topLogprobs(logSoftmax(·)), special values and ties included', () => {
    const special = fc.constantFrom(-Infinity, Infinity, Number.NaN, 0, 1, 1);
    fc.assert(fc.property(
      fc.array(fc.oneof(fc.float({ min: -20, max: 20, noNaN: true }), special), { minLength: 1, maxLength: 40 }),
      fc.nat(), fc.integer({ min: 1, max: 6 }),
      (raw, pick, n) => {
        const logits = Float32Array.from(raw);
        const token = pick % logits.length;
        const lp = logSoftmax(logits);
        const got = tokenLogprobs(logits, token, n);
        expect(Object.is(got.logprob, lp[token])).to.equal(true, `token ${token}: ${got.logprob} vs ${lp[token]}`);
        expect(got.top).to.deep.equal(topLogprobs(lp, n));
      }), { numRuns: 500 });
  });

  it('a vocabulary-sized row: the sampled token and the top 3', () => {
    const logits = new Float32Array(257216);
    for (let i = 0; i < logits.length; i++) logits[i] = Math.sin(i * 0.37) * 8;
    logits[1234] = 20;
    const want = oracle([...logits]);
    const got = tokenLogprobs(logits, 1234, 3);
    expect(got.logprob).to.be.closeTo(want[1234], 1e-9);
    expect(got.top.map((t) => t.token)).to.deep.equal(oracleTop(want, 3));
  });
});
