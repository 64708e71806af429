/**
 * Streaming stays linear (issue 13): text deltas are decoded over a short window, holding back
 * incomplete UTF-8 sequences spread over byte-fallback tokens, and their concatenation is the
 * full decode on every sequence, however tricky.
 */
import { expect } from 'chai';
import fc from 'fast-check';
import { HfTokenizer } from '../src/tokenizer/hf-tokenizer.js';
import { TextDeltas } from '../src/generation/text-deltas.js';
import type { Tokenizer } from '../src/interfaces/tokenizer.js';
import { buildTinyTokenizerConfig, buildTinyTokenizerJson, TINY_TOKENIZER } from './support/tiny-tokenizer.js';

const BYTE_BASE = 4;          // <0x00> is id 4 in the tiny tokenizer (byte fallback)
const byteIds = (text: string): number[] => [...Buffer.from(text, 'utf8')].map((b) => BYTE_BASE + b);

/** Streams `ids` through TextDeltas; returns the deltas (flush last) and the ids the decoder was given in all. */
function streamDeltas(tokenizer: Tokenizer, ids: readonly number[]): { deltas: string[]; decodedIds: number; decodeCalls: number } {
  let decodedIds = 0, decodeCalls = 0;
  const counting: Pick<Tokenizer, 'decode'> = {
    decode: (window, opts) => { decodedIds += window.length; decodeCalls++; return tokenizer.decode(window, opts); },
  };
  const d = new TextDeltas(counting);
  const deltas = ids.map((id) => d.push(id));
  deltas.push(d.flush());
  return { deltas, decodedIds, decodeCalls };
}

describe('streaming text deltas', function () {
  let tok: HfTokenizer;
  const full = (ids: readonly number[]) => tok.decode(ids, { skipSpecialTokens: true });

  before(function () {
    tok = HfTokenizer.fromJson(buildTinyTokenizerJson(), buildTinyTokenizerConfig());
  });

  it('the tiny tokenizer decodes byte-fallback runs as UTF-8 (what the cases below rely on)', function () {
    expect(full(byteIds('€'))).to.equal('€');
    expect(full(byteIds('😀'))).to.equal('😀');
    expect(full(byteIds('€').slice(0, 2))).to.match(/\uFFFD$/);
  });

  it('holds back a multi-byte character until its last byte token, then emits it whole', function () {
    const ids = [...tok.encode('a cat'), ...byteIds('€'), ...tok.encode('▁and'), ...byteIds('😀'), ...byteIds('é')];
    const { deltas } = streamDeltas(tok, ids);
    expect(deltas.join('')).to.equal(full(ids));
    expect(deltas.join('')).to.equal('a cat€ and😀é');        // written out independently of our decoder
    for (const d of deltas) expect(d).to.not.contain('\uFFFD');
    // The three bytes of '€' give '', '', '€'.
    const euroAt = tok.encode('a cat').length;
    expect(deltas.slice(euroAt, euroAt + 3)).to.deep.equal(['', '', '€']);
  });

  it('keeps leading-space pieces, special tokens and loc tokens as the full decode has them', function () {
    const ids = [TINY_TOKENIZER.bos, ...tok.encode('detect cat'), TINY_TOKENIZER.locBase + 12, TINY_TOKENIZER.locBase + 1023,
      ...tok.encode('▁the▁dog'), TINY_TOKENIZER.pad, TINY_TOKENIZER.eos];
    const { deltas } = streamDeltas(tok, ids);
    expect(deltas.join('')).to.equal(full(ids));
    expect(deltas.join('')).to.contain('<loc0012><loc1023>');
  });

  it('emits an invalid byte as the full decode does and flushes a truncated sequence', function () {
    for (const ids of [
      [BYTE_BASE + 0xff, ...tok.encode('a')],                                   // a lone invalid byte
      [BYTE_BASE + 0xe2, BYTE_BASE + 0x82],                                     // '€' cut short at the end
      [BYTE_BASE + 0xe2, BYTE_BASE + 0x82, ...tok.encode('ab')],                // cut short mid-text
      Array.from({ length: 9 }, () => BYTE_BASE + 0x80),                        // a run of continuation bytes
    ]) {
      const { deltas } = streamDeltas(tok, ids);
      expect(deltas.join(''), JSON.stringify(ids)).to.equal(full(ids));
    }
  });

  it('property: the concatenated deltas equal the full decode on random mixes of pieces, bytes and specials', function () {
    const byteRun = fc.constantFrom('€', 'é', '😀', '中文', 'ß', '\u0301', 'a').map(byteIds);
    const piece = fc.integer({ min: 260, max: 659 }).map((id) => [id]);
    const special = fc.constantFrom(TINY_TOKENIZER.bos, TINY_TOKENIZER.eos, TINY_TOKENIZER.pad, 3).map((id) => [id]);
    const loc = fc.integer({ min: 0, max: 1023 }).map((i) => [TINY_TOKENIZER.locBase + i]);
    const rawByte = fc.integer({ min: 0, max: 255 }).map((b) => [BYTE_BASE + b]);
    const sequence = fc.array(fc.oneof(byteRun, piece, special, loc, rawByte), { maxLength: 40 }).map((parts) => parts.flat());
    fc.assert(fc.property(sequence, (ids) => {
      const { deltas } = streamDeltas(tok, ids);
      expect(deltas.join('')).to.equal(full(ids));
    }), { numRuns: 300, seed: 20 });
  });

  it('property: on valid UTF-8 no delta carries a replacement character', function () {
    const text = fc.array(fc.constantFrom('€', 'é', '😀', '中', 'x', '▁'), { minLength: 1, maxLength: 30 });
    fc.assert(fc.property(text, (chars) => {
      const ids = chars.flatMap((c) => (c === '▁' || c === 'x' ? tok.encode(c) : byteIds(c)));
      const { deltas } = streamDeltas(tok, ids);
      for (const d of deltas) expect(d).to.not.contain('\uFFFD');
      expect(deltas.join('')).to.equal(full(ids));
    }), { numRuns: 200, seed: 13 });
  });

  it('decodes a bounded window per token: work grows linearly with the output', function () {
    const unit = [...tok.encode('▁a▁cat'), ...byteIds('€😀')];
    const measure = (n: number) => {
      const ids = Array.from({ length: n }, (_, i) => unit[i % unit.length]);
      const r = streamDeltas(tok, ids);
      expect(r.deltas.join('')).to.equal(full(ids));
      return r.decodedIds / n;
    };
    const short = measure(200), long = measure(4000);
    // Each token is decoded inside two windows of at most 2·4 tokens; a whole-list decode per
    // step would average n/2 ids per token (2000 here).
    expect(long).to.be.at.most(16);
    expect(long).to.be.closeTo(short, 1);
  });
});
