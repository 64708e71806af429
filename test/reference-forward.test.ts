import { expect } from 'chai';
import {
  attention, embedNormalizer, gemmaRmsNorm, geluTanh, layerNorm, linear, prefixLmAllow, referenceForward,
  referenceLogSoftmax, resolveReferenceDims, ropeRotateHalf, roundToDtype, type RefWeights,
} from './support/reference-forward.js';
import { mulberry32 } from './support/tiny-checkpoint.js';

const f64 = (...xs: number[]) => Float64Array.from(xs);

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what = 'value'): void {
  expect(actual.length, `${what}: length`).to.equal(expected.length);
  for (let i = 0; i < expected.length; i++) {
    expect(Math.abs(actual[i] - expected[i]), `${what}[${i}]: ${actual[i]} vs ${expected[i]}`).to.be.at.most(tol);
  }
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>, from = 0, to = a.length): number {
  let m = 0;
  for (let i = from; i < to; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const rng = mulberry32;

/** Uniform values in [−scale, scale). */
function randomArray(next: () => number, n: number, scale: number): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = (next() * 2 - 1) * scale;
  return a;
}

describe('reference forward (float64 oracle)', () => {
  describe('gemmaRmsNorm', () => {
    it('matches a hand-computed 2×4 example, scaling by (1 + w)', () => {
      const x = f64(1, 2, 3, 4, /* row 2 */ -2, 0, 2, 0); // [2, 4]
      const w = f64(0, 0.5, -0.5, 1);
      // Row 1: mean(x²) = 30/4 = 7.5, rms = 2.7386127875258306; x·(1+w) = [1, 3, 1.5, 8].
      // Row 2: mean(x²) = 8/4 = 2,    rms = 1.4142135623730951; x·(1+w) = [−2, 0, 1, 0].
      const expected = [
        0.36514837167011077, 1.0954451150103321, 0.5477225575051661, 2.9211869733608857,
        -1.4142135623730951, 0, 0.7071067811865475, 0,
      ];
      expectClose(gemmaRmsNorm(x, w, 0), expected, 1e-12, 'eps 0');
      expectClose(gemmaRmsNorm(x, w, 1e-6), expected, 1e-6, 'eps 1e-6');
    });

    it('adds eps inside the square root', () => {
      // mean(x²) = 1e-6, so with eps = 1e-6 the divisor is sqrt(2e-6): 1e-3 / sqrt(2e-6) = 1/√2.
      expectClose(gemmaRmsNorm(f64(1e-3, -1e-3), f64(0, 0), 1e-6), [Math.SQRT1_2, -Math.SQRT1_2], 1e-12);
      expectClose(gemmaRmsNorm(f64(0, 0), f64(0, 0), 1e-6), [0, 0], 0);
    });
  });

  describe('layerNorm', () => {
    it('uses the biased variance, then weight and bias', () => {
      // mean 2.5, biased variance 1.25, std 1.118033988749895 → [−1.3416…, −0.4472…, 0.4472…, 1.3416…].
      const y = layerNorm(f64(1, 2, 3, 4), f64(1, 2, 1, 1), f64(0, 0, 1, -1), 0);
      expectClose(y, [-1.3416407864998738, -0.8944271909999159, 1.4472135954999579, 0.3416407864998738], 1e-12);
    });

    it('normalises every row on its own', () => {
      const y = layerNorm(f64(1, 3, /* row 2 */ 10, 10), f64(1, 1), f64(0, 0), 1e-6);
      expectClose(y, [-1, 1, 0, 0], 1e-6);
    });
  });

  describe('geluTanh', () => {
    it('matches known values of the tanh approximation', () => {
      expect(geluTanh(0)).to.equal(0);
      expect(geluTanh(1)).to.be.closeTo(0.8411919906082768, 1e-12);
      expect(geluTanh(-1)).to.be.closeTo(-0.15880800939172324, 1e-12);
      expect(geluTanh(2)).to.be.closeTo(1.9545976940871754, 1e-9);
      expect(geluTanh(0.5)).to.be.closeTo(0.34571400982514394, 1e-9);
      expect(geluTanh(10)).to.be.closeTo(10, 1e-12);
      expect(geluTanh(-10)).to.be.closeTo(0, 1e-12);
    });

    it('differs from the exact erf GELU (0.8413447 at 1)', () => {
      expect(Math.abs(geluTanh(1) - 0.8413447460685429)).to.be.greaterThan(1e-4);
    });
  });

  describe('ropeRotateHalf', () => {
    const x = f64(1, 2, 3, 4); // one head, hd = 4: pairs (0, 2) and (1, 3)

    it('is the identity at position 0', () => {
      expectClose(ropeRotateHalf(x, [0], 1, 4, 10000), x, 0);
    });

    it('rotates dim pairs (i, i + hd/2) by position·theta^(−2i/hd)', () => {
      // Pair (0, 2): angle 1. Pair (1, 3): angle 10000^(−1/2) = 0.01.
      // cos 1 = 0.5403023058681398, sin 1 = 0.8414709848078965,
      // cos 0.01 = 0.9999500004166653, sin 0.01 = 0.009999833334166664.
      const expected = [
        1 * 0.5403023058681398 - 3 * 0.8414709848078965, // -1.98411064855555
        2 * 0.9999500004166653 - 4 * 0.009999833334166664, // 1.959900667496664
        3 * 0.5403023058681398 + 1 * 0.8414709848078965, // 2.462377902412316
        4 * 0.9999500004166653 + 2 * 0.009999833334166664, // 4.019799668334994
      ];
      expectClose(ropeRotateHalf(x, [1], 1, 4, 10000), expected, 1e-12);
      expectClose(expected, [-1.98411064855555, 1.959900667496664, 2.462377902412316, 4.019799668334994], 1e-12);
    });

    it('treats each head and each position separately', () => {
      // Two positions × two heads, hd = 2 (a single pair, inv_freq 1): angle = position.
      const y = ropeRotateHalf(f64(1, 0, 0, 1, /* pos 2 */ 1, 0, 0, 1), [0, Math.PI / 2], 2, 2, 10000);
      expectClose(y, [1, 0, 0, 1, /* rotated by 90° */ 0, 1, -1, 0], 1e-12);
    });

    it('makes q·k depend only on the position difference', () => {
      const next = rng(7);
      const q = randomArray(next, 8, 1);
      const k = randomArray(next, 8, 1);
      const dot = (m: number, n: number) => {
        const a = ropeRotateHalf(q, [m], 1, 8, 10000);
        const b = ropeRotateHalf(k, [n], 1, 8, 10000);
        return a.reduce((s, v, i) => s + v * b[i], 0);
      };
      expect(dot(3, 1)).to.be.closeTo(dot(8, 6), 1e-12);
      expect(dot(3, 1)).not.to.be.closeTo(dot(3, 2), 1e-6);
    });
  });

  describe('attention', () => {
    it('a query matching one key returns that key’s value row', () => {
      // hd = 2, one head. Scores: 40/√2 ≈ 28.3 for key 1, 0 for the others → weight 1 − 2e-12.
      const q = f64(40, 0); // [1, 2]
      const k = f64(0, 0, /* */ 1, 0, /* */ 0, 0); // [3, 2]
      const v = f64(1, 2, /* */ 3, 4, /* */ 5, 6); // [3, 2]
      expectClose(attention(q, k, v, 1, 1, 2, () => true), [3, 4], 1e-9);
    });

    it('averages values when all scores tie, and respects the mask', () => {
      const q = f64(0, 0);
      const k = f64(1, 2, 3, 4, 5, 6);
      const v = f64(1, 2, 3, 4, 5, 6);
      expectClose(attention(q, k, v, 1, 1, 2, () => true), [3, 4], 1e-12);
      expectClose(attention(q, k, v, 1, 1, 2, (_i, j) => j !== 2), [2, 3], 1e-12);
      expectClose(attention(f64(40, 0), f64(0, 0, 1, 0, 0, 0), v, 1, 1, 2, (_i, j) => j !== 1), [3, 4], 1e-12);
    });

    it('scales scores by head_dim^−0.5', () => {
      // Two keys with scores 2/√2·s vs 0 → softmax weight σ(√2·s) on key 0.
      const q = f64(1, 1);
      const k = f64(1, 1, 0, 0);
      const v = f64(1, 0, 0, 0);
      const w = 1 / (1 + Math.exp(-Math.SQRT2));
      expectClose(attention(q, k, v, 1, 1, 2, () => true), [w, 0], 1e-12);
    });

    it('maps query heads to kv heads in groups: heads 0,1 → kv 0; heads 2,3 → kv 1', () => {
      // 4 query heads, 2 kv heads, hd = 2, one query, two keys.
      const q = f64(40, 0, 40, 0, 40, 0, 40, 0); // [1, 4·2]: every head looks along dim 0
      const k = f64(
        1, 0, /* kv1 */ 0, 0, // key 0: kv0 matches, kv1 does not
        0, 0, /* kv1 */ 1, 0, // key 1: kv1 matches, kv0 does not
      ); // [2, 2·2]
      const v = f64(
        1, 2, /* kv1 */ 5, 6, // key 0
        3, 4, /* kv1 */ 7, 8, // key 1
      ); // [2, 2·2]
      const out = attention(q, k, v, 4, 2, 2, () => true); // [1, 4·2]
      expectClose(out, [1, 2, 1, 2, 7, 8, 7, 8], 1e-9);
    });

    it('rejects a head count not divisible by the kv heads, and a query that sees nothing', () => {
      expect(() => attention(new Float64Array(6), new Float64Array(4), new Float64Array(4), 3, 2, 1, () => true)).to.throw();
      expect(() => attention(f64(1), f64(1), f64(1), 1, 1, 1, () => false)).to.throw(/no key/);
    });

    describe('prefix-LM mask', () => {
      const allow = prefixLmAllow(2); // positions 0, 1 prefix; 2, 3 suffix

      it('is bidirectional inside the prefix and causal after it', () => {
        const table = [0, 1, 2, 3].map((i) => [0, 1, 2, 3].map((j) => (allow(i, j) ? 1 : 0)));
        expect(table).to.deep.equal([
          [1, 1, 0, 0],
          [1, 1, 0, 0],
          [1, 1, 1, 0],
          [1, 1, 1, 1],
        ]);
      });

      it('a prefix output changes with a later prefix token but not with a suffix token', () => {
        const next = rng(11);
        const hd = 4;
        const q = randomArray(next, 4 * hd, 1);
        const k = randomArray(next, 4 * hd, 1);
        const v = randomArray(next, 4 * hd, 1);
        const base = attention(q, k, v, 1, 1, hd, allow);
        const change = (row: number) => {
          const k2 = k.slice(); const v2 = v.slice();
          for (let d = 0; d < hd; d++) { k2[row * hd + d] += 0.5; v2[row * hd + d] += 0.5; }
          return attention(q, k2, v2, 1, 1, hd, allow);
        };
        const laterPrefix = change(1);
        const suffix = change(2);
        const lastSuffix = change(3);
        expect(maxAbsDiff(base, laterPrefix, 0, hd), 'row 0 vs later prefix token').to.be.greaterThan(1e-3);
        expect(maxAbsDiff(base, suffix, 0, 2 * hd), 'prefix rows vs suffix token').to.equal(0);
        expect(maxAbsDiff(base, suffix, 2 * hd, 3 * hd), 'row 2 sees itself').to.be.greaterThan(1e-3);
        expect(maxAbsDiff(base, lastSuffix, 0, 3 * hd), 'rows 0–2 vs a later suffix token').to.equal(0);
      });
    });
  });

  describe('referenceLogSoftmax', () => {
    it('matches hand values and is stable for large logits', () => {
      // logsumexp([1, 2, 3]) = 3 + ln(1 + e^−1 + e^−2) = 3.4076059644443806.
      expectClose(referenceLogSoftmax(f64(1, 2, 3)), [-2.4076059644443806, -1.4076059644443806, -0.4076059644443806], 1e-12);
      expectClose(referenceLogSoftmax(f64(1001, 1002, 1003)), [-2.4076059644443806, -1.4076059644443806, -0.4076059644443806], 1e-9);
    });
  });

  describe('embedding scale', () => {
    it('rounds sqrt(hidden) to the requested dtype', () => {
      expect(embedNormalizer(2048, 'f32')).to.equal(Math.fround(Math.sqrt(2048)));
      expect(embedNormalizer(2048, 'bf16')).to.equal(45.25); // 45.2548…, spacing 0.25
      expect(embedNormalizer(2048, 'f16')).to.equal(45.25); // spacing 1/32: 1448.15/32 → 1448/32
      expect(embedNormalizer(3072, 'bf16')).to.equal(55.5); // 55.4256…, spacing 0.25
      expect(embedNormalizer(3072, 'f16')).to.equal(55.4375); // spacing 1/32: 1773.6 → 1774
      expect(embedNormalizer(2304, 'bf16')).to.equal(48);
    });

    it('rounds ties to even and overflows f16 past 65504', () => {
      expect(roundToDtype(1 + 2 ** -8, 'bf16')).to.equal(1);
      expect(roundToDtype(1 + 3 * 2 ** -8, 'bf16')).to.equal(1 + 2 ** -6);
      expect(roundToDtype(1 + 2 ** -11, 'f16')).to.equal(1);
      expect(roundToDtype(-(1 + 3 * 2 ** -11), 'f16')).to.equal(-(1 + 2 ** -9));
      expect(roundToDtype(65519, 'f16')).to.equal(65504);
      expect(roundToDtype(65520, 'f16')).to.equal(Infinity);
      expect(roundToDtype(2 ** -24, 'f16')).to.equal(2 ** -24); // smallest f16 subnormal
      expect(roundToDtype(2 ** -26, 'f16')).to.equal(0);
    });
  });

  describe('whole model (tiny random checkpoint)', () => {
    // Vision: C 3, S 8, P 4 → N 4 patches; Dv 16, 2 heads, Iv 24, 2 layers.
    // Text:   H 32, 4 heads over 2 kv heads of 8, I 48, 2 layers, V 40 with the image token last.
    const C = 3, S = 8, P = 4, N = 4, DV = 16, IV = 24;
    const H = 32, NH = 4, NKV = 2, HD = 8, I = 48, V = 40, IMAGE = 39;
    const config = {
      model_type: 'paligemma',
      image_token_index: IMAGE,
      projection_dim: H,
      text_config: {
        model_type: 'gemma', hidden_size: H, intermediate_size: I, num_attention_heads: NH, num_key_value_heads: NKV,
        head_dim: HD, num_hidden_layers: 2, vocab_size: V,
      },
      vision_config: {
        model_type: 'siglip_vision_model', hidden_size: DV, intermediate_size: IV, num_attention_heads: 2,
        num_hidden_layers: 2, patch_size: P, image_size: S, projection_dim: H,
      },
    };

    function buildWeights(seed: number): RefWeights {
      const next = rng(seed);
      const w: RefWeights = {};
      const put = (name: string, shape: number[], scale: number, offset = 0) => {
        const n = shape.reduce((a, b) => a * b, 1);
        const data = new Float32Array(n);
        for (let i = 0; i < n; i++) data[i] = offset + (next() * 2 - 1) * scale;
        w[name] = { data, shape };
      };
      const v = 'vision_tower.vision_model.';
      put(`${v}embeddings.patch_embedding.weight`, [DV, C, P, P], 0.15);
      put(`${v}embeddings.patch_embedding.bias`, [DV], 0.1);
      put(`${v}embeddings.position_embedding.weight`, [N, DV], 0.5);
      for (let l = 0; l < 2; l++) {
        const p = `${v}encoder.layers.${l}.`;
        put(`${p}layer_norm1.weight`, [DV], 0.2, 1); put(`${p}layer_norm1.bias`, [DV], 0.1);
        put(`${p}layer_norm2.weight`, [DV], 0.2, 1); put(`${p}layer_norm2.bias`, [DV], 0.1);
        for (const proj of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) {
          put(`${p}self_attn.${proj}.weight`, [DV, DV], 0.4); put(`${p}self_attn.${proj}.bias`, [DV], 0.1);
        }
        put(`${p}mlp.fc1.weight`, [IV, DV], 0.4); put(`${p}mlp.fc1.bias`, [IV], 0.1);
        put(`${p}mlp.fc2.weight`, [DV, IV], 0.3); put(`${p}mlp.fc2.bias`, [DV], 0.1);
      }
      put(`${v}post_layernorm.weight`, [DV], 0.2, 1); put(`${v}post_layernorm.bias`, [DV], 0.1);
      put('multi_modal_projector.linear.weight', [H, DV], 0.4);
      put('multi_modal_projector.linear.bias', [H], 0.1);
      const t = 'language_model.model.';
      put(`${t}embed_tokens.weight`, [V, H], 0.3);
      for (let l = 0; l < 2; l++) {
        const p = `${t}layers.${l}.`;
        put(`${p}input_layernorm.weight`, [H], 0.2);
        put(`${p}post_attention_layernorm.weight`, [H], 0.2);
        put(`${p}self_attn.q_proj.weight`, [NH * HD, H], 0.3);
        put(`${p}self_attn.k_proj.weight`, [NKV * HD, H], 0.3);
        put(`${p}self_attn.v_proj.weight`, [NKV * HD, H], 0.3);
        put(`${p}self_attn.o_proj.weight`, [H, NH * HD], 0.2);
        put(`${p}mlp.gate_proj.weight`, [I, H], 0.3);
        put(`${p}mlp.up_proj.weight`, [I, H], 0.3);
        put(`${p}mlp.down_proj.weight`, [H, I], 0.2);
      }
      put(`${t}norm.weight`, [H], 0.2);
      return w;
    }

    function image(seed: number): Float32Array {
      const next = rng(seed);
      return Float32Array.from({ length: C * S * S }, () => next() * 2 - 1);
    }

    const weights = buildWeights(1);
    const pixels = image(2);
    // 4 image tokens, bos, 3 prompt tokens, "\n" → prefix of 9; then 3 suffix tokens.
    const ids = [IMAGE, IMAGE, IMAGE, IMAGE, 2, 10, 11, 12, 5, 20, 21, 22];
    const T = ids.length;
    const PREFIX = 9;
    const base = referenceForward(weights, config, pixels, ids, PREFIX);
    const rowsDiff = (a: Float64Array, b: Float64Array, from: number, to: number) => maxAbsDiff(a, b, from * V, to * V);

    it('resolves sizes from weights and config', () => {
      const dims = resolveReferenceDims(weights, config);
      expect(dims).to.include({
        channels: C, imageSize: S, patchSize: P, numPatches: N, visionHidden: DV, visionIntermediate: IV,
        visionHeads: 2, visionHeadDim: 8, visionLayers: 2, visionEps: 1e-6,
        hidden: H, intermediate: I, vocab: V, heads: NH, kvHeads: NKV, headDim: HD, textLayers: 2,
        rmsEps: 1e-6, ropeTheta: 10000, imageTokenId: IMAGE, tiedLmHead: true,
      });
    });

    it('returns finite outputs of the right shapes', () => {
      expect(base.logits.length).to.equal(T * V);
      expect(base.visionOut.length).to.equal(N * DV);
      expect(base.imageFeatures.length).to.equal(N * H);
      expect(base.hidden.length).to.equal(T * H);
      for (const [name, arr] of Object.entries(base)) {
        expect((arr as Float64Array).every(Number.isFinite), `${name} finite`).to.equal(true);
      }
      const row = base.logits.subarray((T - 1) * V, T * V);
      expect(Math.max(...row) - Math.min(...row)).to.be.greaterThan(1e-3);
      const lp = referenceLogSoftmax(row);
      expect(lp.reduce((s, x) => s + Math.exp(x), 0)).to.be.closeTo(1, 1e-12);
    });

    it('imageFeatures is the projector applied to visionOut', () => {
      const again = linear(base.visionOut, weights['multi_modal_projector.linear.weight'], weights['multi_modal_projector.linear.bias']);
      expectClose(base.imageFeatures, again, 0);
    });

    it('is deterministic', () => {
      const again = referenceForward(weights, config, pixels, ids, PREFIX);
      expect(maxAbsDiff(base.logits, again.logits)).to.equal(0);
    });

    it('changing the image changes the logits of text positions', () => {
      const other = referenceForward(weights, config, image(3), ids, PREFIX);
      expect(maxAbsDiff(base.visionOut, other.visionOut)).to.be.greaterThan(1e-3);
      expect(rowsDiff(base.logits, other.logits, 4, 9), 'prompt positions').to.be.greaterThan(1e-4);
      expect(rowsDiff(base.logits, other.logits, 9, T), 'suffix positions').to.be.greaterThan(1e-4);
    });

    it('prefix positions ignore the suffix but see later prefix tokens', () => {
      const suffixChanged = ids.slice(); suffixChanged[10] = 30;
      const s = referenceForward(weights, config, pixels, suffixChanged, PREFIX);
      expect(rowsDiff(base.logits, s.logits, 0, PREFIX), 'prefix rows').to.equal(0);
      expect(rowsDiff(base.logits, s.logits, 9, 10), 'suffix row before the change').to.equal(0);
      expect(rowsDiff(base.logits, s.logits, 10, T), 'suffix rows from the change').to.be.greaterThan(1e-4);

      const promptChanged = ids.slice(); promptChanged[7] = 30;
      const p = referenceForward(weights, config, pixels, promptChanged, PREFIX);
      expect(rowsDiff(base.logits, p.logits, 0, 1), 'first image position').to.be.greaterThan(1e-4);
      expect(rowsDiff(base.logits, p.logits, 4, 5), 'bos position').to.be.greaterThan(1e-4);
      expect(maxAbsDiff(base.visionOut, p.visionOut)).to.equal(0);
    });

    it('with prefixLength 0 the whole sequence is causal', () => {
      const causal = referenceForward(weights, config, pixels, ids, 0);
      const later = ids.slice(); later[7] = 30;
      const causalLater = referenceForward(weights, config, pixels, later, 0);
      expect(rowsDiff(causal.logits, causalLater.logits, 0, 7)).to.equal(0);
      expect(rowsDiff(causal.logits, causalLater.logits, 7, 8)).to.be.greaterThan(1e-4);
    });

    it('uses lm_head when present, the tied embedding otherwise', () => {
      const embed = weights['language_model.model.embed_tokens.weight'];
      const tiedCopy = referenceForward({ ...weights, 'language_model.lm_head.weight': embed }, config, pixels, ids, PREFIX);
      expect(maxAbsDiff(base.logits, tiedCopy.logits)).to.equal(0);
      const head = { data: embed.data.map((x) => -x), shape: embed.shape };
      const untied = referenceForward({ ...weights, 'language_model.lm_head.weight': head }, config, pixels, ids, PREFIX);
      expectClose(untied.logits, base.logits.map((x) => -x), 1e-12);
    });

    it('scales text embeddings by sqrt(H) in the chosen dtype, image rows not at all', () => {
      // sqrt(32) = 5.656854…: f32 5.6568542, bf16 5.65625.
      const bf16 = referenceForward(weights, config, pixels, ids, PREFIX, { embedScaleDtype: 'bf16' });
      expect(maxAbsDiff(base.logits, bf16.logits)).to.be.greaterThan(1e-7);
      expect(maxAbsDiff(base.imageFeatures, bf16.imageFeatures)).to.equal(0);
      // Image-only sequence (all prefix): the embedding scale never enters.
      const imgIds = [IMAGE, IMAGE, IMAGE, IMAGE];
      const a = referenceForward(weights, config, pixels, imgIds, 4);
      const b = referenceForward(weights, config, pixels, imgIds, 4, { embedScaleDtype: 'f16' });
      expect(maxAbsDiff(a.logits, b.logits)).to.equal(0);
    });

    /** A copy of `w` with the named tensors set to zero. */
    function zeroed(w: RefWeights, names: string[]): RefWeights {
      const out = { ...w };
      for (const name of names) out[name] = { data: new Float32Array(w[name].data.length), shape: w[name].shape };
      return out;
    }

    it('vision: patches in row-major grid order, [Dv, C, P, P] kernel layout, position row per patch', () => {
      // Zeroing out_proj and fc2 (weights and biases) turns every encoder layer into the identity,
      // leaving visionOut = post_layernorm(conv(patch) + bias + position row).
      const v = 'vision_tower.vision_model.';
      const names: string[] = [];
      for (let l = 0; l < 2; l++) {
        for (const m of ['self_attn.out_proj', 'mlp.fc2']) names.push(`${v}encoder.layers.${l}.${m}.weight`, `${v}encoder.layers.${l}.${m}.bias`);
      }
      const w = zeroed(weights, names);
      // One-hot kernel: output channel o reads the single pixel (c, py, px) = (o % 3, ⌊o/4⌋, o % 4).
      const kernel = new Float32Array(DV * C * P * P);
      for (let o = 0; o < DV; o++) kernel[((o * C + (o % 3)) * P + Math.floor(o / 4)) * P + (o % 4)] = 1;
      w[`${v}embeddings.patch_embedding.weight`] = { data: kernel, shape: [DV, C, P, P] };
      const bias = w[`${v}embeddings.patch_embedding.bias`].data;
      const pos = w[`${v}embeddings.position_embedding.weight`].data;

      const pre = new Float64Array(N * DV); // [N, Dv]
      for (let gy = 0; gy < 2; gy++) {
        for (let gx = 0; gx < 2; gx++) {
          const n = gy * 2 + gx; // row-major patch index
          for (let o = 0; o < DV; o++) {
            const pixel = pixels[((o % 3) * S + gy * P + Math.floor(o / 4)) * S + gx * P + (o % 4)];
            pre[n * DV + o] = pixel + bias[o] + pos[n * DV + o];
          }
        }
      }
      const expected = layerNorm(pre, w[`${v}post_layernorm.weight`].data, w[`${v}post_layernorm.bias`].data, 1e-6);
      const out = referenceForward(w, config, pixels, ids, PREFIX);
      expectClose(out.visionOut, expected, 1e-12, 'visionOut');
    });

    it('decoder input: image rows are the features unscaled, text rows embed·fround(√H)', () => {
      // Zeroing o_proj and down_proj makes every decoder layer the identity, so
      // hidden = rmsnorm(merged input). A large eps (1) keeps the norm sensitive to scale.
      const t = 'language_model.model.';
      const names: string[] = [];
      for (let l = 0; l < 2; l++) names.push(`${t}layers.${l}.self_attn.o_proj.weight`, `${t}layers.${l}.mlp.down_proj.weight`);
      const w = zeroed(weights, names);
      const cfg = { ...config, text_config: { ...config.text_config, rms_norm_eps: 1 } };
      const out = referenceForward(w, cfg, pixels, ids, PREFIX);
      const embed = w[`${t}embed_tokens.weight`].data;
      const merged = new Float64Array(T * H); // [T, H]
      for (let s = 0; s < T; s++) {
        for (let d = 0; d < H; d++) {
          merged[s * H + d] = s < N ? out.imageFeatures[s * H + d] : embed[ids[s] * H + d] * Math.fround(Math.sqrt(H));
        }
      }
      const expected = gemmaRmsNorm(merged, w[`${t}norm.weight`].data, 1);
      expectClose(out.hidden, expected, 1e-12, 'hidden');
      // The unscaled reading differs measurably from one that also scales the image rows.
      const scaled = merged.slice();
      for (let i = 0; i < N * H; i++) scaled[i] *= Math.sqrt(H);
      expect(maxAbsDiff(out.hidden, gemmaRmsNorm(scaled, w[`${t}norm.weight`].data, 1))).to.be.greaterThan(1e-3);
    });

    it('rejects inputs that do not fit the model', () => {
      expect(() => referenceForward(weights, config, pixels, ids.slice(1), PREFIX - 1)).to.throw(/image tokens/);
      expect(() => referenceForward(weights, config, pixels, [...ids, V], PREFIX)).to.throw(/outside/);
      expect(() => referenceForward(weights, config, pixels.subarray(1), ids, PREFIX)).to.throw(/pixelValues/);
      expect(() => referenceForward(weights, config, pixels, ids, T + 1)).to.throw(/prefixLength/);
      const badConfig = { ...config, text_config: { ...config.text_config, hidden_size: 64 } };
      expect(() => referenceForward(weights, badConfig, pixels, ids, PREFIX)).to.throw(/hidden_size/);
      const noHeadDim = { ...config, text_config: { ...config.text_config, head_dim: undefined } };
      expect(() => referenceForward(weights, noHeadDim, pixels, ids, PREFIX)).to.throw(/q_proj/); // default 256
    });
  });
});
