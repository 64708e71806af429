import { AttentionKernelContribution, BackendContribution } from '../../interfaces/contributions.js';
import { definePlugin } from '../../plugin/define-plugin.js';
import { ReferenceAttentionKernel } from './reference-attention-kernel.js';
import { ReferenceBackend } from './reference-backend.js';

export const referenceBackendPlugin = definePlugin('reference-backend', ({ bind }) => {
  bind(BackendContribution).toConstantValue({
    name: 'reference',
    description: 'pure TypeScript, float32; the oracle every other backend is compared with',
    create: () => new ReferenceBackend(),
    options: ['device'],
    defaultAttention: 'reference',
  });
  bind(AttentionKernelContribution).toConstantValue({
    name: 'reference',
    description: 'direct loops over reference tensors; every mask, GQA, soft-capping',
    create: () => new ReferenceAttentionKernel(),
  });
});
