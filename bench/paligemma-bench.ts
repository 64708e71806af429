/**
 * Runs `paligemma bench` from the sources, with the same flags (see bench/README.md):
 *   npx tsx bench/paligemma-bench.ts [--backend NAME] [--vision-layers N] [--text-layers N] …
 */
import 'reflect-metadata';
import { reportAndExit } from '../src/cli/cli-errors.js';
import { benchCommand } from '../src/cli/bench-command.js';

try {
  await benchCommand().parseAsync(process.argv.slice(2), { from: 'user' });
} catch (e) {
  reportAndExit(e, process.argv.includes('--verbose'));
}
