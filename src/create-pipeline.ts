/**
 * Composition root: loads the built-in and user plugins into one registry, picks each part by
 * name (or takes the instance you pass), loads the checkpoint, binds everything in an inversify
 * container and resolves the pipeline from it.
 *
 * ```ts
 * const pipe = await createPipeline({ model: './paligemma-3b-mix-224', backend: 'onnx' });
 * const { text } = await pipe.generate('cat.jpg', 'caption en');
 * ```
 */
import 'reflect-metadata';
import type { Container } from 'inversify';
import { BUILTIN_PLUGINS } from './builtin-plugins.js';
import type { DownloadPlan, DownloadProgress } from './hub/download-snapshot.js';
import { resolveModel } from './hub/resolve-model.js';
import { AttentionKernel } from './interfaces/attention-kernel.js';
import type { BackendOptions, SamplerOptions } from './interfaces/contributions.js';
import { PaliGemmaError } from './interfaces/errors.js';
import { ImageProcessor } from './interfaces/image-processor.js';
import { KVCacheStore } from './interfaces/kv-cache-store.js';
import { Sampler } from './interfaces/sampler.js';
import { TensorBackend } from './interfaces/tensor-backend.js';
import { Tokenizer } from './interfaces/tokenizer.js';
import { loadCheckpoint, type LoadedCheckpoint, type LoadProgress } from './checkpoint/load-checkpoint.js';
import { ModelCheckpointToken, PaliGemmaPipeline } from './paligemma-pipeline.js';
import type { Gemma2Options } from './model/gemma2-options.js';
import type { PaliGemmaPlugin } from './plugin/define-plugin.js';
import { loadPluginModule } from './plugin/load-plugin.js';
import { PartRegistry } from './plugin/part-registry.js';
import { parseModelDtype, planDtype, type ModelDtype } from './checkpoint/model-dtype.js';
import { ensureDemoCheckpoint } from './tiny-models/demo-checkpoint.js';
import { checkBackendOptionKeys, checkCreateOptions, guarded, guardedAsync } from './generation/api-arguments.js';

export interface CreatePipelineOptions {
  /**
   * Hugging Face PaliGemma folder, or a hub id `ORG/NAME[@REV]` (found in the shared hub cache,
   * else downloaded into it). Default: the built-in tiny demo checkpoint (random weights).
   */
  model?: string;
  /** Branch, tag or commit of a hub id (default: main). */
  revision?: string;
  /** Called as a hub download progresses (and once with the plan, before it starts). */
  onDownloadProgress?: (p: DownloadProgress) => void;
  onDownloadPlan?: (plan: DownloadPlan) => void;
  /** Backend name (default 'reference') or your own instance. */
  backend?: string | TensorBackend;
  backendOptions?: BackendOptions;
  /**
   * How weights are held (default 'auto', as the checkpoint stores them): 'fp32', 'fp16', 'bf16'
   * (rounded at load), 'q8' / 'q4' (weight-only quantization where the backend has it). See model-dtype.ts.
   */
  dtype?: ModelDtype;
  /** Attention kernel name or instance (default: the backend's own, else 'plain'). */
  attention?: string | AttentionKernel;
  /** KV cache store name or instance (default: 'contiguous'). */
  kvCache?: string | KVCacheStore;
  /** Sampler name ('greedy', 'temperature', 'top-k', 'top-p', or a plugin's) or instance. */
  sampler?: string | Sampler;
  samplerOptions?: SamplerOptions;
  /** Tokenizer name ('hf', the model folder's tokenizer.json, the default; or a plugin's) or instance. */
  tokenizer?: string | Tokenizer;
  /** Image processor name ('siglip', the default; or a plugin's) or instance. */
  imageProcessor?: string | ImageProcessor;
  /** Plugin objects, file paths or package names, loaded after the built-in ones. */
  plugins?: ReadonlyArray<PaliGemmaPlugin | string>;
  /** PaliGemma 2 only: final logit soft-cap and sliding window conventions (see Gemma2Options). */
  gemma2?: Gemma2Options;
  /** Called as checkpoint bytes load. */
  onProgress?: (p: LoadProgress) => void;
  /** Last word on the container: rebind any part before the pipeline is resolved. */
  configure?: (container: Container) => void;
}

/** Every CreatePipelineOptions key, once: the compiler fails here when the interface gains one. */
const CREATE_PIPELINE_OPTIONS = Object.keys({
  model: true, revision: true, onDownloadProgress: true, onDownloadPlan: true, backend: true, backendOptions: true,
  dtype: true, attention: true, kvCache: true, sampler: true, samplerOptions: true, tokenizer: true,
  imageProcessor: true, plugins: true, gemma2: true, onProgress: true, configure: true,
} satisfies Record<keyof CreatePipelineOptions, true>);

/** A registry holding the built-in plugins and the given ones. */
export async function createRegistry(plugins: ReadonlyArray<PaliGemmaPlugin | string> = []): Promise<PartRegistry> {
  const registry = new PartRegistry();
  for (const p of BUILTIN_PLUGINS) registry.load(p);
  for (const p of plugins) registry.load(typeof p === 'string' ? await loadPluginModule(p) : p);
  return registry;
}

/** Creates and starts the backend named `name` from the registry. */
export async function startBackend(registry: PartRegistry, name: string, options: BackendOptions = {}): Promise<TensorBackend> {
  const contribution = registry.get('backend', name);
  const where = registry.list().find((p) => p.kind === 'backend' && p.name === name);
  checkBackendOptionKeys(name, contribution.options, options);
  try {
    const backend = await contribution.create(options);
    await backend.init?.();
    return backend;
  } catch (e) {
    if (e instanceof PaliGemmaError) throw e;
    throw new PaliGemmaError(`backend ${name} (plugin ${where?.plugin}) failed to start: ${(e as Error).message.split('\n')[0]}`);
  }
}

export async function createPipeline(options: CreatePipelineOptions = {}): Promise<PaliGemmaPipeline> {
  checkCreateOptions(options, CREATE_PIPELINE_OPTIONS);
  const registry = await createRegistry(options.plugins);
  const model = options.model === undefined ? undefined
    : await resolveModel(options.model, { revision: options.revision, onProgress: options.onDownloadProgress, onPlan: options.onDownloadPlan });
  // The parts loaded from the model folder are looked up before anything starts, so an unknown
  // name fails at once (listing the available ones); they load once the backend is up.
  const tokenizerPart = typeof options.tokenizer === 'object' ? undefined : registry.get('tokenizer', options.tokenizer ?? 'hf');
  const imageProcessorPart = typeof options.imageProcessor === 'object'
    ? undefined
    : registry.get('imageProcessor', options.imageProcessor ?? 'siglip');
  const dir = model ?? await ensureDemoCheckpoint();

  const backendName = typeof options.backend === 'string' ? options.backend : options.backend?.name ?? 'reference';
  const dtype = parseModelDtype(options.dtype ?? 'auto');
  const plan = planDtype(dtype, backendName, options.backendOptions);
  if (typeof options.backend === 'object' && Object.keys(plan.backendOptions).length > 0) {
    throw new PaliGemmaError(`dtype ${dtype} configures the backend as it starts; pass the backend by name, or start your instance with those options`, 'invalid_option');
  }
  const backend = typeof options.backend === 'object'
    ? options.backend
    : await startBackend(registry, backendName, { ...options.backendOptions, ...plan.backendOptions });
  // Whatever fails from here on releases what this call created.
  let checkpoint: LoadedCheckpoint | undefined;
  try {
    const defaults = registry.names('backend').includes(backendName) ? registry.get('backend', backendName) : undefined;

    const attention = typeof options.attention === 'object'
      ? options.attention
      : guarded('attention kernel create()', () => registry.get('attention', options.attention as string | undefined ?? defaults?.defaultAttention ?? 'plain').create());
    const kvCache = typeof options.kvCache === 'object'
      ? options.kvCache
      : guarded('KV cache store create()', () => registry.get('kvCache', options.kvCache as string | undefined ?? defaults?.defaultKvCache ?? 'contiguous').create());
    const sampler = typeof options.sampler === 'object'
      ? options.sampler
      : guarded('sampler create()', () => registry.get('sampler', options.sampler as string | undefined ?? 'greedy').create(options.samplerOptions ?? {}));

    const tokenizer = typeof options.tokenizer === 'object'
      ? options.tokenizer
      : await guardedAsync(`tokenizer ${tokenizerPart!.name} load()`, () => tokenizerPart!.load(dir));
    checkpoint = await loadCheckpoint(dir, backend, { onProgress: options.onProgress, weights: plan.weights });
    const imageProcessor = typeof options.imageProcessor === 'object'
      ? options.imageProcessor
      : await guardedAsync(`image processor ${imageProcessorPart!.name} load()`, () => imageProcessorPart!.load(dir, checkpoint!.config.vision.imageSize));

    const c = registry.container;
    c.bind(TensorBackend).toConstantValue(backend);
    c.bind(AttentionKernel).toConstantValue(attention);
    c.bind(KVCacheStore).toConstantValue(kvCache);
    c.bind(Sampler).toConstantValue(sampler);
    c.bind(Tokenizer).toConstantValue(tokenizer);
    c.bind(ImageProcessor).toConstantValue(imageProcessor);
    c.bind(ModelCheckpointToken).toConstantValue(options.gemma2 ? Object.assign(checkpoint, { gemma2: options.gemma2 }) : checkpoint);
    c.bind(PaliGemmaPipeline).toSelf().inSingletonScope();
    guarded('the configure(container) option', () => options.configure?.(c));
    return guarded('resolving the pipeline', () => Object.assign(c.get(PaliGemmaPipeline), { modelDir: dir }));
  } catch (e) {
    checkpoint?.dispose();
    if (typeof options.backend !== 'object') await backend.close?.();
    throw e;
  }
}
