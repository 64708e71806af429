import { defineConfig } from 'tsup';

export default defineConfig({
  entry: { index: 'src/index.ts', cli: 'src/cli/main.ts' },
  format: ['esm', 'cjs'],
  dts: { entry: { index: 'src/index.ts' } },
  sourcemap: true,
  clean: true,
  target: 'node20',
  // Optional engines are loaded lazily at run time and never bundled.
  external: ['onnxruntime-node', 'webgpu', 'sharp', /^@tensorflow\//],
});
