// Preloaded with `node --import`: makes the packages named in PALIGEMMA_TEST_HIDE (comma-separated)
// unresolvable, as they are in a lean install that left the optional peer dependencies out.
import { register } from 'node:module';

register(new URL('./hide-packages-hooks.mjs', import.meta.url), { data: (process.env.PALIGEMMA_TEST_HIDE ?? '').split(',').filter(Boolean) });
