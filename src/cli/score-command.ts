import { Command } from 'commander';
import { IMAGE_HELP, imageArg } from './image-arg.js';
import { addModelOptions, pipelineFor, type ModelFlags } from './model-options.js';

interface ScoreFlags extends ModelFlags {
  image: string;
  prompt: string;
  suffix: string;
  json?: boolean;
}

export function scoreCommand(): Command {
  return addModelOptions(new Command('score')
    .description('log-probability of a suffix (with <eos> appended) given an image and a prompt')
    .requiredOption('--image <file>', IMAGE_HELP)
    .requiredOption('--prompt <text>', 'task prompt')
    .requiredOption('--suffix <text>', 'text to score')
    .option('--json', 'print one JSON object'))
    .action(async (flags: ScoreFlags) => {
      const image = await imageArg(flags.image);      // stdin is read before the model loads
      const pipe = await pipelineFor(flags);
      try {
        const r = await pipe.score(image, flags.prompt, flags.suffix);
        if (flags.json) {
          process.stdout.write(`${JSON.stringify(r)}\n`);
        } else {
          r.tokens.forEach((tok, i) => {
            const piece = pipe.tokenizer.idToToken(tok) ?? String(tok);
            process.stdout.write(`${String(tok).padStart(7)}  ${piece.padEnd(16)} ${r.logprobs[i].toFixed(4)}\n`);
          });
          process.stdout.write(`total ${r.total.toFixed(4)}\n`);
        }
      } finally {
        await pipe.close();
      }
    });
}
