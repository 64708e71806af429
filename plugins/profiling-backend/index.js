// @ts-check
/**
 * Plugin `profiling-backend`: a backend named `profiling` that runs another registered backend
 * (default `reference`) and prints a per-op table — count, total ms, mean µs, input shapes — when
 * the backend is closed, or at process exit if it never is.
 *
 * ```sh
 * paligemma generate --backend profiling --plugin ./plugins/profiling-backend/index.js \
 *   --image cat.jpg --prompt "caption en"
 * paligemma generate --backend profiling --backend-option inner=onnx --backend-option device=cuda \
 *   --plugin ./plugins/profiling-backend/index.js --image cat.jpg --prompt "caption en"
 * ```
 *
 * Every backend option but `inner` goes on to the inner backend. Without `inner`, the
 * PALIGEMMA_PROFILE_INNER environment variable still names it (kept for older scripts).
 *
 * ```js
 * const pipe = await createPipeline({
 *   backend: 'profiling', backendOptions: { inner: 'onnx', device: 'cuda' },
 *   plugins: ['./plugins/profiling-backend/index.js'],
 * });
 * ```
 *
 * The default attention kernel is `plain`, built from backend ops, so attention shows up op by op
 * in the table; pass `attention: 'attend'` to time the inner backend's fused `attention` as a
 * whole instead (the wrapper forwards every method, fused ones included).
 */
import { BackendContribution, PaliGemmaError, definePlugin } from 'paligemma-sdk';
import { ProfilingBackend } from './profiling-backend.js';

export { ProfilingBackend, formatProfile } from './profiling-backend.js';

export default definePlugin('profiling-backend', ({ bind }) => {
  // A dynamic value: its context reaches the other backends when create() runs, so the inner
  // backend may come from a plugin loaded after this one.
  bind(BackendContribution).toDynamicValue((ctx) => ({
    name: 'profiling',
    description: 'runs another backend (options.inner or PALIGEMMA_PROFILE_INNER, default reference) '
      + 'and prints time and shapes per op at close',
    defaultAttention: 'plain',
    async create(options) {
      // The backend option first (--backend-option inner=NAME), then the older environment variable.
      const { inner: given, ...innerOptions } = options;
      const inner = given ?? (process.env.PALIGEMMA_PROFILE_INNER || 'reference');
      const backends = ctx.getAll(BackendContribution).filter((c) => c.name !== 'profiling');
      const contribution = backends.find((c) => c.name === inner);
      if (!contribution) {
        throw new PaliGemmaError(`backend profiling: unknown inner backend '${inner}' `
          + `(available: ${backends.map((c) => c.name).join(', ')}); set options.inner or PALIGEMMA_PROFILE_INNER`);
      }
      // Not started here: startBackend calls ProfilingBackend.init(), which starts (and times) it.
      return new ProfilingBackend(await contribution.create(innerOptions));
    },
  }));
});
