import type { Command } from 'commander';
import { createPipeline } from '../create-pipeline.js';
import type { PaliGemmaPipeline } from '../pipeline/paligemma-pipeline.js';
import { loadProgressBar } from './progress.js';

export interface ModelFlags {
  model?: string;
  backend: string;
  device?: string;
  plugin: string[];
  attention?: string;
  kvCache?: string;
  verbose?: boolean;
}

const collect = (v: string, acc: string[]) => [...acc, v];

/** Flags shared by every command that runs the model. */
export function addModelOptions(cmd: Command): Command {
  return cmd
    .option('--model <dir>', 'Hugging Face PaliGemma folder (default: built-in tiny checkpoint with random weights)')
    .option('--backend <name>', 'tensor backend', 'reference')
    .option('--device <name>', 'device for backends that have several (e.g. cpu, cuda)')
    .option('--attention <name>', "attention kernel (default: the backend's own)")
    .option('--kv-cache <name>', 'KV cache store (default: contiguous)')
    .option('--plugin <path>', 'load a plugin (file or package); repeatable', collect, [])
    .option('--verbose', 'print stack traces on errors');
}

/** Builds the pipeline for a command, with a progress bar while weights load. */
export async function pipelineFor(flags: ModelFlags, extra: Parameters<typeof createPipeline>[0] = {}): Promise<PaliGemmaPipeline> {
  if (!flags.model) {
    process.stderr.write('note: no --model given; using the built-in tiny checkpoint (random weights, output is noise)\n');
  }
  const progress = loadProgressBar();
  try {
    return await createPipeline({
      model: flags.model,
      backend: flags.backend,
      backendOptions: flags.device ? { device: flags.device } : {},
      plugins: flags.plugin,
      attention: flags.attention,
      kvCache: flags.kvCache,
      onProgress: progress.onProgress,
      ...extra,
    });
  } finally {
    progress.stop();
  }
}
