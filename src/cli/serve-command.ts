import { Command } from 'commander';
import { parseInteger } from './cli-errors.js';
import { addModelOptions, pipelineFor, type ModelFlags } from './model-options.js';
import { ServingEngine } from '../serving/serving-engine.js';
import { buildServer } from '../serving/server.js';
import { modelDisplayName } from '../hub/resolve-model.js';

interface ServeFlags extends ModelFlags {
  port: string;
  host: string;
  maxBatch: string;
  maxQueue: string;
  maxBody: string;
  maxTokens: string;
  visionCache: string;
  modelName?: string;
  apiKey?: string;
  allowFileImages?: string;
  allowRemoteImages?: boolean;
}

export function serveCommand(): Command {
  return addModelOptions(new Command('serve')
    .description('serve the model over HTTP: OpenAI chat completions with continuous batching')
    .option('--port <n>', 'port (0: any free one)', '8080')
    .option('--host <addr>', 'address to listen on', '127.0.0.1')
    .option('--max-batch <n>', 'most sequences decoded together', '8')
    .option('--max-queue <n>', 'most requests waiting; more are refused with 429', '64')
    .option('--max-body <bytes>', 'largest request body; larger ones get 413', String(25 * 1024 * 1024))
    .option('--max-tokens <n>', 'max_tokens when a request gives none', '256')
    .option('--vision-cache <n>', 'images whose vision-tower output stays cached', '64')
    .option('--model-name <id>', 'model id clients use (default: the hub id ORG/NAME, or the model folder name)')
    .option('--api-key <key>', 'require Authorization: Bearer KEY')
    .option('--allow-file-images <dir>', 'accept file:// image URLs inside this folder')
    .option('--allow-remote-images', 'fetch http(s) image URLs'))
    .action(async (flags: ServeFlags) => {
      const int = (flag: string, v: string, min: number) =>
        parseInteger(flag, v, min)!;
      const port = int('--port', flags.port, 0);
      const maxBatch = int('--max-batch', flags.maxBatch, 1);
      const maxQueue = int('--max-queue', flags.maxQueue, 0);
      const maxBody = int('--max-body', flags.maxBody, 1);
      const defaultMaxTokens = int('--max-tokens', flags.maxTokens, 1);
      const visionCacheSize = int('--vision-cache', flags.visionCache, 1);
      const pipe = await pipelineFor(flags);
      const engine = new ServingEngine(pipe, { maxBatch, maxQueue, visionCacheSize });
      const app = await buildServer(engine, {
        modelId: flags.modelName ?? (flags.model ? modelDisplayName(flags.model) : 'paligemma-demo'),
        apiKey: flags.apiKey, maxBody, defaultMaxTokens,
        images: { fileRoot: flags.allowFileImages, allowRemote: flags.allowRemoteImages === true },
      });
      const address = await app.listen({ port, host: flags.host });
      process.stderr.write(`paligemma serve: listening on ${address} (backend ${pipe.backendName}, max batch ${maxBatch})\n`);
      let stopping = false;
      const stop = async (signal: string) => {
        if (stopping) return;
        stopping = true;
        process.stderr.write(`paligemma serve: ${signal}, draining ${engine.inFlight} in-flight requests\n`);
        // close() stops accepting connections and waits for in-flight ones; new requests get 503.
        // The engine finishes every request it accepted (image decoding, queued, decoding).
        await Promise.all([app.close(), engine.drain()]);
        await pipe.close();
        process.stderr.write('paligemma serve: drained, exiting\n');
        process.exit(0);
      };
      process.once('SIGTERM', () => void stop('SIGTERM'));
      process.once('SIGINT', () => void stop('SIGINT'));
    });
}
