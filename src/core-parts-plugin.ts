/** The parts every backend shares: the attention kernels (attend, plain), the KV cache, samplers, I/O. */
import {
  AttentionKernelContribution, ImageProcessorContribution, KVCacheStoreContribution,
  SamplerContribution, TokenizerContribution,
} from './interfaces/contributions.js';
import { AttendKernel, PlainAttentionKernel } from './attention/plain-attention-kernel.js';
import { ContiguousKvCacheStore } from './kv-cache/contiguous-kv-cache.js';
import { HfTokenizer } from './tokenizer/hf-tokenizer.js';
import { SiglipImageProcessor } from './image/siglip-image-processor.js';
import { definePlugin } from './plugin/define-plugin.js';
import { createSampler } from './samplers/index.js';

export const corePartsPlugin = definePlugin('core', ({ bind }) => {
  bind(AttentionKernelContribution).toConstantValue({
    name: 'plain',
    description: 'attention from backend ops, head by head; works on any backend',
    create: () => new PlainAttentionKernel(),
  });
  bind(AttentionKernelContribution).toConstantValue({
    name: 'attend',
    description: "the backend's fused attention when it declares one, else attention from backend ops",
    create: () => new AttendKernel(),
  });
  bind(KVCacheStoreContribution).toConstantValue({
    name: 'contiguous',
    description: 'one preallocated [capacity, kvHeads, headDim] buffer per layer',
    create: () => new ContiguousKvCacheStore(),
  });
  const samplers = [
    ['greedy', 'argmax (the default)'],
    ['temperature', 'softmax(logits / T) draw'],
    ['top-k', 'temperature, then keep the k most likely'],
    ['top-p', 'temperature, then keep the smallest set with probability ≥ p'],
  ] as const;
  for (const [kind, description] of samplers) {
    bind(SamplerContribution).toConstantValue({
      name: kind, description, create: (o) => createSampler({ ...o, kind }),
    });
  }
  bind(TokenizerContribution).toConstantValue({
    name: 'hf',
    description: "Hugging Face tokenizer.json",
    load: (dir) => HfTokenizer.fromDir(dir),
  });
  bind(ImageProcessorContribution).toConstantValue({
    name: 'siglip',
    description: 'SigLIP preprocessing from preprocessor_config.json (PIL-matching bicubic)',
    load: (dir, imageSize) => SiglipImageProcessor.fromDir(dir, imageSize),
  });
});
