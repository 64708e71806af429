/**
 * The built-in plugins, loaded exactly as third-party ones are. This is the one place that
 * names concrete backends; nothing under src/pipeline imports a backend.
 */
import { referenceBackendPlugin } from './backends/reference/reference-backend-module.js';
import { corePartsPlugin } from './core-parts-plugin.js';
import type { PaliGemmaPlugin } from './plugin/define-plugin.js';

export const BUILTIN_PLUGINS: readonly PaliGemmaPlugin[] = [
  corePartsPlugin,
  referenceBackendPlugin,
];
