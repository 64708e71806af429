/**
 * Tensor names of a PaliGemma checkpoint and the shapes the config implies.
 *
 * Canonical names are the classic Hugging Face ones (transformers < 4.52):
 *   vision_tower.vision_model.*, multi_modal_projector.*, language_model.model.*,
 *   language_model.lm_head.weight
 * Files saved by transformers 4.52–4.x use
 *   model.vision_tower.vision_model.*, model.multi_modal_projector.*, model.language_model.*
 *   (no inner `.model`), lm_head.weight
 * and transformers 5 writes the classic text names with vision_tower.* (no inner
 * `.vision_model`); all of them map onto the canonical names.
 *
 * ```ts
 * canonicalName('model.language_model.layers.0.mlp.up_proj.weight');
 * // → 'language_model.model.layers.0.mlp.up_proj.weight'
 * expectedShapes(config).get('language_model.model.embed_tokens.weight');   // [V, H]
 * ```
 */
import type { PaliGemmaConfig } from '../model/config-types.js';

export const VISION_PREFIX = 'vision_tower.vision_model';
export const TEXT_PREFIX = 'language_model.model';
export const EMBED_TOKENS = `${TEXT_PREFIX}.embed_tokens.weight`;
export const LM_HEAD = 'language_model.lm_head.weight';

/** File name (either scheme) → canonical name; undefined for tensors PaliGemma does not know. */
export function canonicalName(fileName: string): string | undefined {
  // transformers 5 saves the SigLIP tower without its inner `vision_model.`.
  const v5 = /^(model\.)?vision_tower\.(?!vision_model\.)/.exec(fileName);
  if (v5) return `${VISION_PREFIX}.${fileName.slice(v5[0].length)}`;
  if (fileName.startsWith('vision_tower.') || fileName.startsWith('multi_modal_projector.')
    || fileName.startsWith('language_model.')) return fileName;
  if (fileName.startsWith('model.vision_tower.') || fileName.startsWith('model.multi_modal_projector.')) {
    return fileName.slice('model.'.length);
  }
  if (fileName.startsWith('model.language_model.')) {
    return `${TEXT_PREFIX}.${fileName.slice('model.language_model.'.length)}`;
  }
  if (fileName === 'lm_head.weight') return LM_HEAD;
  return undefined;
}

/** Canonical name → the name the newer scheme (transformers ≥ 4.52) writes. */
export function newerName(canonical: string): string {
  if (canonical === LM_HEAD) return 'lm_head.weight';
  if (canonical.startsWith(`${TEXT_PREFIX}.`)) return `model.language_model.${canonical.slice(TEXT_PREFIX.length + 1)}`;
  return `model.${canonical}`;
}

/** Every tensor the model needs, canonical name → shape. lm_head is not listed (see optionalShapes). */
export function expectedShapes(config: PaliGemmaConfig): Map<string, number[]> {
  const m = new Map<string, number[]>();
  const v = config.vision, t = config.text;
  const V = VISION_PREFIX;
  m.set(`${V}.embeddings.patch_embedding.weight`, [v.hiddenSize, v.numChannels, v.patchSize, v.patchSize]);
  m.set(`${V}.embeddings.patch_embedding.bias`, [v.hiddenSize]);
  m.set(`${V}.embeddings.position_embedding.weight`, [config.numImageTokens, v.hiddenSize]);
  for (let i = 0; i < v.numLayers; i++) {
    const L = `${V}.encoder.layers.${i}`;
    for (const n of ['layer_norm1', 'layer_norm2']) {
      m.set(`${L}.${n}.weight`, [v.hiddenSize]);
      m.set(`${L}.${n}.bias`, [v.hiddenSize]);
    }
    for (const p of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) {
      m.set(`${L}.self_attn.${p}.weight`, [v.hiddenSize, v.hiddenSize]);
      m.set(`${L}.self_attn.${p}.bias`, [v.hiddenSize]);
    }
    m.set(`${L}.mlp.fc1.weight`, [v.intermediateSize, v.hiddenSize]);
    m.set(`${L}.mlp.fc1.bias`, [v.intermediateSize]);
    m.set(`${L}.mlp.fc2.weight`, [v.hiddenSize, v.intermediateSize]);
    m.set(`${L}.mlp.fc2.bias`, [v.hiddenSize]);
  }
  m.set(`${V}.post_layernorm.weight`, [v.hiddenSize]);
  m.set(`${V}.post_layernorm.bias`, [v.hiddenSize]);

  m.set('multi_modal_projector.linear.weight', [config.projectionDim, v.hiddenSize]);
  m.set('multi_modal_projector.linear.bias', [config.projectionDim]);

  const H = t.hiddenSize, q = t.numHeads * t.headDim, kv = t.numKvHeads * t.headDim;
  m.set(EMBED_TOKENS, [t.vocabSize, H]);
  for (let i = 0; i < t.numLayers; i++) {
    const L = `${TEXT_PREFIX}.layers.${i}`;
    m.set(`${L}.input_layernorm.weight`, [H]);
    m.set(`${L}.post_attention_layernorm.weight`, [H]);
    m.set(`${L}.self_attn.q_proj.weight`, [q, H]);
    m.set(`${L}.self_attn.k_proj.weight`, [kv, H]);
    m.set(`${L}.self_attn.v_proj.weight`, [kv, H]);
    m.set(`${L}.self_attn.o_proj.weight`, [H, q]);
    m.set(`${L}.mlp.gate_proj.weight`, [t.intermediateSize, H]);
    m.set(`${L}.mlp.up_proj.weight`, [t.intermediateSize, H]);
    m.set(`${L}.mlp.down_proj.weight`, [H, t.intermediateSize]);
    // Gemma 2 (PaliGemma 2) norms the feed-forward block on both sides as well.
    if (t.modelType === 'gemma2') {
      m.set(`${L}.pre_feedforward_layernorm.weight`, [H]);
      m.set(`${L}.post_feedforward_layernorm.weight`, [H]);
    }
  }
  m.set(`${TEXT_PREFIX}.norm.weight`, [H]);
  return m;
}

/** Tensors loaded when the checkpoint has them, canonical name → shape: the untied lm_head. */
export function optionalShapes(config: PaliGemmaConfig): Map<string, number[]> {
  const t = config.text;
  return new Map<string, number[]>([[LM_HEAD, [t.vocabSize, t.hiddenSize]]]);
}

/**
 * The architecture's declared weight list: every canonical name its config can use (needed or
 * optional). A stored tensor outside it is refused by name: it means the files describe another
 * model than the config (e.g. Gemma 2's extra norms under a Gemma config).
 */
export function declaredWeights(config: PaliGemmaConfig): Set<string> {
  return new Set([...expectedShapes(config).keys(), ...optionalShapes(config).keys(), ...ignoredWeights(config)]);
}

/**
 * Tensors the files may hold that the architecture computes but PaliGemma never reads: the
 * SigLIP pooling head when vision_use_head is not false (Hugging Face builds it, then uses the
 * tower's last hidden state). They are accepted and not loaded.
 */
export function ignoredWeights(config: PaliGemmaConfig): string[] {
  if (!config.vision.useHead) return [];
  const H = `${VISION_PREFIX}.head`;
  return [
    `${H}.probe`, `${H}.attention.in_proj_weight`, `${H}.attention.in_proj_bias`,
    `${H}.attention.out_proj.weight`, `${H}.attention.out_proj.bias`,
    `${H}.layernorm.weight`, `${H}.layernorm.bias`,
    `${H}.mlp.fc1.weight`, `${H}.mlp.fc1.bias`, `${H}.mlp.fc2.weight`, `${H}.mlp.fc2.bias`,
  ];
}
