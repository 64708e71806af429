import type { Tokenizer } from '../interfaces/tokenizer.js';

/**
 * PaliGemma's prompt layout: [<image>]·N + <bos> + prompt + "\n". The "\n" separates the
 * bidirectional prefix from what the model generates.
 */
export function promptIds(tokenizer: Tokenizer, prompt: string, numImageTokens: number): number[] {
  const { image, bos } = tokenizer.special;
  return [...new Array<number>(numImageTokens).fill(image), bos, ...tokenizer.encode(`${prompt}\n`)];
}

/** A scored suffix gets <eos> appended, as PaliGemmaProcessor does for training labels. */
export function suffixIds(tokenizer: Tokenizer, suffix: string): number[] {
  return [...tokenizer.encode(suffix), tokenizer.special.eos];
}
