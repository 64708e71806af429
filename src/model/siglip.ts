/**
 * SigLIP vision tower as PaliGemma 1 uses it (Zhai et al., "Sigmoid Loss for Language Image
 * Pre-Training"; Hugging Face SiglipVisionModel without the pooling head):
 * patch conv + learned position embeddings, pre-LN encoder layers with biased linear layers,
 * bidirectional multi-head attention, tanh-GELU MLP, and a final post-layernorm.
 */
import type { AttentionKernel } from '../interfaces/attention-kernel.js';
import type { Tensor, TensorBackend, TensorOps } from '../interfaces/tensor-backend.js';
import type { VisionConfig } from './config-types.js';
import type { ModelWeights } from './model-weights.js';
import { TensorScope } from '../tensor/tensor-scope.js';

const P = 'vision_tower.vision_model';

export class SiglipVisionTower {
  constructor(
    private readonly backend: TensorOps,
    private readonly attention: AttentionKernel,
    private readonly weights: ModelWeights,
    private readonly cfg: VisionConfig,
  ) {}

  /** pixels [C, S, S] → [N, Dv] after post_layernorm, N = (S/P)². */
  forward(pixels: Tensor): Tensor {
    const b = this.backend, w = (n: string) => this.weights.get(n);
    const scope = new TensorScope(b);
    const patches = scope.track(b.patchEmbed(pixels, w(`${P}.embeddings.patch_embedding.weight`),
      w(`${P}.embeddings.patch_embedding.bias`), this.cfg.patchSize));         // [N, Dv]
    let x = b.add(patches, w(`${P}.embeddings.position_embedding.weight`));     // [N, Dv]
    scope.dispose();
    for (let i = 0; i < this.cfg.numLayers; i++) {
      const next = this.layer(x, i);
      b.dispose(x);
      x = next;
    }
    const out = b.layerNorm(x, w(`${P}.post_layernorm.weight`), w(`${P}.post_layernorm.bias`),
      this.cfg.layerNormEps);                                                   // [N, Dv]
    b.dispose(x);
    return out;
  }

  private layer(x: Tensor, i: number): Tensor {
    const b = this.backend, s = new TensorScope(b);
    const L = `${P}.encoder.layers.${i}`;
    const w = (n: string) => this.weights.get(`${L}.${n}`);
    const linear = (h: Tensor, name: string) =>
      s.track(b.matmul(h, w(`${name}.weight`), { transposeB: true, bias: w(`${name}.bias`) }));
    const [n, dv] = x.shape;
    const heads = this.cfg.numHeads, hd = dv / heads;

    const h1 = s.track(b.layerNorm(x, w('layer_norm1.weight'), w('layer_norm1.bias'), this.cfg.layerNormEps));
    const q = s.track(b.reshape(linear(h1, 'self_attn.q_proj'), [n, heads, hd]));   // [N, heads, hd]
    const k = s.track(b.reshape(linear(h1, 'self_attn.k_proj'), [n, heads, hd]));
    const v = s.track(b.reshape(linear(h1, 'self_attn.v_proj'), [n, heads, hd]));
    const attn = s.track(this.attention.attend(b, q, k, v, {
      scale: 1 / Math.sqrt(hd), mask: { kind: 'bidirectional' },
    }));                                                                           // [N, heads, hd]
    const o = linear(s.track(b.reshape(attn, [n, dv])), 'self_attn.out_proj');      // [N, Dv]
    const x2 = s.track(b.add(x, o));                                               // residual

    const h2 = s.track(b.layerNorm(x2, w('layer_norm2.weight'), w('layer_norm2.bias'), this.cfg.layerNormEps));
    const m = linear(s.track(b.gelu(linear(h2, 'mlp.fc1'))), 'mlp.fc2');           // [N, Dv]
    const out = b.add(x2, m);
    s.dispose();
    return out;
  }
}

/** Linear projector: vision features [N, Dv] → image rows [N, projDim] for the decoder. */
export function projectImageFeatures(backend: TensorBackend, weights: ModelWeights, features: Tensor): Tensor {
  return backend.matmul(features, weights.get('multi_modal_projector.linear.weight'), {
    transposeB: true, bias: weights.get('multi_modal_projector.linear.bias'),
  });
}
