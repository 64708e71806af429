import { ContainerModule, type ContainerModuleLoadOptions } from 'inversify';

/** A plugin: a named inversify ContainerModule. A module's default export must be one. */
export interface PaliGemmaPlugin {
  readonly name: string;
  readonly module: ContainerModule;
  /** Set by the loader: the path or package the plugin came from ('built-in' for ours). */
  source?: string;
}

/**
 * Makes a plugin from a name and the body of its ContainerModule. The body binds any number of
 * contributions, each under its own name; the built-in parts are registered the same way
 * (src/builtin-plugins.ts). Names must be unique per kind across every loaded plugin.
 *
 * ```ts
 * export default definePlugin('my-parts', ({ bind }) => {
 *   bind(BackendContribution).toConstantValue({ name: 'mine', description: '…', create: (opts) => new MyBackend(opts) });
 *   bind(AttentionKernelContribution).toConstantValue({ name: 'mine-flash', description: '…', create: () => new MyKernel() });
 *   bind(KVCacheStoreContribution).toConstantValue({ name: 'paged', description: '…', create: () => new PagedStore() });
 *   bind(SamplerContribution).toConstantValue({ name: 'min-p', description: '…', create: (opts) => minP(opts) });
 *   bind(TokenizerContribution).toConstantValue({ name: 'sp', description: '…', load: (dir) => loadSp(dir) });
 *   bind(ImageProcessorContribution).toConstantValue({ name: 'fast', description: '…', load: (dir, size) => fast(size) });
 * });
 * ```
 *
 * A contribution that needs other parts (a backend that wraps another one by name) can be a
 * dynamic value: `bind(BackendContribution).toDynamicValue((ctx) => ({ …, create: () =>
 * ctx.getAll(BackendContribution).find((c) => c.name === 'reference')!.create({}) }))`.
 * The body must be synchronous.
 */
export function definePlugin(
  name: string,
  register: (options: ContainerModuleLoadOptions) => void,
): PaliGemmaPlugin {
  if (typeof name !== 'string' || name.trim() === '') throw new TypeError('definePlugin: the plugin needs a non-empty name');
  if (typeof register !== 'function') throw new TypeError(`definePlugin(${name}): the second argument must be a function ({ bind }) => …`);
  return { name, module: new ContainerModule(register) };
}

export function isPlugin(value: unknown): value is PaliGemmaPlugin {
  return (
    typeof value === 'object' && value !== null &&
    typeof (value as PaliGemmaPlugin).name === 'string' &&
    typeof (value as PaliGemmaPlugin).module?.load === 'function'
  );
}
