import { Command, Option } from 'commander';
import { matmulEngineInfo } from '../backends/reference/matmul.js';
import { parseBenchWeights } from '../bench/bench-checkpoint.js';
import { formatBench, runBench } from '../bench/run-bench.js';
import { BENCH_IMAGE_SIZES, BENCH_MODELS, type BenchModel } from '../bench/paligemma-shapes.js';
import { PaliGemmaError } from '../interfaces/errors.js';
import { parseInteger } from './cli-errors.js';
import { collect } from './key-value-options.js';
import { BACKEND_OPTION_HELP, backendOptionsOf } from './model-options.js';

interface BenchFlags {
  backend: string;
  device?: string;
  backendOption: string[];
  visionLayers: string;
  textLayers: string;
  newTokens: string;
  repeats: string;
  warmup: string;
  plugin: string[];
  json?: boolean;
  verbose?: boolean;
  scaleDown: string;
  peakSize: string;
  bandwidthMib: string;
  seed: string;
  weights?: string;
  model: string;
  imageSize: string;
}

const int = (flag: string, value: string, min: number) => parseInteger(flag, value, min)!;

function parseBenchModel(value: string): BenchModel {
  if ((BENCH_MODELS as readonly string[]).includes(value)) return value as BenchModel;
  throw new PaliGemmaError(`invalid --model ${JSON.stringify(value)}: expected ${BENCH_MODELS.join(' or ')}`, 'invalid_option');
}

function parseImageSize(value: string): number {
  const n = Number(value);
  if (BENCH_IMAGE_SIZES.includes(n) && /^\d+$/.test(value)) return n;
  throw new PaliGemmaError(`invalid --image-size ${JSON.stringify(value)}: expected ${BENCH_IMAGE_SIZES.join(', ')}`, 'invalid_option');
}

/**
 * `paligemma bench`: PaliGemma-3B-224 shapes at a chosen depth with random weights in memory,
 * timed on a backend, next to floors from this machine's matmul peak and memory bandwidth
 * measured in the same run. See bench/README.md for what each number means.
 */
export function benchCommand(): Command {
  return new Command('bench')
    .description('time vision, prefill and decode at real PaliGemma-3B or PaliGemma 2 3B shapes (random weights) against machine floors')
    .option('--backend <name>', 'tensor backend', 'reference')
    .option('--device <name>', 'device for backends that have several (e.g. cpu, cuda)')
    .option('--backend-option <key=value>', BACKEND_OPTION_HELP, collect, [])
    .option('--vision-layers <n>', 'SigLIP encoder layers (the real model has 27)', '2')
    .option('--text-layers <n>', 'Gemma decoder layers (the real model has 18; PaliGemma 2 3B 26)', '2')
    .option('--model <shapes>', `model shapes: ${BENCH_MODELS.join(' (PaliGemma-3B) or ')} (PaliGemma 2 3B, Gemma 2 2B decoder)`, 'paligemma')
    .option('--image-size <px>', `input side: ${BENCH_IMAGE_SIZES.join(', ')} (256, 1024, 4096 image tokens)`, '224')
    .option('--new-tokens <n>', 'greedy decode steps per run', '16')
    .option('--weights <dtype>', 'store the random weights as a f32, bf16 or f16 checkpoint and load it the real way (default: f32 arrays in memory)')
    .option('--repeats <n>', 'timed runs; each number is their median', '3')
    .option('--plugin <path>', 'load a plugin (file or package); repeatable', collect, [])
    .option('--json', 'print one JSON object')
    .option('--verbose', 'print stack traces on errors')
    .addOption(new Option('--warmup <n>', 'untimed runs first (2 decode steps each)').default('1'))
    .addOption(new Option('--scale-down <n>', 'divide every width by n (tests)').default('1').hideHelp())
    .addOption(new Option('--peak-size <n>', 'side of the matmul timed for the peak').default('2048').hideHelp())
    .addOption(new Option('--bandwidth-mib <n>', 'MiB summed for the read bandwidth').default('1024').hideHelp())
    .addOption(new Option('--seed <n>', 'seed of the random weights, pixels and prompt').default('1').hideHelp())
    .action(async (flags: BenchFlags) => {
      const options = {
        backend: flags.backend,
        backendOptions: backendOptionsOf(flags),
        plugins: flags.plugin,
        visionLayers: int('--vision-layers', flags.visionLayers, 0),
        textLayers: int('--text-layers', flags.textLayers, 0),
        newTokens: int('--new-tokens', flags.newTokens, 1),
        repeats: int('--repeats', flags.repeats, 1),
        warmup: int('--warmup', flags.warmup, 0),
        scaleDown: int('--scale-down', flags.scaleDown, 1),
        peakSize: int('--peak-size', flags.peakSize, 16),
        bandwidthMib: int('--bandwidth-mib', flags.bandwidthMib, 1),
        seed: int('--seed', flags.seed, 0),
        weights: flags.weights === undefined ? undefined : parseBenchWeights(flags.weights),
        model: parseBenchModel(flags.model),
        imageSize: parseImageSize(flags.imageSize),
      };
      const progress = !flags.json && process.stderr.isTTY;
      const result = await runBench({ ...options, log: progress ? (l) => process.stderr.write(`${l}\n`) : undefined });
      if (flags.json) {
        process.stdout.write(`${JSON.stringify(result)}\n`);
        return;
      }
      process.stdout.write(formatBench(result));
      if (result.backend === 'reference') process.stdout.write(`  reference matmul: ${matmulEngineInfo().detail}\n`);
    });
}
