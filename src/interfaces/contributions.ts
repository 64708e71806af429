/**
 * Contribution points. A plugin binds any number of these (multi-bindings) in its
 * ContainerModule; the PartRegistry collects them by name. Built-in parts use the same points.
 *
 * ```ts
 * export default definePlugin('my-backend', ({ bind }) => {
 *   bind(BackendContribution).toConstantValue({
 *     name: 'mine', description: 'my backend', create: () => new MyBackend(),
 *   });
 * });
 * ```
 */
import type { ServiceIdentifier } from 'inversify';
import type { AttentionKernel } from './attention-kernel.js';
import type { ImageProcessor } from './image-processor.js';
import type { KVCacheStore } from './kv-cache-store.js';
import type { Sampler } from './sampler.js';
import type { TensorBackend } from './tensor-backend.js';
import type { Tokenizer } from './tokenizer.js';

/** Options every backend factory receives; backends ignore what they do not use. */
export interface BackendOptions {
  /** 'cpu' | 'cuda' | 'gpu' ...; each backend documents what it accepts. */
  device?: string;
  /** Backend-specific settings (e.g. { engine: 'wasm' } for tfjs). */
  [key: string]: unknown;
}

// The tokens live in the global symbol registry (Symbol.for), so a plugin that imports its own
// copy of the SDK (the built package, while the CLI runs another build or the sources) binds the
// very same tokens the registry collects.
export const BackendContribution: ServiceIdentifier<BackendContribution> = Symbol.for('paligemma-sdk.BackendContribution');
export interface BackendContribution {
  readonly name: string;
  readonly description: string;
  create(options: BackendOptions): TensorBackend | Promise<TensorBackend>;
  /**
   * The option keys this backend reads. When given, any other key is refused by name before
   * the backend is created, so that a typo cannot pass unseen; omitted, options are not checked.
   */
  readonly options?: readonly string[];
  /** Name of the attention kernel to use by default on this backend ('plain' if omitted). */
  readonly defaultAttention?: string;
  /** Name of the KV cache store to use by default on this backend ('contiguous' if omitted). */
  readonly defaultKvCache?: string;
}

export const AttentionKernelContribution: ServiceIdentifier<AttentionKernelContribution> = Symbol.for('paligemma-sdk.AttentionKernelContribution');
export interface AttentionKernelContribution {
  readonly name: string;
  readonly description: string;
  create(): AttentionKernel;
}

export const KVCacheStoreContribution: ServiceIdentifier<KVCacheStoreContribution> = Symbol.for('paligemma-sdk.KVCacheStoreContribution');
export interface KVCacheStoreContribution {
  readonly name: string;
  readonly description: string;
  create(): KVCacheStore;
}

/** Options a sampler factory receives (from the CLI flags or createPipeline). */
export interface SamplerOptions {
  temperature?: number;
  topK?: number;
  topP?: number;
  [key: string]: unknown;
}

export const SamplerContribution: ServiceIdentifier<SamplerContribution> = Symbol.for('paligemma-sdk.SamplerContribution');
export interface SamplerContribution {
  readonly name: string;
  readonly description: string;
  create(options: SamplerOptions): Sampler;
}

export const TokenizerContribution: ServiceIdentifier<TokenizerContribution> = Symbol.for('paligemma-sdk.TokenizerContribution');
export interface TokenizerContribution {
  readonly name: string;
  readonly description: string;
  /** Loads the tokenizer of a model folder. */
  load(modelDir: string): Promise<Tokenizer>;
}

export const ImageProcessorContribution: ServiceIdentifier<ImageProcessorContribution> = Symbol.for('paligemma-sdk.ImageProcessorContribution');
export interface ImageProcessorContribution {
  readonly name: string;
  readonly description: string;
  /** Loads the processor of a model folder; imageSize is the vision tower's input size. */
  load(modelDir: string, imageSize: number): Promise<ImageProcessor>;
}

/** The kinds of part a plugin can contribute, by contribution token. */
export const CONTRIBUTION_KINDS = {
  backend: BackendContribution,
  attention: AttentionKernelContribution,
  kvCache: KVCacheStoreContribution,
  sampler: SamplerContribution,
  tokenizer: TokenizerContribution,
  imageProcessor: ImageProcessorContribution,
} as const;
export type ContributionKind = keyof typeof CONTRIBUTION_KINDS;
