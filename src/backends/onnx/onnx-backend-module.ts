import { AttentionKernelContribution, BackendContribution, type BackendOptions } from '../../interfaces/contributions.js';
import { definePlugin } from '../../plugin/define-plugin.js';
import { AttendKernel } from '../../attention/plain-attention-kernel.js';
import { OnnxBackend } from './onnx-backend.js';

export { OnnxBackend, type OnnxBackendOptions, type OnnxBackendStats } from './onnx-backend.js';

export const onnxBackendPlugin = definePlugin('onnx-backend', ({ bind }) => {
  bind(BackendContribution).toConstantValue({
    name: 'onnx',
    description: 'onnxruntime-node (cpu, or cuda when its provider is installed); ops are traced into cached ONNX graphs',
    create: (opts: BackendOptions) => new OnnxBackend(opts),
    options: ['device', 'widenChunkBytes', 'threads', 'maxSessions', 'graphOptimizationLevel', 'sessionOptions', 'quantize', 'attentionBlockElements', 'halfGemvRows', 'embeddedWeightBytes'],
    defaultAttention: 'onnx',
  });
  bind(AttentionKernelContribution).toConstantValue({
    name: 'onnx',
    description: "alias of attend: the backend's fused attention (on onnx: one subgraph per call over the KV cache), else backend ops",
    create: () => new AttendKernel('onnx'),
  });
});
