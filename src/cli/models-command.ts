import { Command } from 'commander';
import { cachedPaliGemmaModels } from '../hub/cached-models.js';
import { hubCacheDir } from '../hub/hub-settings.js';

const size = (bytes: number) => bytes >= 1e9 ? `${(bytes / 1e9).toFixed(1)} GB` : `${(bytes / 1e6).toFixed(1)} MB`;

/** `paligemma models`: the PaliGemma snapshots in the hub cache, with revision and size on disk. */
export function modelsCommand(): Command {
  return new Command('models')
    .description('list the PaliGemma models in the hub cache (shared with Python), with revision and size')
    .option('--json', 'print {"cacheDir","models":[…]} as JSON')
    .option('--verbose', 'print stack traces on errors')
    .action(async (flags: { json?: boolean }) => {
      const cacheDir = hubCacheDir();
      const models = await cachedPaliGemmaModels(cacheDir);
      if (flags.json) {
        process.stdout.write(`${JSON.stringify({ cacheDir, models })}\n`);
        return;
      }
      if (models.length === 0) {
        process.stderr.write(`no PaliGemma models in ${cacheDir} (paligemma download ORG/NAME fetches one)\n`);
        return;
      }
      const rows = models.map((m) => [m.repo, m.refs.join(',') || '-', m.commit.slice(0, 12), size(m.sizeOnDisk), m.complete ? m.path : `${m.path} (incomplete)`]);
      const header = ['model', 'refs', 'commit', 'size', 'path'];
      const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
      for (const r of [header, ...rows]) {
        process.stdout.write(`${r.map((c, i) => (i < r.length - 1 ? c.padEnd(widths[i]) : c)).join('  ')}\n`);
      }
    });
}
