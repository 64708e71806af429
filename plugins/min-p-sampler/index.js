// @ts-check
/**
 * Plugin `min-p-sampler`: a sampler named `min-p` — temperature, then keep the tokens with
 * p ≥ minP · p_max (see min-p.js).
 *
 * ```sh
 * paligemma generate --sampler min-p --temperature 0.8 --plugin ./plugins/min-p-sampler/index.js \
 *   --image cat.jpg --prompt "caption en"
 * paligemma generate --sampler min-p --sampler-option minP=0.05 --plugin ./plugins/min-p-sampler/index.js …
 * ```
 *
 * Without the minP option, the PALIGEMMA_MIN_P environment variable still sets it (kept for older scripts).
 *
 * ```js
 * createPipeline({ sampler: 'min-p', samplerOptions: { minP: 0.05, temperature: 0.8 },
 *   plugins: ['./plugins/min-p-sampler/index.js'] });
 * ```
 */
import { SamplerContribution, definePlugin } from 'paligemma-sdk';
import { MIN_P_DEFAULT, minPSampler } from './min-p.js';

export * from './min-p.js';

export default definePlugin('min-p-sampler', ({ bind }) => {
  bind(SamplerContribution).toConstantValue({
    name: 'min-p',
    description: `temperature, then keep tokens with p ≥ minP·p_max (minP: --sampler-option minP=P, or PALIGEMMA_MIN_P; default ${MIN_P_DEFAULT})`,
    create(options) {
      // The sampler option first (--sampler-option minP=P), then the older environment variable.
      const fromEnv = process.env.PALIGEMMA_MIN_P;
      const minP = options.minP ?? (fromEnv !== undefined && fromEnv !== '' ? Number(fromEnv) : undefined);
      return minPSampler({ minP: /** @type {number | undefined} */ (minP), temperature: options.temperature });
    },
  });
});
