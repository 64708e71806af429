/**
 * Test plugin: attention kernel `slow-plain`, the plain kernel after a blocking pause of
 * SLOW_ATTENTION_MS per call, so a served request is surely still decoding when a test signals
 * the server. Same numbers as `plain`.
 */
import { AttentionKernelContribution } from '../../src/interfaces/contributions.js';
import { PlainAttentionKernel } from '../../src/attention/plain-attention-kernel.js';
import { definePlugin } from '../../src/plugin/define-plugin.js';

export const SLOW_ATTENTION_MS = 15;

const pause = new Int32Array(new SharedArrayBuffer(4));

export default definePlugin('slow-attention-test', ({ bind }) => {
  bind(AttentionKernelContribution).toConstantValue({
    name: 'slow-plain',
    description: `plain attention after a ${SLOW_ATTENTION_MS} ms pause per call (tests)`,
    create() {
      const inner = new PlainAttentionKernel();
      return {
        name: 'slow-plain',
        attend(backend, q, k, v, opts) {
          Atomics.wait(pause, 0, 0, SLOW_ATTENTION_MS);     // a synchronous sleep: attend is synchronous
          return inner.attend(backend, q, k, v, opts);
        },
      };
    },
  });
});
