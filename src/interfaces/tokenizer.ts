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
  /** `<locNNNN>` ids in order (1024 of them in PaliGemma), empty when absent. */
  loc: readonly number[];
  /** `<segNNN>` ids in order (128 in PaliGemma), empty when absent. */
  seg: readonly number[];
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
