/** Resolved model configuration (Hugging Face defaults already filled in), camelCase. */
import type { DType } from '../interfaces/tensor-backend.js';

export interface VisionConfig {
  hiddenSize: number;          // 1152 in So400m
  intermediateSize: number;    // 4304
  numLayers: number;           // 27
  numHeads: number;            // 16
  patchSize: number;           // 14
  imageSize: number;           // 224
  numChannels: number;         // 3
  layerNormEps: number;        // 1e-6
  /** vision_use_head is not false: the files may hold a SigLIP pooling head, which PaliGemma ignores. */
  useHead?: boolean;
}

export interface TextConfig {
  /** text_config.model_type as written ('gemma', 'gemma2', …); unset when the file leaves it out. */
  modelType?: string;
  hiddenSize: number;          // 2048
  intermediateSize: number;    // 16384
  numLayers: number;           // 18
  numHeads: number;            // 8
  numKvHeads: number;          // 1
  headDim: number;             // 256
  vocabSize: number;           // 257216
  rmsNormEps: number;          // 1e-6
  ropeTheta: number;           // 10000
  maxPositionEmbeddings: number;
  /** Gemma 2 fields, unset for PaliGemma 1. */
  attnLogitSoftcapping?: number;
  finalLogitSoftcapping?: number;
  slidingWindow?: number;
  queryPreAttnScalar?: number;
  /** Gemma 2: per-layer attention kind (text_config.layer_types; default sliding on even layers). */
  layerTypes?: Array<'sliding_attention' | 'full_attention'>;
}

export interface PaliGemmaConfig {
  vision: VisionConfig;
  text: TextConfig;
  projectionDim: number;       // = text.hiddenSize
  imageTokenIndex: number;     // 257152
  /** (imageSize / patchSize)². */
  numImageTokens: number;
  bosTokenId: number;
  eosTokenId: number;
  padTokenId: number;
  /** config.json's torch_dtype, if given. */
  torchDtype?: DType;
}
