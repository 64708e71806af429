import { Command } from 'commander';
import { IMAGE_HELP, imageArg } from './image-arg.js';
import { PaliGemmaError } from '../interfaces/errors.js';
import { parseInteger, parseNumber } from './cli-errors.js';
import { onInterrupt } from './interrupt.js';
import { collect, parseKeyValueOptions } from './key-value-options.js';
import { addModelOptions, pipelineFor, type ModelFlags } from './model-options.js';

interface GenerateFlags extends ModelFlags {
  image: string;
  prompt: string;
  maxNewTokens?: string;
  sampler?: string;
  samplerOption: string[];
  temperature?: string;
  topK?: string;
  topP?: string;
  seed?: string;
  logprobs?: string;
  json?: boolean;
}

export function generateCommand(): Command {
  return addModelOptions(new Command('generate')
    .description('generate text from an image and a prompt')
    .requiredOption('--image <file>', IMAGE_HELP)
    .requiredOption('--prompt <text>', "task prompt, e.g. 'caption en'")
    .option('--max-new-tokens <n>', 'stop after this many tokens', '32')
    .option('--sampler <name>', 'greedy (default), temperature, top-k, top-p, or a plugin sampler')
    .option('--sampler-option <key=value>', 'sampler option, e.g. minP=0.05 (VALUE read as JSON when it parses); repeatable', collect, [])
    .option('--temperature <t>', 'sampling temperature (≥ 0)')
    .option('--top-k <k>', 'keep the k most likely tokens (≥ 1)')
    .option('--top-p <p>', 'keep the smallest set with probability ≥ p, in (0, 1]')
    .option('--seed <s>', 'RNG seed; the same seed gives the same tokens', '0')
    .option('--logprobs <n>', 'report the top-n log-probabilities per step')
    .option('--json', 'print one JSON object instead of streaming text'))
    .action(async (flags: GenerateFlags) => {
      const maxNewTokens = parseInteger('--max-new-tokens', flags.maxNewTokens, 1)!;
      const seed = parseInteger('--seed', flags.seed)!;
      const logprobs = parseInteger('--logprobs', flags.logprobs, 1);
      const temperature = parseNumber('--temperature', flags.temperature, (n) => n >= 0, 'a number ≥ 0');
      const topK = parseInteger('--top-k', flags.topK, 1);
      const topP = parseNumber('--top-p', flags.topP, (n) => n > 0 && n <= 1, 'a number in (0, 1]');
      // --temperature, --top-k and --top-p win over the same keys given as --sampler-option.
      const samplerOptions = {
        ...parseKeyValueOptions('--sampler-option', flags.samplerOption),
        ...(temperature !== undefined ? { temperature } : {}),
        ...(topK !== undefined ? { topK } : {}),
        ...(topP !== undefined ? { topP } : {}),
      };
      // Without --sampler, the sampling flags given choose one; otherwise greedy.
      const sampler = flags.sampler
        ?? (topP !== undefined ? 'top-p' : topK !== undefined ? 'top-k' : temperature !== undefined ? 'temperature' : 'greedy');
      if (sampler === 'greedy' && (topK !== undefined || topP !== undefined)) {
        throw new PaliGemmaError('--top-k and --top-p need a sampling sampler (--sampler top-k or top-p), not greedy');
      }

      const image = await imageArg(flags.image);      // stdin is read before the model loads
      const pipe = await pipelineFor(flags, { sampler, samplerOptions });
      const interrupt = onInterrupt();
      try {
        const stream = pipe.stream(image, flags.prompt, { maxNewTokens, seed, logprobs, signal: interrupt.signal });
        let r = await stream.next();
        while (!r.done) {
          if (!flags.json) process.stdout.write(r.value.text);
          r = await stream.next();
        }
        const result = r.value;
        if (flags.json) {
          process.stdout.write(`${JSON.stringify(result)}\n`);
        } else {
          const t = result.timings;
          process.stdout.write('\n');
          process.stderr.write(`[${result.finishReason}; ${result.tokens.length} tokens; backend ${result.backend}; `
            + `vision ${t.visionMs.toFixed(0)} ms, prefill ${t.prefillMs.toFixed(0)} ms, `
            + `${t.decodeMsPerToken.toFixed(1)} ms/token]\n`);
        }
      } finally {
        await pipe.close();
        interrupt.release();
      }
    });
}
