/** Task helpers: prompts, loc/seg parsing, box geometry, the VQ-VAE mask decoder, drawing. */
export * from './task-prompts.js';
export * from './loc-parser.js';
export * from './box-geometry.js';
export * from './task-tokens.js';
export * from './npz-reader.js';
export * from './vae-weights.js';
export * from './vqvae-decoder.js';
export * from './mask-paste.js';
export * from './draw-overlay.js';
export * from './forced-sampler.js';
export * from './paligemma-tasks.js';
