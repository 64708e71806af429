/** The `paligemma` command. */
import 'reflect-metadata';
import { Command, CommanderError } from 'commander';
import { reportAndExit } from './cli-errors.js';
import { benchCommand } from './bench-command.js';
import { conformanceCommand } from './conformance-command.js';
import { generateCommand } from './generate-command.js';
import { pluginsCommand } from './plugins-command.js';
import { scoreCommand } from './score-command.js';

export async function main(argv: string[]): Promise<void> {
  // A closed pipe (`paligemma ... | head`) ends the command quietly.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => { if (e.code === 'EPIPE') process.exit(0); throw e; });
  const program = new Command('paligemma')
    .description('Run PaliGemma vision-language models on swappable backends')
    .exitOverride()
    .configureOutput({ writeErr: () => {} });       // errors are reported once, below
  for (const cmd of [generateCommand(), scoreCommand(), conformanceCommand(), benchCommand(), pluginsCommand()]) {
    program.addCommand(cmd.exitOverride().configureOutput({ writeErr: () => {} }));
  }
  const verbose = argv.includes('--verbose');
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError && (e.code === 'commander.helpDisplayed' || e.code === 'commander.version'
      || e.code === 'commander.help')) {
      process.exit(0);
    }
    reportAndExit(e, verbose);
  }
}

await main(process.argv.slice(2));
