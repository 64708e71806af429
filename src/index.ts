/** paligemma-sdk: run PaliGemma from TypeScript on swappable backends. */
import 'reflect-metadata';

export * from './interfaces/index.js';
export { createPipeline, createRegistry, startBackend, type CreatePipelineOptions } from './create-pipeline.js';
export { BUILTIN_PLUGINS } from './builtin-plugins.js';
export { definePlugin, isPlugin, type PaliGemmaPlugin } from './plugin/define-plugin.js';
export { loadPluginModule } from './plugin/load-plugin.js';
export { PartRegistry, type RegisteredPart } from './plugin/part-registry.js';
export { PaliGemmaPipeline, ModelCheckpointToken } from './pipeline/paligemma-pipeline.js';
export { PaliGemmaModel, ModelSession, type ModelParts, type ModelCheckpoint } from './pipeline/paligemma-model.js';
export type * from './pipeline/generation-types.js';
export type * from './pipeline/config-types.js';
export { promptIds, suffixIds } from './pipeline/prompt-format.js';
export { loadCheckpoint } from './pipeline/checkpoint/load-checkpoint.js';
export { parseConfig } from './pipeline/checkpoint/config.js';
export { HfTokenizer } from './pipeline/hf-tokenizer.js';
export { SiglipImageProcessor } from './pipeline/siglip-image-processor.js';
export { ReferenceBackend } from './backends/reference/reference-backend.js';
export { ReferenceAttentionKernel } from './backends/reference/reference-attention-kernel.js';
export { PlainAttentionKernel } from './kernels/plain-attention-kernel.js';
export { BackendAttentionKernel, type FusedAttentionBackend } from './kernels/backend-attention-kernel.js';
export { keyVisible, additiveMask, kvHeadFor } from './kernels/attention-mask.js';
export { ContiguousKvCache, ContiguousKvCacheStore } from './kv-cache/contiguous-kv-cache.js';
export * from './backends/op-shapes.js';
export * from './samplers/index.js';
export { ensureDemoCheckpoint } from './testing/demo-checkpoint.js';
export * from './conformance/index.js';
export * from './batch/index.js';
