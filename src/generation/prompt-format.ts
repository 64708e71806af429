import type { Tokenizer } from '../interfaces/tokenizer.js';
import { checkText, invalidArgument } from './api-arguments.js';

const IMAGE_TOKEN = '<image>';

/**
 * PaliGemma's prompt: `[<image>]·N + <bos> + prompt + "\n"`, tokenized the way
 * PaliGemmaProcessor does it: the string `<bos>` + prompt + `\n` in one go (so the prompt is a
 * section that follows a special token, not the start of the text, and the `\n` is tokenized
 * together with the prompt's last characters). `<image>` strings inside the prompt are removed,
 * as the processor does. The "\n" separates the bidirectional prefix from what is generated.
 */
export function promptIds(tokenizer: Tokenizer, prompt: string, numImageTokens: number): number[] {
  checkText('prompt', prompt);
  if (!Number.isInteger(numImageTokens) || numImageTokens < 0) throw invalidArgument('numImageTokens', 'an integer ≥ 0', numImageTokens);
  const { image, bos } = tokenizer.special;
  const text = prompt.split(IMAGE_TOKEN).join('');
  const images = new Array<number>(numImageTokens).fill(image);
  const bosText = tokenizer.idToToken(bos);
  if (bosText !== undefined) {
    const ids = tokenizer.encode(`${bosText}${text}\n`);
    if (ids[0] === bos) return [...images, ...ids];
  }
  // A tokenizer that does not recognise its own <bos> string inside text.
  return [...images, bos, ...tokenizer.encode(`${text}\n`)];
}

/** A scored suffix gets <eos> appended, as PaliGemmaProcessor does for training labels. */
export function suffixIds(tokenizer: Tokenizer, suffix: string): number[] {
  checkText('suffix', suffix);
  return [...tokenizer.encode(suffix), tokenizer.special.eos];
}
