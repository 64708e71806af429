import { AttentionKernelContribution, BackendContribution, type BackendOptions } from '../../interfaces/contributions.js';
import { definePlugin } from '../../plugin/define-plugin.js';
import { AttendKernel } from '../../attention/plain-attention-kernel.js';
import { TfjsBackend, type TfjsBackendOptions } from './tfjs-backend.js';

export { TfjsBackend, type TfjsBackendOptions, type TfjsBackendStats } from './tfjs-backend.js';
export { activeEngine, ENGINE_ORDER, type TfjsEngine, type TfjsEngineKind } from './tfjs-engine.js';

export const tfjsBackendPlugin = definePlugin('tfjs-backend', ({ bind }) => {
  bind(BackendContribution).toConstantValue({
    name: 'tfjs',
    description: 'TensorFlow.js: tfjs-node-gpu, tfjs-node, wasm (SIMD) or plain JS, best installed first; option engine forces one',
    create: (opts: BackendOptions) => new TfjsBackend(opts as TfjsBackendOptions),
    options: ['device', 'engine', 'batchedAttention', 'wasmHeapLimitBytes', 'attentionBlockElements'],
    defaultAttention: 'tfjs',
  });
  bind(AttentionKernelContribution).toConstantValue({
    name: 'tfjs',
    description: "alias of attend: the backend's fused attention (on tfjs: heads batched per kv head), else backend ops",
    create: () => new AttendKernel('tfjs'),
  });
});
