/** The `paligemma` command. */
import 'reflect-metadata';
import { Command, CommanderError, Help, type Option } from 'commander';
import { EXIT_USAGE, reportAndExit } from './cli-errors.js';
import { batchCommand } from './batch-command.js';
import { benchCommand } from './bench-command.js';
import { conformanceCommand } from './conformance-command.js';
import { downloadCommand } from './download-command.js';
import { generateCommand } from './generate-command.js';
import { modelsCommand } from './models-command.js';
import { pluginsCommand } from './plugins-command.js';
import { quantizeCommand } from './quantize-command.js';
import { scoreCommand } from './score-command.js';
import { serveCommand } from './serve-command.js';
import { packageVersion } from './package-version.js';
import { answerCommand, captionCommand, detectCommand, ocrCommand, segmentCommand } from './task-commands.js';

/** Help text without "(default: [])" on repeatable flags: an empty list says nothing. */
class CleanHelp extends Help {
  override optionDescription(option: Option): string {
    if (Array.isArray(option.defaultValue) && option.defaultValue.length === 0 && !option.defaultValueDescription) {
      const { defaultValue } = option;
      option.defaultValue = undefined;
      try { return super.optionDescription(option); } finally { option.defaultValue = defaultValue; }
    }
    return super.optionDescription(option);
  }
}

export function buildProgram(): Command {
  const program = new Command('paligemma')
    .description('Run PaliGemma vision-language models on swappable backends')
    .version(packageVersion(), '-V, --version', 'print the version')
    .exitOverride()
    .configureOutput({ writeErr: () => {} });       // errors are reported once, by reportAndExit
  program.createHelp = () => new CleanHelp();
  const commands = [
    generateCommand(),
    scoreCommand(),
    detectCommand(),
    segmentCommand(),
    captionCommand(),
    ocrCommand(),
    answerCommand(),
    serveCommand(),
    batchCommand(),
    downloadCommand(),
    modelsCommand(),
    conformanceCommand(),
    benchCommand(),
    quantizeCommand(),
    pluginsCommand(),
  ];
  for (const cmd of commands) {
    cmd.createHelp = () => new CleanHelp();
    program.addCommand(cmd.exitOverride().configureOutput({ writeErr: () => {} }));
  }
  return program;
}

export async function main(argv: string[]): Promise<void> {
  // A closed pipe (`paligemma ... | head`) ends the command quietly.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => { if (e.code === 'EPIPE') process.exit(0); throw e; });
  const program = buildProgram();
  if (argv.length === 0) {
    // No command: what a user needs is the list of commands, and scripts need a failure.
    process.stderr.write(program.helpInformation());
    process.exit(EXIT_USAGE);
  }
  const verbose = argv.includes('--verbose');
  const json = argv.includes('--json');
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError && (e.code === 'commander.helpDisplayed' || e.code === 'commander.version'
      || e.code === 'commander.help')) {
      process.exit(0);
    }
    reportAndExit(e, { verbose, json });
  }
}

await main(process.argv.slice(2));
