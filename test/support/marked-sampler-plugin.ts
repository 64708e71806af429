/**
 * Test plugin: the sampler `marked` emits token `id` (--sampler-option id=N, never <eos>) for
 * ever and writes one `note: first token sampled` line to stderr at its first step, so a test
 * can send a signal to a command once generation is under way even when nothing streams.
 */
import { SamplerContribution } from '../../src/interfaces/contributions.js';
import { definePlugin } from '../../src/plugin/define-plugin.js';

export default definePlugin('marked-sampler', ({ bind }) => {
  bind(SamplerContribution).toConstantValue({
    name: 'marked',
    description: 'emits one token id for ever, announcing its first step on stderr; for tests',
    create(options) {
      const id = Number(options.id ?? 262);
      let first = true;
      return {
        name: 'marked',
        sample() {
          if (first) { first = false; process.stderr.write('note: first token sampled\n'); }
          return id;
        },
      };
    },
  });
});
