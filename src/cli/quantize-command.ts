import { Command } from 'commander';
import { PaliGemmaError } from '../interfaces/errors.js';
import { resolveModel } from '../hub/resolve-model.js';
import { quantizeCheckpoint } from '../checkpoint/quantize-checkpoint.js';

/**
 * `paligemma quantize --model DIR --to int8|int4 --out DIR2`: writes the model's linear weights
 * block-quantized into a folder the loader reads directly (docs/quantized-format.md), so
 * `--backend onnx` starts without quantizing on every load.
 */
export function quantizeCommand(): Command {
  return new Command('quantize')
    .description('write a model folder with int8/int4 block-quantized linear weights that the onnx backend loads directly')
    .requiredOption('--model <dir|id>', 'PaliGemma folder (F32, F16 or BF16) or hub id ORG/NAME[@REV]')
    .option('--revision <rev>', 'branch, tag or commit of a hub id (default: main)')
    .requiredOption('--to <bits>', 'int8 or int4')
    .requiredOption('--out <dir>', 'new folder to write (must not exist or be empty)')
    .option('--json', 'print {"out","bits","quantized","outBytes","sourceBytes","ms"} as JSON')
    .option('--verbose', 'print stack traces on errors')
    .action(async (flags: { model: string; revision?: string; to: string; out: string; json?: boolean }) => {
      const bits = flags.to === 'int8' ? 8 : flags.to === 'int4' ? 4 : undefined;
      if (!bits) throw new PaliGemmaError(`invalid --to '${flags.to}': expected int8 or int4`, 'invalid_argument');
      const model = await resolveModel(flags.model, { revision: flags.revision });
      const t0 = performance.now();
      const progress = !flags.json && process.stderr.isTTY
        ? (done: number, total: number) => process.stderr.write(`\rquantizing ${done}/${total} weights`)
        : undefined;
      const r = await quantizeCheckpoint({ model, bits, out: flags.out, onProgress: progress });
      if (progress) process.stderr.write('\n');
      const ms = performance.now() - t0;
      if (flags.json) {
        process.stdout.write(`${JSON.stringify({ out: r.out, bits, quantized: r.quantized, outBytes: r.outBytes, sourceBytes: r.sourceBytes, ms })}\n`);
      } else {
        process.stdout.write(`${r.out}: ${r.quantized} weights as int${bits}, ${(r.outBytes / 1e9).toFixed(2)} GB (source ${(r.sourceBytes / 1e9).toFixed(2)} GB) in ${(ms / 1000).toFixed(1)} s\n`);
      }
    });
}
