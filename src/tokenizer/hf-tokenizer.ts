/**
 * Tokenizer backed by a Hugging Face `tokenizer.json` (and optionally `tokenizer_config.json`),
 * run by @lenml/tokenizers, plus the PaliGemma prompt layout on top of any Tokenizer.
 *
 * ```ts
 * const tok = await HfTokenizer.fromDir('models/paligemma-3b-mix-224');
 * ```
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tokenizers } from '@lenml/tokenizers';
import { PaliGemmaError } from '../interfaces/errors.js';
import type { SpecialTokenIds, TokenFamily, Tokenizer } from '../interfaces/tokenizer.js';
import { completeIds, tokenFamily } from './token-families.js';

/** The part of @lenml/tokenizers' PreTrainedTokenizer this class talks to. */
interface LenmlTokenizer {
  encode(text: string, opts: { add_special_tokens: boolean }): number[];
  decode(ids: number[], opts: { skip_special_tokens: boolean; clean_up_tokenization_spaces: boolean }): string;
  model: { vocab: (string | undefined)[]; tokens_to_ids: Map<string, number> };
}

export const IMAGE_TOKEN = '<image>';
const LOC_COUNT = 1024;
const SEG_COUNT = 128;

export const locToken = (i: number): string => `<loc${String(i).padStart(4, '0')}>`;
export const segToken = (i: number): string => `<seg${String(i).padStart(3, '0')}>`;

type Json = Record<string, unknown>;

async function readJson(path: string, name: string, required: boolean): Promise<Json | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (!required && code === 'ENOENT') return undefined;
    throw new PaliGemmaError(
      code === 'ENOENT' ? `${name} not found: ${path}` : `cannot read ${name} (${path}): ${(e as Error).message}`,
      code === 'ENOENT' ? 'not_found' : 'invalid_input',
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new PaliGemmaError(`${name} is not valid JSON (${path}): ${(e as Error).message}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new PaliGemmaError(`${name} must hold a JSON object (${path})`);
  }
  return parsed as Json;
}

/**
 * Newer tokenizer.json files describe Metaspace's prefix only by `prepend_scheme`; @lenml reads
 * the older `add_prefix_space` flag as well, so derive it when absent.
 */
function withPrefixFlag(pre: unknown): unknown {
  if (pre === null || typeof pre !== 'object') return pre;
  const p = pre as Json;
  if (p.type === 'Sequence' && Array.isArray(p.pretokenizers)) return { ...p, pretokenizers: p.pretokenizers.map(withPrefixFlag) };
  if (p.type === 'Metaspace' && p.add_prefix_space === undefined) {
    return { ...p, add_prefix_space: (p.prepend_scheme ?? 'always') !== 'never' };
  }
  return p;
}

export class HfTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly special: SpecialTokenIds;

  private constructor(private readonly inner: LenmlTokenizer, source: string, config: Json) {
    const ids = inner.model.tokens_to_ids;
    let maxId = -1;
    for (const id of ids.values()) if (id > maxId) maxId = id;
    this.vocabSize = maxId + 1;

    const need = (token: string, what: string): number => {
      const id = ids.get(token);
      if (id === undefined) throw new PaliGemmaError(`${source} has no ${token} token (${what}); is it a PaliGemma tokenizer?`);
      return id;
    };
    const bos = need('<bos>', 'beginning of sequence');
    const eos = need('<eos>', 'end of sequence');
    const image = need(IMAGE_TOKEN, 'image placeholder');
    const configPad = typeof config.pad_token === 'string' ? ids.get(config.pad_token) : undefined;
    const pad = ids.get('<pad>') ?? configPad ?? eos;
    const loc = tokenFamily(ids, locToken, LOC_COUNT, '<locNNNN>');
    const seg = tokenFamily(ids, segToken, SEG_COUNT, '<segNNN>');
    // A tokenizer with part of a family (or none) loads: only the tasks that need one refuse it.
    this.special = { bos, eos, pad, image, loc: completeIds(loc), seg: completeIds(seg), families: { loc, seg } };
    this.specialFamilies = { loc, seg };
  }

  /** Which `<locNNNN>` / `<segNNN>` tokens exist (a partial family loads). */
  readonly specialFamilies: { readonly loc: TokenFamily; readonly seg: TokenFamily };

  /** Id of `<locNNNN>` for i, undefined when this tokenizer lacks it. */
  locTokenId(i: number): number | undefined {
    return this.specialFamilies.loc.id(i);
  }

  /** Id of `<segNNN>` for i, undefined when this tokenizer lacks it. */
  segTokenId(i: number): number | undefined {
    return this.specialFamilies.seg.id(i);
  }

  /** Loads `tokenizer.json` (required) and `tokenizer_config.json` (optional) from a model folder. */
  static async fromDir(modelDir: string): Promise<HfTokenizer> {
    const jsonPath = join(modelDir, 'tokenizer.json');
    const json = (await readJson(jsonPath, 'tokenizer.json', true))!;
    const config = await readJson(join(modelDir, 'tokenizer_config.json'), 'tokenizer_config.json', false);
    return HfTokenizer.fromJson(json, config, jsonPath);
  }

  /**
   * Builds a tokenizer from parsed `tokenizer.json` contents. `source` names the file in errors.
   */
  static fromJson(json: object, config: object = {}, source = 'tokenizer.json'): HfTokenizer {
    const j = json as Json;
    const model = j.model as Json | undefined;
    if (!model || typeof model !== 'object' || typeof model.type !== 'string' || !model.vocab) {
      throw new PaliGemmaError(`${source} has no usable "model" section (type and vocab)`);
    }
    // Gemma's tokenizer is a byte-fallback BPE; another model type (WordPiece, Unigram, ...) is
    // another model family's tokenizer, which would encode prompts into the wrong ids.
    if (model.type !== 'BPE') {
      throw new PaliGemmaError(`${source}: model.type is ${JSON.stringify(model.type)}, but PaliGemma's (Gemma) tokenizer is "BPE"; is this another model's tokenizer.json?`, 'model_mismatch');
    }
    if (j.added_tokens !== undefined && !Array.isArray(j.added_tokens)) {
      throw new PaliGemmaError(`${source}: "added_tokens" must be a list`);
    }
    const fixed: Json = { ...j, added_tokens: j.added_tokens ?? [], pre_tokenizer: withPrefixFlag(j.pre_tokenizer) };
    if (model.type === 'BPE' && !Array.isArray(model.merges)) fixed.model = { ...model, merges: [] };
    const cfg = config as Json;
    // lenml picks a class by tokenizer_class; every class PaliGemma uses behaves like the base one
    // for encode/decode except LlamaTokenizer's legacy handling, so honour the mapping when known.
    const mapping = (tokenizers.AutoTokenizer as unknown as { TOKENIZER_CLASS_MAPPING: Record<string, unknown> }).TOKENIZER_CLASS_MAPPING;
    const className = typeof cfg.tokenizer_class === 'string' ? cfg.tokenizer_class.replace(/Fast$/, '') : '';
    const Cls = (mapping[className] ?? tokenizers.PreTrainedTokenizer) as new (j: object, c: object) => LenmlTokenizer;
    let inner: LenmlTokenizer;
    try {
      inner = new Cls(fixed, cfg);
    } catch (e) {
      throw new PaliGemmaError(`cannot build a tokenizer from ${source}: ${String((e as Error).message).split('\n')[0]}`);
    }
    return new HfTokenizer(inner, source, cfg);
  }

  encode(text: string): number[] {
    if (text.length === 0) return [];
    return this.inner.encode(text, { add_special_tokens: false });
  }

  decode(ids: readonly number[], opts: { skipSpecialTokens?: boolean } = {}): string {
    // Ids without a token (a model head wider than the vocabulary) are dropped, as the
    // Rust tokenizers do.
    const vocab = this.inner.model.vocab;
    const known = ids.filter((id) => Number.isInteger(id) && id >= 0 && vocab[id] !== undefined);
    if (known.length === 0) return '';
    return this.inner.decode(known, {
      skip_special_tokens: opts.skipSpecialTokens ?? false,
      clean_up_tokenization_spaces: false,
    });
  }

  idToToken(id: number): string | undefined {
    return Number.isInteger(id) && id >= 0 ? this.inner.model.vocab[id] : undefined;
  }
}

