/**
 * Backend packages are optional peer dependencies, imported on first use. These tell "not
 * installed" (the fix is one `npm install`) apart from "installed but failed to load".
 */
import { PaliGemmaError } from '../interfaces/errors.js';

/** Whether `e`, thrown by `import()`, says a module could not be found (the one named `name`, if given). */
export function isPackageNotFound(e: unknown, name?: string): boolean {
  const code = (e as { code?: string } | undefined)?.code;
  if (code !== 'ERR_MODULE_NOT_FOUND' && code !== 'MODULE_NOT_FOUND') return false;
  return name === undefined || String((e as Error).message).includes(`'${name}'`);
}

/** A backend's package is not installed; the message names the npm install command. */
export class PackageNotInstalledError extends PaliGemmaError {
  constructor(message: string) {
    super(message, 'missing_dependency');
  }
}
