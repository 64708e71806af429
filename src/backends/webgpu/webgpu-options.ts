/** The webgpu backend's options, the `weights` rule, and the counts it reports. */
import type { BackendOptions } from '../../interfaces/contributions.js';
import { PaliGemmaError } from '../../interfaces/errors.js';

/** How float32 weights are stored; see WebGpuBackendOptions.weights. */
export type WebGpuWeights = 'auto' | 'f32' | 'f16';
const WEIGHTS: readonly WebGpuWeights[] = ['auto', 'f32', 'f16'];

export interface WebGpuBackendOptions extends BackendOptions {
  /** Most bytes of freed buffers kept for reuse (default 512 MiB). */
  poolBytes?: number;
  /** Submit after this many recorded dispatches even without a read (default 128). */
  flushEvery?: number;
  /** Extra Dawn instance options, e.g. ['enable-dawn-features=...']. */
  dawnOptions?: string[];
  /**
   * Storage of float32 weights. 'f32' keeps them exact. 'f16' narrows an uploaded f32 tensor
   * to IEEE half on its first use as matmul's transposed B or as an embedding table: lossy,
   * half the memory and bandwidth. 'auto' (default): 'f16' when the adapter has the
   * 'shader-f16' feature, else 'f32'. f16/bf16 uploads are kept as they are either way.
   */
  weights?: WebGpuWeights;
}

/** The `weights` option, checked: a PaliGemmaError names the allowed values. */
export function parseWeightsOption(value: unknown): WebGpuWeights {
  if (value === undefined) return 'auto';
  if (typeof value === 'string' && (WEIGHTS as readonly string[]).includes(value)) return value as WebGpuWeights;
  throw new PaliGemmaError(`webgpu backend: unknown weights '${String(value)}' (use ${WEIGHTS.join(', ')})`);
}

/** What `weights` means on an adapter with these features: 'auto' is 'f16' where it has 'shader-f16'. */
export function resolveWeights(option: WebGpuWeights, adapterFeatures: { has(feature: string): boolean }): 'f32' | 'f16' {
  if (option !== 'auto') return option;
  return adapterFeatures.has('shader-f16') ? 'f16' : 'f32';
}

/** Counts a test or a user can watch for leaks. */
export interface WebGpuStats {
  /** Storages held by live tensors (reshape views share one). */
  liveBuffers: number;
  liveBytes: number;
  /** Free buffers kept for reuse, and their bytes. */
  pooledBuffers: number;
  pooledBytes: number;
  /** Tensor buffers existing on the device (live + pooled + awaiting destruction). */
  deviceBuffers: number;
  /** Compute pipelines compiled so far. */
  pipelines: number;
  /** Command buffers submitted so far. */
  submits: number;
}
