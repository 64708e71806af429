import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PaliGemmaError } from '../src/interfaces/errors.js';
import { HfTokenizer } from '../src/tokenizer/hf-tokenizer.js';
import { promptIds as buildPromptIds, suffixIds as buildSuffixIds } from '../src/generation/prompt-format.js';
import { buildTinyTokenizerConfig, buildTinyTokenizerJson, TINY_TOKENIZER } from './support/tiny-tokenizer.js';

type Json = Record<string, any>;

/** What Hugging Face tokenizers/transformers make of the tiny tokenizer (make-hf-reference.py). */
const HF = JSON.parse(readFileSync(join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'hf-reference.json'), 'utf8')) as {
  versions: Record<string, string>;
  encodings: Record<string, number[]>;
  imageSeqLength: number;
  prompts: { prompt: string; suffix: string; prefixIds: number[]; suffixIds: number[] }[];
  decoded: { skip: string; full: string };
};

/** The tiny tokenizer.json without the given token strings (vocab and added_tokens). */
function without(...tokens: string[]): Json {
  const j = buildTinyTokenizerJson() as Json;
  for (const t of tokens) delete j.model.vocab[t];
  j.added_tokens = j.added_tokens.filter((a: Json) => !tokens.includes(a.content));
  return j;
}

function expectPaliGemmaError(fn: () => unknown, ...parts: string[]): void {
  let caught: unknown;
  try { fn(); } catch (e) { caught = e; }
  expect(caught, 'expected a PaliGemmaError').to.be.instanceOf(PaliGemmaError);
  for (const p of parts) expect((caught as Error).message).to.contain(p);
  expect((caught as Error).message).not.to.contain('\n');
}

async function expectRejects(p: Promise<unknown>, ...parts: string[]): Promise<void> {
  let caught: unknown;
  try { await p; } catch (e) { caught = e; }
  expect(caught, 'expected a PaliGemmaError').to.be.instanceOf(PaliGemmaError);
  for (const part of parts) expect((caught as Error).message).to.contain(part);
}

describe('HfTokenizer', () => {
  const tok = HfTokenizer.fromJson(buildTinyTokenizerJson(), buildTinyTokenizerConfig());

  describe('tiny tokenizer fixture', () => {
    it('has the PaliGemma layout promised by TINY_TOKENIZER', () => {
      expect(tok.vocabSize).to.equal(TINY_TOKENIZER.vocabSize);
      expect(tok.special).to.include({ pad: 0, eos: 1, bos: 2, image: TINY_TOKENIZER.image });
      expect(TINY_TOKENIZER.image).to.equal(TINY_TOKENIZER.vocabSize - 1);
      expect(tok.idToToken(3)).to.equal('<unk>');
      expect(tok.idToToken(4)).to.equal('<0x00>');
      expect(tok.idToToken(259)).to.equal('<0xFF>');
      expect(tok.idToToken(TINY_TOKENIZER.locBase)).to.equal('<loc0000>');
      expect(tok.idToToken(TINY_TOKENIZER.segBase + 127)).to.equal('<seg127>');
      expect(tok.idToToken(TINY_TOKENIZER.image)).to.equal('<image>');
    });

    it('is deterministic', () => {
      expect(JSON.stringify(buildTinyTokenizerJson())).to.equal(JSON.stringify(buildTinyTokenizerJson()));
    });

    it('tokenizes common words into few tokens', () => {
      expect(tok.encode('caption en').length).to.be.at.most(3);
      expect(tok.encode('a cat sitting on the table').length).to.be.at.most(8);
      expect(tok.encode('detect cat ; dog').length).to.be.at.most(6);
    });
  });

  describe('special ids', () => {
    it('finds loc and seg tokens in order', () => {
      expect(tok.special.loc).to.have.length(1024);
      expect(tok.special.seg).to.have.length(128);
      tok.special.loc.forEach((id, i) => expect(id).to.equal(TINY_TOKENIZER.locBase + i));
      tok.special.seg.forEach((id, i) => expect(id).to.equal(TINY_TOKENIZER.segBase + i));
    });

    it('leaves loc/seg empty when the tokenizer has none', () => {
      const locs = Array.from({ length: 1024 }, (_, i) => `<loc${String(i).padStart(4, '0')}>`);
      const segs = Array.from({ length: 128 }, (_, i) => `<seg${String(i).padStart(3, '0')}>`);
      const t = HfTokenizer.fromJson(without(...locs, ...segs));
      expect(t.special.loc).to.deep.equal([]);
      expect(t.special.seg).to.deep.equal([]);
    });

    it('falls back to <eos> for padding when there is no <pad>', () => {
      expect(HfTokenizer.fromJson(without('<pad>')).special.pad).to.equal(TINY_TOKENIZER.eos);
    });
  });

  describe('encode / decode', () => {
    const samples = [
      'caption en', 'the quick brown fox jumps over the lazy dog', 'answer en what is in the image?\n',
      ' leading space', 'trailing space ', 'two  spaces', '\n\nnew\nlines\n', 'UPPER Case Mixed',
      'numbers 0123456789 and 3.14', 'tabs\tand\rreturns', '',
    ];
    for (const s of samples) {
      it(`round-trips ${JSON.stringify(s)}`, () => {
        const ids = tok.encode(s);
        expect(tok.decode(ids)).to.equal(s);
      });
    }

    it('adds no special tokens', () => {
      const ids = tok.encode('caption en');
      expect(ids).not.to.include(tok.special.bos);
      expect(ids).not.to.include(tok.special.eos);
    });

    it('replaces spaces with ▁ and adds no dummy prefix', () => {
      const pieces = tok.encode('caption en').map((id) => tok.idToToken(id));
      expect(pieces[0]).to.equal('caption');
      expect(pieces.join('')).to.equal('caption▁en');
      expect(tok.encode(' cat').map((id) => tok.idToToken(id))).to.deep.equal(['▁cat']);
    });

    it('gives the same ids with the normalizer written as a Sequence', () => {
      const j = buildTinyTokenizerJson() as Json;
      j.normalizer = { type: 'Sequence', normalizers: [j.normalizer] };
      const t = HfTokenizer.fromJson(j);
      for (const s of ['caption en\n', ' two  spaces ', 'héllo 世界']) expect(t.encode(s)).to.deep.equal(tok.encode(s));
    });

    it('falls back to UTF-8 bytes for characters outside the vocabulary', () => {
      for (const s of ['héllo', '世界', '🙂 emoji', 'Ωmega — dash', 'naïve café']) {
        const ids = tok.encode(s);
        expect(tok.decode(ids)).to.equal(s);
        expect(ids).not.to.include(3); // never <unk>
      }
      const pieces = tok.encode('世').map((id) => tok.idToToken(id));
      expect(pieces).to.deep.equal(['<0xE4>', '<0xB8>', '<0x96>']);
    });

    it('decodes loc and seg tokens to their strings, kept by skipSpecialTokens', () => {
      const { loc, seg, bos, eos } = tok.special;
      const ids = [loc[12], loc[340], loc[1023], loc[0], ...tok.encode(' cat'), seg[5], seg[127], eos];
      expect(tok.decode(ids)).to.equal('<loc0012><loc0340><loc1023><loc0000> cat<seg005><seg127><eos>');
      expect(tok.decode([bos, ...ids], { skipSpecialTokens: true })).to.equal('<loc0012><loc0340><loc1023><loc0000> cat<seg005><seg127>');
    });

    it('encodes loc/seg strings written in text as single tokens', () => {
      const { loc, seg } = tok.special;
      expect(tok.encode('<loc0100><loc0200> dog')).to.deep.equal([loc[100], loc[200], ...tok.encode(' dog')]);
      expect(tok.encode('<seg042>')).to.deep.equal([seg[42]]);
    });

    it('skipSpecialTokens drops <bos>, <eos>, <pad> and <image>', () => {
      const { bos, eos, pad, image } = tok.special;
      const body = tok.encode('a red car');
      const ids = [image, image, bos, ...body, eos, pad];
      expect(tok.decode(ids)).to.equal('<image><image><bos>a red car<eos><pad>');
      expect(tok.decode(ids, { skipSpecialTokens: true })).to.equal('a red car');
    });

    it('decodes an empty list and ignores ids without a token', () => {
      expect(tok.decode([])).to.equal('');
      expect(tok.decode([...tok.encode('cat'), tok.vocabSize, tok.vocabSize + 50])).to.equal('cat');
      expect(tok.idToToken(tok.vocabSize)).to.equal(undefined);
      expect(tok.idToToken(-1)).to.equal(undefined);
    });
  });

  describe('PaliGemma prompt format', () => {
    it('is [<image>]·N <bos> prompt "\\n"', () => {
      const ids = buildPromptIds(tok, 'caption en', 4);
      const { image, bos } = tok.special;
      expect(ids.slice(0, 5)).to.deep.equal([image, image, image, image, bos]);
      expect(ids.slice(5)).to.deep.equal(tok.encode('caption en\n'));
      expect(tok.idToToken(ids[ids.length - 1])).to.equal('\n');
      expect(tok.decode(ids.slice(4))).to.equal('<bos>caption en\n');
    });

    it('equals tokenizing the whole processor string at once', () => {
      for (const prompt of ['caption en', 'answer en where is the dog?', ' detect cat', 'ocr', '', 'héllo wörld']) {
        const whole = tok.encode(`${'<image>'.repeat(3)}<bos>${prompt}\n`);
        expect(buildPromptIds(tok, prompt, 3)).to.deep.equal(whole);
      }
    });

    it('removes <image> strings from the prompt, as PaliGemmaProcessor does', () => {
      expect(buildPromptIds(tok, '<image>caption en', 2)).to.deep.equal(buildPromptIds(tok, 'caption en', 2));
    });

    it('tokenizes the prompt as text that follows <bos> (Metaspace prepend_scheme "first")', () => {
      // A SentencePiece-style tokenizer that prepends '▁' only at the very start of the input:
      // the processor's string starts with <image>/<bos>, so the prompt gets no '▁'.
      const j = buildTinyTokenizerJson() as Json;
      j.normalizer = null;
      j.pre_tokenizer = { type: 'Metaspace', replacement: '▁', prepend_scheme: 'first', split: false };
      const t = HfTokenizer.fromJson(j);
      const alone = t.encode('caption en\n');
      expect(t.idToToken(alone[0])!.startsWith('▁')).to.equal(true);
      const ids = buildPromptIds(t, 'caption en', 2);
      expect(ids).to.deep.equal(t.encode('<image><image><bos>caption en\n'));
      expect(t.idToToken(ids[3])).to.equal('caption');
    });

    it('appends <eos> to a suffix', () => {
      const ids = buildSuffixIds(tok, 'a cat');
      expect(ids).to.deep.equal([...tok.encode('a cat'), tok.special.eos]);
      expect(buildSuffixIds(tok, '')).to.deep.equal([tok.special.eos]);
    });
  });

  describe(`agrees with Hugging Face (transformers ${HF.versions.transformers}, tokenizers ${HF.versions.tokenizers})`, () => {
    it('encodes every reference text to the same ids', () => {
      for (const [text, ids] of Object.entries(HF.encodings)) expect(tok.encode(text), JSON.stringify(text)).to.deep.equal(ids);
    });

    it("builds PaliGemmaProcessor's prefix and suffix ids", () => {
      for (const { prompt, suffix, prefixIds, suffixIds } of HF.prompts) {
        expect(buildPromptIds(tok, prompt, HF.imageSeqLength), JSON.stringify(prompt)).to.deep.equal(prefixIds);
        expect(buildSuffixIds(tok, suffix), JSON.stringify(suffix)).to.deep.equal(suffixIds);
      }
    });

    it('decodes like transformers', () => {
      const { bos, eos, image } = tok.special;
      expect(tok.decode([bos, ...HF.encodings['<loc0100><loc0200> dog'], eos], { skipSpecialTokens: true })).to.equal(HF.decoded.skip);
      expect(tok.decode([image, bos, ...HF.encodings['héllo 世界 🙂'], eos])).to.equal(HF.decoded.full);
    });
  });

  describe('loading and errors', () => {
    let dir: string;
    beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'pg-tok-')); });
    afterEach(async () => { await rm(dir, { recursive: true, force: true }); });

    it('loads tokenizer.json with and without tokenizer_config.json', async () => {
      await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(buildTinyTokenizerJson()));
      const a = await HfTokenizer.fromDir(dir);
      await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify(buildTinyTokenizerConfig()));
      const b = await HfTokenizer.fromDir(dir);
      for (const t of [a, b]) {
        expect(t.special).to.deep.equal(tok.special);
        expect(t.encode('the red car')).to.deep.equal(tok.encode('the red car'));
      }
    });

    it('names a missing tokenizer.json', async () => {
      await expectRejects(HfTokenizer.fromDir(join(dir, 'nope')), 'tokenizer.json', 'not found');
    });

    it('names a corrupt tokenizer.json / tokenizer_config.json', async () => {
      await writeFile(join(dir, 'tokenizer.json'), '{"model": ');
      await expectRejects(HfTokenizer.fromDir(dir), 'tokenizer.json', 'not valid JSON');
      await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(buildTinyTokenizerJson()));
      await writeFile(join(dir, 'tokenizer_config.json'), 'nope');
      await expectRejects(HfTokenizer.fromDir(dir), 'tokenizer_config.json');
      await writeFile(join(dir, 'tokenizer_config.json'), '{}');
      await writeFile(join(dir, 'tokenizer.json'), '[1, 2]');
      await expectRejects(HfTokenizer.fromDir(dir), 'tokenizer.json');
    });

    it('names the file and the token when <bos>, <eos> or <image> is missing', async () => {
      for (const t of ['<bos>', '<eos>', '<image>']) {
        expectPaliGemmaError(() => HfTokenizer.fromJson(without(t)), 'tokenizer.json', t);
      }
      await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(without('<image>')));
      await expectRejects(HfTokenizer.fromDir(dir), join(dir, 'tokenizer.json'), '<image>');
    });

    it('rejects a tokenizer.json without a model', () => {
      expectPaliGemmaError(() => HfTokenizer.fromJson({ added_tokens: [] }), 'tokenizer.json', 'model');
    });
  });
});
