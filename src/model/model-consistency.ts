/**
 * The tokenizer and config.json must describe the same model: the id the config reserves for
 * image rows (`image_token_index`) must be the tokenizer's `<image>` token and not `<bos>`,
 * and every token id must have an embedding row. Otherwise the image is silently ignored (no
 * prompt id matches) or text ids index past the embedding table.
 *
 * ```ts
 * checkTokenizerMatchesConfig(tokenizer, checkpoint.config);   // throws PaliGemmaError naming both sides
 * ```
 */
import { PaliGemmaError } from '../interfaces/errors.js';
import type { Tokenizer } from '../interfaces/tokenizer.js';
import type { PaliGemmaConfig } from './config-types.js';

export function checkTokenizerMatchesConfig(tokenizer: Tokenizer, config: PaliGemmaConfig): void {
  const image = config.imageTokenIndex;
  const fail = (message: string): never => { throw new PaliGemmaError(message, 'model_mismatch'); };
  if (image === tokenizer.special.bos || image === config.bosTokenId) {
    fail(`config.json image_token_index ${image} is the <bos> id: the image rows would replace <bos> (expected the tokenizer's <image> id ${tokenizer.special.image})`);
  }
  if (tokenizer.special.image !== image) {
    fail(`config.json image_token_index ${image} is not the tokenizer's <image> id ${tokenizer.special.image}: `
      + 'the image would be ignored; the config and tokenizer.json come from different models (fix image_token_index)');
  }
  if (tokenizer.vocabSize > config.text.vocabSize) {
    fail(`the tokenizer has ${tokenizer.vocabSize} tokens but config.json text_config.vocab_size is ${config.text.vocabSize}: `
      + 'the config and tokenizer.json come from different models');
  }
}
