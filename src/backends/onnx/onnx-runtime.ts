/**
 * Loads onnxruntime-node on demand (so the package's other backends work without it) and picks
 * the execution provider for a device name.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { PaliGemmaError } from '../../interfaces/errors.js';
import { PackageNotInstalledError, isPackageNotFound } from '../optional-package.js';

/** The part of onnxruntime-node the backend uses. */
export type OrtModule = typeof import('onnxruntime-node');

export type OnnxDevice = 'cpu' | 'cuda';

let loading: Promise<OrtModule> | undefined;

/** Imports onnxruntime-node once; a missing package becomes a PaliGemmaError naming the fix. */
export function loadOrt(): Promise<OrtModule> {
  loading ??= import('onnxruntime-node').then(
    (m) => ((m as { default?: OrtModule }).default?.InferenceSession ? (m as { default: OrtModule }).default : m),
    (e: unknown) => {
      loading = undefined;
      if (isPackageNotFound(e)) {
        throw new PackageNotInstalledError('the onnx backend needs the onnxruntime-node package: npm install onnxruntime-node');
      }
      throw new PaliGemmaError(`onnxruntime-node failed to load: ${(e as Error).message.split('\n')[0]}`, 'missing_dependency');
    },
  );
  return loading;
}

/** How to get the CUDA provider when it is missing (onnxruntime-node's own install script). */
export const CUDA_INSTALL_HINT =
  'install it with `ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js` ' +
  '(or reinstall onnxruntime-node with its install script allowed and ONNXRUNTIME_NODE_INSTALL=cuda12); needs CUDA 12 and cuDNN 9';

/**
 * Whether the CUDA provider can run: onnxruntime-node lists it, and it is either bundled or
 * its library was downloaded next to the binding by the install script.
 */
export function cudaAvailable(ort: OrtModule): boolean {
  const listed = ort.listSupportedBackends?.().find((b) => b.name === 'cuda');
  if (!listed) return false;
  if (listed.bundled) return true;
  try {
    const require = createRequire(import.meta.url);
    const pkgDir = dirname(require.resolve('onnxruntime-node/package.json'));
    const bin = join(pkgDir, 'bin', 'napi-v6', process.platform, process.arch);
    return existsSync(join(bin, 'libonnxruntime_providers_cuda.so')) ||
      existsSync(join(bin, 'onnxruntime_providers_cuda.dll'));
  } catch {
    return false;
  }
}

/** Execution providers for a device; throws a one-line PaliGemmaError when it cannot run. */
export function executionProviders(ort: OrtModule, device: OnnxDevice): string[] {
  if (device === 'cpu') return ['cpu'];
  if (!cudaAvailable(ort)) {
    throw new PaliGemmaError(`onnx backend: the CUDA execution provider is not installed; ${CUDA_INSTALL_HINT}`, 'missing_dependency');
  }
  return ['cuda', 'cpu'];
}
