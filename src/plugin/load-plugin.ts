import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { PaliGemmaError } from '../interfaces/errors.js';
import { isPlugin, type PaliGemmaPlugin } from './define-plugin.js';

/**
 * Imports a plugin from a file path (relative to `cwd`) or an installed package name. Its
 * default export must be a plugin (see definePlugin).
 */
export async function loadPluginModule(spec: string, cwd = process.cwd()): Promise<PaliGemmaPlugin> {
  const looksLikePath = spec.startsWith('.') || isAbsolute(spec) || /\.(m|c)?[jt]s$/.test(spec);
  let url: string;
  if (looksLikePath) {
    const file = resolve(cwd, spec);
    if (!existsSync(file)) throw new PaliGemmaError(`plugin ${spec}: file not found (${file})`);
    url = pathToFileURL(file).href;
  } else {
    try {
      url = pathToFileURL(createRequire(resolve(cwd, 'noop.js')).resolve(spec)).href;
    } catch {
      throw new PaliGemmaError(`plugin ${spec}: no such file, and no installed package of that name`);
    }
  }
  let mod: { default?: unknown };
  try {
    mod = await import(url);
  } catch (e) {
    throw new PaliGemmaError(`plugin ${spec}: failed to import: ${(e as Error).message.split('\n')[0]}`);
  }
  const plugin = mod.default;
  if (!isPlugin(plugin)) {
    throw new PaliGemmaError(`plugin ${spec}: its default export is not a plugin (expected definePlugin(name, ...))`);
  }
  return { ...plugin, source: spec };
}
