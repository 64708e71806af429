import { WebGpuBackend, type WebGpuBackendOptions } from '../../src/backends/webgpu/webgpu-backend.js';
import { PaliGemmaError } from '../../src/interfaces/errors.js';

/**
 * Starts a WebGPU backend in a suite's `before` hook, or skips the suite, saying why, when no
 * adapter can be created (no GPU and no SwiftShader installed).
 */
export async function startGpuOrSkip(ctx: Mocha.Context, options: WebGpuBackendOptions = {}): Promise<WebGpuBackend> {
  const gpu = new WebGpuBackend(options);
  try {
    await gpu.init();
  } catch (e) {
    if (!(e instanceof PaliGemmaError)) throw e;
    console.log(`    skipping the webgpu tests: ${e.message}`);
    ctx.skip();
  }
  return gpu;
}
