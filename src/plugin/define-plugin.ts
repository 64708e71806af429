import { ContainerModule, type ContainerModuleLoadOptions } from 'inversify';

/** A plugin: a named inversify ContainerModule. A module's default export must be one. */
export interface PaliGemmaPlugin {
  readonly name: string;
  readonly module: ContainerModule;
  /** Set by the loader: the path or package the plugin came from ('built-in' for ours). */
  source?: string;
}

/** Makes a plugin from a name and the body of its ContainerModule. */
export function definePlugin(
  name: string,
  register: (options: ContainerModuleLoadOptions) => void,
): PaliGemmaPlugin {
  return { name, module: new ContainerModule(register) };
}

export function isPlugin(value: unknown): value is PaliGemmaPlugin {
  return (
    typeof value === 'object' && value !== null &&
    typeof (value as PaliGemmaPlugin).name === 'string' &&
    typeof (value as PaliGemmaPlugin).module?.load === 'function'
  );
}
