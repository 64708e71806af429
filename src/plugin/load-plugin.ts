import { existsSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { PaliGemmaError } from '../interfaces/errors.js';
import { isPlugin, type PaliGemmaPlugin } from './define-plugin.js';

/**
 * Imports a plugin from a file or folder path (relative to `cwd`) or an installed package name
 * (`my-plugin`, `@me/plugin`, `my-plugin/sub`, looked up from `cwd` the way `import` would from
 * there). Its default export must be a plugin (see definePlugin). Every failure is one
 * PaliGemmaError line that names `spec`.
 */
export async function loadPluginModule(spec: string, cwd = process.cwd()): Promise<PaliGemmaPlugin> {
  const file = resolvePluginSpec(spec, cwd);
  let mod: { default?: unknown };
  try {
    mod = await import(pathToFileURL(file).href);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const hint = err.code === 'ERR_UNKNOWN_FILE_EXTENSION' ? ' (compile it to .js first)' : '';
    throw new PaliGemmaError(`plugin ${spec}: failed to import: ${String(err?.message ?? e).split('\n')[0]}${hint}`);
  }
  // A CommonJS build of `export default` arrives as { default: plugin } under import().
  const exported = mod.default;
  const plugin = isPlugin(exported) ? exported : (exported as { default?: unknown } | undefined)?.default;
  if (!isPlugin(plugin)) {
    throw new PaliGemmaError(`plugin ${spec}: its default export is not a plugin (got ${describeValue(exported)}; `
      + 'expected export default definePlugin(name, ...))');
  }
  return { ...plugin, source: spec };
}

/** The file `spec` names: a path (file or folder), else a package, else a path without './'. */
export function resolvePluginSpec(spec: string, cwd = process.cwd()): string {
  if (spec.startsWith('file:')) return entryOfPath(spec, fileURLToPath(spec));
  const looksLikePath = spec.startsWith('.') || isAbsolute(spec) || /\.(m|c)?[jt]s$/.test(spec);
  const path = resolve(cwd, spec);
  if (looksLikePath) return entryOfPath(spec, path);
  const fromPackage = resolvePackage(spec, cwd);
  if (fromPackage) return fromPackage;
  if (existsSync(path)) return entryOfPath(spec, path);
  throw new PaliGemmaError(`plugin ${spec}: no such file, and no installed package of that name (looked from ${cwd})`);
}

function entryOfPath(spec: string, path: string): string {
  const stat = statSync(path, { throwIfNoEntry: false });
  if (!stat) throw new PaliGemmaError(`plugin ${spec}: file not found (${path})`);
  return stat.isDirectory() ? packageEntry(spec, path, '.') : path;
}

/** Finds `name` in the node_modules folders above `cwd`, then its entry for `subpath`. */
function resolvePackage(spec: string, cwd: string): string | undefined {
  const m = /^((?:@[^/]+\/)?[^/@][^/]*)(\/.+)?$/.exec(spec);
  if (!m) return undefined;
  const [, name, rest] = m;
  const require = createRequire(join(cwd, 'noop.js'));
  for (const dir of require.resolve.paths(name) ?? []) {
    const pkgDir = join(dir, name);
    if (existsSync(join(pkgDir, 'package.json'))) return packageEntry(spec, pkgDir, rest ? `.${rest}` : '.');
  }
  return undefined;
}

/** A package folder's file for `subpath`, with the conditions `import` uses under Node. */
function packageEntry(spec: string, dir: string, subpath: string): string {
  const manifest = join(dir, 'package.json');
  let pkg: { exports?: unknown; main?: string } = {};
  if (existsSync(manifest)) {
    try {
      pkg = JSON.parse(readFileSync(manifest, 'utf8'));
    } catch (e) {
      throw new PaliGemmaError(`plugin ${spec}: ${manifest} is not valid JSON: ${(e as Error).message}`);
    }
  }
  if (pkg.exports !== undefined && pkg.exports !== null) {
    const target = exportTarget(pkg.exports, subpath);
    if (target === undefined) {
      throw new PaliGemmaError(`plugin ${spec}: ${manifest} exports nothing at '${subpath}' for import`);
    }
    return entryOfPath(spec, resolve(dir, target));
  }
  const candidates = subpath === '.'
    ? [pkg.main, pkg.main && `${pkg.main}.js`, pkg.main && join(pkg.main, 'index.js'), 'index.js', 'index.mjs']
    : [subpath, `${subpath}.js`, join(subpath, 'index.js')];
  for (const c of candidates) {
    if (c && statSync(resolve(dir, c), { throwIfNoEntry: false })?.isFile()) return resolve(dir, c);
  }
  throw new PaliGemmaError(`plugin ${spec}: ${dir} has no entry file (package.json "exports" or "main", or index.js)`);
}

const IMPORT_CONDITIONS = new Set(['node', 'import', 'module-sync', 'default']);

/** The target of `subpath` in a package.json "exports" field (exact keys and one-'*' patterns). */
function exportTarget(exports: unknown, subpath: string): string | undefined {
  const isSubpathMap = typeof exports === 'object' && !Array.isArray(exports)
    && Object.keys(exports as object).some((k) => k.startsWith('.'));
  const map = (isSubpathMap ? exports : { '.': exports }) as Record<string, unknown>;
  if (subpath in map) return conditionalTarget(map[subpath], '');
  const patterns = Object.keys(map).filter((k) => k.includes('*'))
    .map((k) => ({ k, pre: k.slice(0, k.indexOf('*')), post: k.slice(k.indexOf('*') + 1) }))
    .filter(({ pre, post }) => subpath.startsWith(pre) && subpath.endsWith(post)
      && subpath.length >= pre.length + post.length)
    .sort((a, b) => b.pre.length - a.pre.length);
  const best = patterns[0];
  return best && conditionalTarget(map[best.k], subpath.slice(best.pre.length, subpath.length - best.post.length));
}

function conditionalTarget(target: unknown, star: string): string | undefined {
  if (typeof target === 'string') return target.replaceAll('*', star);
  if (Array.isArray(target)) {
    for (const t of target) {
      const found = conditionalTarget(t, star);
      if (found !== undefined) return found;
    }
    return undefined;
  }
  if (typeof target === 'object' && target !== null) {
    for (const [condition, value] of Object.entries(target)) {
      if (!IMPORT_CONDITIONS.has(condition)) continue;
      const found = conditionalTarget(value, star);
      if (found !== undefined) return found;
    }
  }
  return undefined;
}

function describeValue(value: unknown): string {
  if (value === undefined) return 'no default export';
  if (value === null) return 'null';
  if (typeof value === 'function') return `a function${value.name ? ` ${value.name}` : ''}`;
  if (typeof value === 'object') {
    const keys = Object.keys(value).slice(0, 4);
    return keys.length ? `an object with ${keys.join(', ')}` : 'an empty object';
  }
  return `a ${typeof value}`;
}
