// @ts-check
/**
 * Plugin `int8-kv-cache`: a KV cache store named `int8` that keeps keys and values as int8 with
 * one scale per position and kv head, dequantizing a layer into a backend tensor when it is read
 * (see int8-kv-cache.js for how and what it costs in accuracy).
 *
 * ```js
 * const pipe = await createPipeline({ kvCache: 'int8', plugins: ['./plugins/int8-kv-cache/index.js'] });
 * ```
 */
import { KVCacheStoreContribution, definePlugin } from 'paligemma-sdk';
import { Int8KvCacheStore } from './int8-kv-cache.js';

export { Int8KvCache, Int8KvCacheStore, quantizeRows } from './int8-kv-cache.js';

export default definePlugin('int8-kv-cache', ({ bind }) => {
  bind(KVCacheStoreContribution).toConstantValue({
    name: 'int8',
    description: 'int8 keys/values with a scale per position and head, in host memory; dequantized per layer on read',
    create: () => new Int8KvCacheStore(),
  });
});
