import { Command } from 'commander';
import { formatReport } from '../conformance/report.js';
import { runConformance } from '../conformance/run-conformance.js';
import { collect } from './key-value-options.js';
import { BACKEND_OPTION_HELP, backendOptionsOf } from './model-options.js';

interface ConformanceFlags {
  backend: string;
  against: string;
  model: string[];
  models: boolean;
  ops?: string;
  perf?: boolean;
  samplers: boolean;
  device?: string;
  backendOption: string[];
  plugin: string[];
  json?: boolean;
  verbose?: boolean;
}

/**
 * `paligemma conformance --backend X`: every op on seeded inputs, the samplers, and whole tiny
 * checkpoints, each against the reference backend. Exit 0 when nothing fails, 1 when a case
 * fails, 2 on a usage error.
 */
export function conformanceCommand(): Command {
  return new Command('conformance')
    .description('check a backend against the reference: every op, the samplers, and whole checkpoints')
    .requiredOption('--backend <name>', 'backend to check')
    .option('--against <name>', 'backend to compare with', 'reference')
    .option('--model <dir>', 'model folder to compare end to end; repeatable (default: the built-in tiny checkpoints)', collect, [])
    .option('--no-models', 'skip the model cases')
    .option('--no-samplers', 'skip the sampler cases')
    .option('--ops <pattern>', "only the op cases whose 'op case' text matches (substring or regex)")
    .option('--perf', 'add µs per run and GFLOP/s or GB/s to each op case')
    .option('--device <name>', 'device for backends that have several (e.g. cpu, cuda)')
    .option('--backend-option <key=value>', `${BACKEND_OPTION_HELP} (the backend under test only)`, collect, [])
    .option('--plugin <path>', 'load a plugin (file or package); repeatable', collect, [])
    .option('--json', 'print one JSON object instead of the table')
    .option('--verbose', 'print stack traces on errors')
    .action(async (flags: ConformanceFlags) => {
      const backendOptions = backendOptionsOf(flags);
      const progress = !flags.json && process.stderr.isTTY;
      let done = 0;
      const report = await runConformance({
        backend: flags.backend,
        against: flags.against,
        backendOptions,
        models: !flags.models ? [] : flags.model.length > 0 ? flags.model : undefined,
        ops: flags.ops,
        perf: flags.perf,
        samplers: flags.samplers,
        plugins: flags.plugin,
        onResult: progress ? (r) => process.stderr.write(`\r${++done} cases… ${'op' in r ? r.op : r.model}`.padEnd(60)) : undefined,
      });
      if (progress) process.stderr.write(`\r${''.padEnd(60)}\r`);
      process.stdout.write(flags.json ? `${JSON.stringify(report)}\n` : formatReport(report, { perf: flags.perf }));
      process.exitCode = report.ok ? 0 : 1;
    });
}
