import type { Command } from 'commander';
import { createPipeline } from '../create-pipeline.js';
import type { PaliGemmaPipeline } from '../paligemma-pipeline.js';
import { downloadReporter } from './download-progress.js';
import { collect, parseKeyValueOptions } from './key-value-options.js';
import { loadProgressBar } from './progress.js';
import { MODEL_DTYPES, parseModelDtype } from '../checkpoint/model-dtype.js';
import { PaliGemmaError } from '../interfaces/errors.js';
import { parseFinalLogitSoftcap, type Gemma2Options } from '../model/gemma2-options.js';

export interface ModelFlags {
  model?: string;
  revision?: string;
  backend: string;
  device?: string;
  backendOption: string[];
  dtype?: string;
  plugin: string[];
  attention?: string;
  kvCache?: string;
  tokenizer?: string;
  imageProcessor?: string;
  finalLogitSoftcap?: string;
  slidingWindow?: string;
  verbose?: boolean;
}

export const BACKEND_OPTION_HELP = 'backend option, e.g. quantize=int8 (VALUE read as JSON when it parses); repeatable';

/** The backend options of --backend-option items and --device (which wins over a device= item). */
export function backendOptionsOf(flags: { backendOption?: string[]; device?: string }): Record<string, unknown> {
  return { ...parseKeyValueOptions('--backend-option', flags.backendOption), ...(flags.device ? { device: flags.device } : {}) };
}

/** Flags shared by every command that runs the model. */
export function addModelOptions(cmd: Command): Command {
  return cmd
    .option('--model <dir|id>', 'PaliGemma folder or hub id ORG/NAME[@REV], found in the hub cache or downloaded (default: built-in tiny checkpoint with random weights)')
    .option('--revision <rev>', 'branch, tag or commit of a hub id (default: main)')
    .option('--backend <name>', 'tensor backend', 'reference')
    .option('--device <name>', 'device for backends that have several (e.g. cpu, cuda)')
    .option('--backend-option <key=value>', BACKEND_OPTION_HELP, collect, [])
    .option('--dtype <dtype>', `how weights are held: ${MODEL_DTYPES.join(', ')} (default: auto, as the checkpoint stores them)`)
    .option('--attention <name>', "attention kernel (default: the backend's own)")
    .option('--kv-cache <name>', 'KV cache store (default: contiguous)')
    .option('--tokenizer <name>', "tokenizer (default: hf, the model folder's tokenizer.json)")
    .option('--image-processor <name>', 'image processor (default: siglip)')
    .option('--plugin <path>', 'load a plugin (file or package); repeatable', collect, [])
    .option('--final-logit-softcap <v>', 'PaliGemma 2: off (default, as transformers 5), auto (the config\'s 30, as big_vision) or a number')
    .option('--sliding-window <v>', 'PaliGemma 2: auto (default, the config\'s window with the prefix rule, as transformers) or off (as big_vision)')
    .option('--verbose', 'print stack traces on errors');
}

/** The gemma2 options of --final-logit-softcap and --sliding-window, or undefined when neither is given. */
function gemma2OptionsOf(flags: ModelFlags): Gemma2Options | undefined {
  if (flags.finalLogitSoftcap === undefined && flags.slidingWindow === undefined) return undefined;
  const sw = flags.slidingWindow;
  if (sw !== undefined && sw !== 'auto' && sw !== 'off') {
    throw new PaliGemmaError(`invalid --sliding-window ${JSON.stringify(sw)}: expected auto or off`, 'invalid_option');
  }
  return {
    ...(flags.finalLogitSoftcap !== undefined ? { finalLogitSoftcap: parseFinalLogitSoftcap(flags.finalLogitSoftcap) } : {}),
    ...(sw !== undefined ? { slidingWindow: sw } : {}),
  };
}

/** Builds the pipeline for a command, with a progress bar while weights load. */
export async function pipelineFor(flags: ModelFlags, extra: Parameters<typeof createPipeline>[0] = {}): Promise<PaliGemmaPipeline> {
  const backendOptions = backendOptionsOf(flags);   // a malformed item fails before anything prints or loads
  const dtype = flags.dtype === undefined ? undefined : parseModelDtype(flags.dtype, '--dtype');
  const gemma2 = gemma2OptionsOf(flags);
  if (!flags.model) {
    process.stderr.write('note: no --model given; using the built-in tiny checkpoint (random weights, output is noise)\n');
  }
  const progress = loadProgressBar();
  const download = downloadReporter();
  try {
    return await createPipeline({
      model: flags.model,
      revision: flags.revision,
      onDownloadPlan: download.onPlan,
      onDownloadProgress: download.onProgress,
      backend: flags.backend,
      backendOptions,
      dtype,
      plugins: flags.plugin,
      attention: flags.attention,
      kvCache: flags.kvCache,
      tokenizer: flags.tokenizer,
      imageProcessor: flags.imageProcessor,
      onProgress: progress.onProgress,
      ...(gemma2 ? { gemma2 } : {}),
      ...extra,
    });
  } finally {
    download.stop();
    progress.stop();
  }
}
