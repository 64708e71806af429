export * from './tensor-backend.js';
export * from './attention-kernel.js';
export * from './kv-cache-store.js';
export * from './sampler.js';
export * from './tokenizer.js';
export * from './image-processor.js';
export * from './errors.js';
export * from './contributions.js';
