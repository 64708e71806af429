import { defineConfig } from 'tsup';

// Optional engines are loaded lazily at run time and never bundled.
const external = ['onnxruntime-node', 'webgpu', 'sharp', /^@tensorflow\//];

export default defineConfig([
  {
    // The library: ESM + CJS + type declarations.
    entry: { index: 'src/index.ts' },
    format: ['esm', 'cjs'],
    dts: true,
    // import.meta.url in the CJS build (engines are located relative to the package).
    shims: true,
    sourcemap: true,
    clean: true,
    target: 'node20',
    external,
  },
  {
    // The command (ESM only: it awaits at top level).
    entry: { cli: 'src/cli/main.ts' },
    format: ['esm'],
    sourcemap: true,
    target: 'node20',
    external,
  },
]);
