/**
 * The built-in plugins, loaded exactly as third-party ones are. This is the one place that
 * names concrete backends; nothing under src/model imports a backend. Each backend imports
 * its engine lazily in init(), so listing it here costs nothing when the engine is absent.
 */
import { onnxBackendPlugin } from './backends/onnx/onnx-backend-module.js';
import { referenceBackendPlugin } from './backends/reference/reference-backend-module.js';
import { tfjsBackendPlugin } from './backends/tfjs/tfjs-backend-module.js';
import { webgpuBackendPlugin } from './backends/webgpu/webgpu-backend-module.js';
import { corePartsPlugin } from './core-parts-plugin.js';
import type { PaliGemmaPlugin } from './plugin/define-plugin.js';

export const BUILTIN_PLUGINS: readonly PaliGemmaPlugin[] = [
  corePartsPlugin,
  referenceBackendPlugin,
  onnxBackendPlugin,
  tfjsBackendPlugin,
  webgpuBackendPlugin,
];
