import { Command } from 'commander';
import { PaliGemmaError } from '../interfaces/errors.js';
import { parseModelReference } from '../hub/model-reference.js';
import { resolveModel } from '../hub/resolve-model.js';
import { downloadReporter } from './download-progress.js';

/** `paligemma download ORG/NAME[@REV]`: fetch a model into the hub cache, print its snapshot folder. */
export function downloadCommand(): Command {
  return new Command('download')
    .description('download a model from the hub into the shared cache and print its snapshot folder')
    .argument('<model>', 'hub id ORG/NAME, optionally ORG/NAME@REVISION')
    .option('--revision <rev>', 'branch, tag or commit (default: main)')
    .option('--json', 'print {"repo","revision","path"} as JSON')
    .option('--verbose', 'print stack traces on errors')
    .action(async (model: string, flags: { revision?: string; json?: boolean }) => {
      const ref = parseModelReference(model);
      if (!ref) throw new PaliGemmaError(`invalid hub id ${model}: expected ORG/NAME or ORG/NAME@REVISION`);
      const reporter = downloadReporter();
      let path: string;
      try {
        path = await resolveModel(model, { revision: flags.revision, onPlan: reporter.onPlan, onProgress: reporter.onProgress });
      } finally {
        reporter.stop();
      }
      const revision = flags.revision ?? ref.revision ?? 'main';
      process.stdout.write(flags.json ? `${JSON.stringify({ repo: ref.repo, revision, path })}\n` : `${path}\n`);
    });
}
