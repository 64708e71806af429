/**
 * Tokenizer: text ↔ ids, plus the special ids PaliGemma needs.
 *
 * ```ts
 * const ids = tokenizer.encode('caption en');            // no special tokens added
 * const text = tokenizer.decode(ids, { skipSpecialTokens: true });
 * ```
 */
import type { ServiceIdentifier } from 'inversify';
export const Tokenizer: ServiceIdentifier<Tokenizer> = Symbol('Tokenizer');

export interface SpecialTokenIds {
  bos: number;
  eos: number;
  pad: number;
  image: number;
  /** `<locNNNN>` ids in order (1024 of them in PaliGemma); empty unless all are present (see `families`). */
  loc: readonly number[];
  /** `<segNNN>` ids in order (128 in PaliGemma); empty unless all are present (see `families`). */
  seg: readonly number[];
  /** Which members of each numbered family exist, for tokenizers with part of one (or none). */
  families?: { readonly loc: TokenFamily; readonly seg: TokenFamily };
}

/** A numbered special-token family (`<loc0000>`…`<loc1023>`), possibly incomplete. */
export interface TokenFamily {
  /** How the family is written, e.g. '<locNNNN>'. */
  readonly pattern: string;
  /** Members a PaliGemma tokenizer has (1024 loc, 128 seg). */
  readonly expected: number;
  /** Members this tokenizer has. */
  readonly present: number;
  /** The id of member i (`<loc0042>` for i = 42), undefined when the tokenizer lacks it. */
  id(i: number): number | undefined;
  /** Indices of the missing members, ascending. */
  missing(): number[];
}

export interface Tokenizer {
  readonly vocabSize: number;
  readonly special: SpecialTokenIds;
  /** Encodes plain text; adds no special tokens. */
  encode(text: string): number[];
  decode(ids: readonly number[], opts?: { skipSpecialTokens?: boolean }): string;
  /** The token string of one id (e.g. '▁cat', '<loc0123>'). */
  idToToken(id: number): string | undefined;
}
