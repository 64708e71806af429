import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The version in package.json, found from here (src/cli in a checkout, dist/ in the package). */
export function packageVersion(): string {
  for (const rel of ['../../package.json', '../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(fileURLToPath(new URL(rel, import.meta.url)), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'paligemma-sdk' && pkg.version) return pkg.version;
    } catch { /* try the next location */ }
  }
  return 'unknown';
}
