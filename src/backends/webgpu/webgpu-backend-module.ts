import { AttentionKernelContribution, BackendContribution } from '../../interfaces/contributions.js';
import { definePlugin } from '../../plugin/define-plugin.js';
import { AttendKernel } from '../../attention/plain-attention-kernel.js';
import { WebGpuBackend, type WebGpuBackendOptions } from './webgpu-backend.js';

export const webgpuBackendPlugin = definePlugin('webgpu-backend', ({ bind }) => {
  bind(BackendContribution).toConstantValue({
    name: 'webgpu',
    description: 'WGSL compute kernels through Dawn (the webgpu package); a GPU, or SwiftShader on the CPU',
    create: (opts) => new WebGpuBackend(opts as WebGpuBackendOptions),
    options: ['device', 'poolBytes', 'flushEvery', 'dawnOptions', 'weights'],
    defaultAttention: 'webgpu',
  });
  bind(AttentionKernelContribution).toConstantValue({
    name: 'webgpu',
    description: "alias of attend: the backend's fused attention (on webgpu: one WGSL kernel, online softmax), else backend ops",
    create: () => new AttendKernel('webgpu'),
  });
});
