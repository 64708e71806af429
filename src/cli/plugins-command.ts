import { Command } from 'commander';
import { createRegistry } from '../create-pipeline.js';

export function pluginsCommand(): Command {
  return new Command('plugins')
    .description('list every registered part: name, kind, plugin and where it came from')
    .option('--plugin <path>', 'load a plugin (file or package); repeatable', (v: string, acc: string[]) => [...acc, v], [])
    .option('--json', 'print JSON')
    .option('--verbose', 'print stack traces on errors')
    .action(async (flags: { plugin: string[]; json?: boolean }) => {
      const registry = await createRegistry(flags.plugin);
      const parts = registry.list();
      if (flags.json) {
        process.stdout.write(`${JSON.stringify(parts)}\n`);
        return;
      }
      const rows = parts.map((p) => [p.kind, p.name, p.plugin, p.source, p.description]);
      const header = ['kind', 'name', 'plugin', 'source', 'description'];
      const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
      for (const r of [header, ...rows]) {
        process.stdout.write(`${r.map((c, i) => (i < r.length - 1 ? c.padEnd(widths[i]) : c)).join('  ')}\n`);
      }
    });
}
