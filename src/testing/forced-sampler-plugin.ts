/**
 * Plugin adding the sampler `forced`, which emits the ids given as `--sampler-option ids=[…]`
 * (see src/tasks/forced-sampler.ts), so CLI tests and the README pictures can force an answer:
 *
 * ```sh
 * paligemma detect --plugin src/testing/forced-sampler-plugin.ts --sampler forced \
 *   --sampler-option 'ids=[760,860,960,1060,300,1]' --image in.png cat
 * ```
 */
import { SamplerContribution } from '../interfaces/contributions.js';
import { PaliGemmaError } from '../interfaces/errors.js';
import { definePlugin } from '../plugin/define-plugin.js';
import { forcedSequence } from '../tasks/forced-sampler.js';

export default definePlugin('forced-sampler', ({ bind }) => {
  bind(SamplerContribution).toConstantValue({
    name: 'forced',
    description: 'emits a fixed token sequence (--sampler-option ids=[...]); for tests',
    create(options) {
      const ids = options.ids;
      if (!Array.isArray(ids)) throw new PaliGemmaError('sampler forced needs --sampler-option ids=[id, ...]', 'invalid_argument');
      return forcedSequence(ids as number[]);
    },
  });
});
