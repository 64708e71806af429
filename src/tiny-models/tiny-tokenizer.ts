/**
 * A small tokenizer.json in the layout of PaliGemma's: BPE with byte fallback, spaces replaced
 * by '▁' (no dummy prefix), the same special tokens in the same order, 1024 `<locNNNN>`,
 * 128 `<segNNN>` and `<image>` as the very last id. Only the number of ordinary pieces is
 * smaller, so tests can build tiny checkpoints whose embedding table stays small.
 *
 * Layout:
 *   0 <pad>, 1 <eos>, 2 <bos>, 3 <unk>
 *   4 .. 259          <0x00> .. <0xFF>            (byte fallback)
 *   260 .. 659        400 pieces: characters, then BPE merges learned from CORPUS
 *   660 .. 1683       <loc0000> .. <loc1023>
 *   1684 .. 1811      <seg000> .. <seg127>
 *   1812              <image>
 */

const SPECIALS = ['<pad>', '<eos>', '<bos>', '<unk>'] as const;
const BYTE_BASE = SPECIALS.length;
const PIECE_BASE = BYTE_BASE + 256;
/** Characters plus learned merges; fixed so every id below stays put. */
const PIECE_COUNT = 400;
const LOC_BASE = PIECE_BASE + PIECE_COUNT;
const SEG_BASE = LOC_BASE + 1024;
const IMAGE_ID = SEG_BASE + 128;

export const TINY_TOKENIZER: {
  readonly vocabSize: number; readonly pad: 0; readonly eos: 1; readonly bos: 2; readonly image: number;
  readonly locBase: number; readonly segBase: number;
} = {
  vocabSize: IMAGE_ID + 1,
  pad: 0,
  eos: 1,
  bos: 2,
  image: IMAGE_ID,
  /** First `<locNNNN>` id; loc i is locBase + i. */
  locBase: LOC_BASE,
  /** First `<segNNN>` id; seg i is segBase + i. */
  segBase: SEG_BASE,
};

/** Single characters every piece is built from (each is its own token). */
const ALPHABET = [
  '▁', '\n',
  ...'abcdefghijklmnopqrstuvwxyz',
  ...'0123456789',
  ...'.,;:!?\'"-()/&%+=*<>[]#@_',
];

/** Text the merges are learned from: PaliGemma task prompts and plain English. */
const CORPUS = [
  'caption en', 'caption es', 'caption fr', 'caption de', 'describe en', 'ocr',
  'answer en what is in the image?', 'answer en how many cats are there?',
  'question en where is the dog?', 'detect cat ; dog ; person', 'segment car',
  'detect the red car and the blue bus', 'a cat sitting on a wooden table',
  'a dog running in the park with a red ball', 'two people standing next to a car',
  'the quick brown fox jumps over the lazy dog', 'an image of a small house near the river',
  'there is a man riding a bike on the street', 'a photo of the city at night with lights',
  'this is a picture of three birds in a tree', 'the woman is holding an umbrella in the rain',
  'what color is the train? the train is yellow', 'how many people are in the room? four',
  'a plate of food with rice and vegetables', 'a group of children playing football outside',
  'the sky is blue and the grass is green', 'a white horse standing in a field',
  'there are two cats sleeping on the sofa', 'the boy is reading a book at the table',
  'a close up of a pizza on a plate', 'an old building with a large clock tower',
  'the number is 42 and the year is 2024', 'it is 10:30 in the morning',
  'a kitchen with a stove, a sink and white cabinets', 'people walking along the beach at sunset',
  'a black and white photograph of a mountain road', 'the kite is flying high above the water',
  'several boats are parked in the harbor', 'a little girl eating an ice cream cone',
  'what is written on the sign? stop', 'is there a person in this picture? yes',
  'where was this photo taken? in a restaurant', 'which animal is bigger, the elephant or the mouse?',
  'a bowl of soup next to a glass of orange juice', 'the computer screen shows a chart with numbers',
  'a man wearing glasses and a blue shirt', 'green trees line both sides of the road',
  'a train station with many travelers waiting', 'the airplane is landing on the runway',
].join('\n');

/** Learns `count - ALPHABET.length` merges greedily (most frequent pair, ties by string). */
function learnPieces(count: number): { pieces: string[]; merges: [string, string][] } {
  const pieces = [...ALPHABET];
  const merges: [string, string][] = [];
  // Words keep their leading '▁' as Gemma's pieces do, except the first word of a line (there
  // is no dummy prefix); merges never cross a word start.
  const words = new Map<string, number>();
  for (const line of CORPUS.split('\n')) {
    line.split(' ').forEach((w, i) => {
      const word = i === 0 ? w : `▁${w}`;
      if (w) words.set(word, (words.get(word) ?? 0) + 1);
    });
  }
  const split = [...words.entries()].map(([w, n]) => ({ syms: [...w], n }));
  const known = new Set(pieces);
  while (pieces.length < count) {
    const pairs = new Map<string, number>();
    for (const { syms, n } of split) {
      for (let i = 0; i + 1 < syms.length; i++) {
        const key = `${syms[i]}\u0000${syms[i + 1]}`;
        pairs.set(key, (pairs.get(key) ?? 0) + n);
      }
    }
    let best: string | undefined, bestN = 0;
    for (const [k, n] of pairs) {
      const merged = k.replace('\u0000', '');
      if (known.has(merged)) continue;
      if (n > bestN || (n === bestN && best !== undefined && k < best)) { best = k; bestN = n; }
    }
    if (best === undefined) break;
    const [a, b] = best.split('\u0000');
    const merged = a + b;
    merges.push([a, b]);
    pieces.push(merged);
    known.add(merged);
    for (const w of split) {
      const out: string[] = [];
      for (let i = 0; i < w.syms.length; i++) {
        if (i + 1 < w.syms.length && w.syms[i] === a && w.syms[i + 1] === b) { out.push(merged); i++; } else out.push(w.syms[i]);
      }
      w.syms = out;
    }
  }
  if (pieces.length !== count) throw new Error(`tiny tokenizer: corpus gives only ${pieces.length} pieces, want ${count}`);
  return { pieces, merges };
}

const hex2 = (b: number) => b.toString(16).toUpperCase().padStart(2, '0');

/** A Hugging Face tokenizer.json (as a plain object) with the layout described above. */
export function buildTinyTokenizerJson(): Record<string, unknown> {
  const { pieces, merges } = learnPieces(PIECE_COUNT);
  const tokens: string[] = [...SPECIALS];
  for (let b = 0; b < 256; b++) tokens.push(`<0x${hex2(b)}>`);
  tokens.push(...pieces);
  for (let i = 0; i < 1024; i++) tokens.push(`<loc${String(i).padStart(4, '0')}>`);
  for (let i = 0; i < 128; i++) tokens.push(`<seg${String(i).padStart(3, '0')}>`);
  tokens.push('<image>');
  if (tokens.length !== TINY_TOKENIZER.vocabSize) throw new Error('tiny tokenizer: layout mismatch');

  const vocab: Record<string, number> = {};
  tokens.forEach((t, i) => { vocab[t] = i; });
  const added = (id: number, special: boolean) => ({
    id, content: tokens[id], single_word: false, lstrip: false, rstrip: false, normalized: false, special,
  });
  const addedTokens = [
    ...SPECIALS.map((_, i) => added(i, true)),
    ...tokens.map((_, i) => i).filter((i) => i >= LOC_BASE && i < IMAGE_ID).map((i) => added(i, false)),
    added(IMAGE_ID, true),
  ];

  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: { type: 'Replace', pattern: { String: ' ' }, content: '▁' },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<bos>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [
        { SpecialToken: { id: '<bos>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '<bos>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } },
      ],
      special_tokens: { '<bos>': { id: '<bos>', ids: [TINY_TOKENIZER.bos], tokens: ['<bos>'] } },
    },
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: '<unk>',
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      vocab,
      merges: merges.map(([a, b]) => `${a} ${b}`),
    },
  };
}

/** A matching tokenizer_config.json. */
export function buildTinyTokenizerConfig(): Record<string, unknown> {
  return {
    tokenizer_class: 'GemmaTokenizer',
    add_bos_token: true,
    add_eos_token: false,
    bos_token: '<bos>',
    eos_token: '<eos>',
    pad_token: '<pad>',
    unk_token: '<unk>',
    clean_up_tokenization_spaces: false,
    model_max_length: 1_000_000_000,
    padding_side: 'right',
  };
}
