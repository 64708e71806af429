/** The shared shape rules of the TensorBackend ops (src/tensor/op-shapes.ts). */
import { expect } from 'chai';
import {
  attentionDims, checkBroadcast, checkReshape, checkVector, checkWriteRows, concatShape, embeddingDims,
  matmulDims, patchEmbedDims, ropeDims, sizeOf, sliceShape, transposeShape,
} from '../src/tensor/op-shapes.js';

/** Asserts that `f` throws a message containing every one of `parts`. */
function rejects(f: () => unknown, ...parts: string[]): void {
  let message: string | undefined;
  try {
    f();
  } catch (e) {
    message = (e as Error).message;
  }
  if (message === undefined) expect.fail(`expected a throw naming ${parts.join(', ')}`);
  for (const p of parts) expect(message, message).to.include(p);
}

describe('op shapes', function () {
  it('sizeOf multiplies the dims (1 for a scalar, 0 for an empty dim)', function () {
    expect(sizeOf([])).to.equal(1);
    expect(sizeOf([7])).to.equal(7);
    expect(sizeOf([2, 3, 4])).to.equal(24);
    expect(sizeOf([5, 0, 3])).to.equal(0);
  });

  describe('matmulDims', function () {
    it('accepts [M, K]·[K, N], [M, K]·[N, K]ᵀ and a bias of N', function () {
      expect(matmulDims([2, 3], [3, 4])).to.deep.equal({ m: 2, k: 3, n: 4 });
      expect(matmulDims([2, 3], [4, 3], true)).to.deep.equal({ m: 2, k: 3, n: 4 });
      expect(matmulDims([2, 3], [4, 3], true, 4)).to.deep.equal({ m: 2, k: 3, n: 4 });
      expect(matmulDims([1, 0], [0, 5], false, 5)).to.deep.equal({ m: 1, k: 0, n: 5 });
    });
    it('rejects operands that are not 2-D', function () {
      rejects(() => matmulDims([2, 3, 1], [3, 4]), 'matmul', '[2, 3, 1]', '[3, 4]');
      rejects(() => matmulDims([2, 3], [3]), 'matmul', '[2, 3]', '[3]');
    });
    it('rejects inner sizes that differ', function () {
      rejects(() => matmulDims([2, 3], [4, 5]), 'matmul', '[2, 3]', '[4, 5]');
      rejects(() => matmulDims([2, 3], [3, 4], true), 'matmul', '[2, 3]', '[3, 4]ᵀ');
    });
    it('rejects a bias whose size is not N', function () {
      rejects(() => matmulDims([2, 3], [3, 4], false, 3), 'matmul bias', '3', '4');
    });
  });

  describe('checkBroadcast', function () {
    it('accepts the same shape, trailing dims and a scalar', function () {
      expect(() => checkBroadcast('add', [2, 3, 4], [2, 3, 4])).not.to.throw();
      expect(() => checkBroadcast('add', [2, 3, 4], [3, 4])).not.to.throw();
      expect(() => checkBroadcast('mul', [2, 3, 4], [4])).not.to.throw();
      expect(() => checkBroadcast('mul', [2, 3], [])).not.to.throw();
    });
    it('rejects leading dims, mismatched dims and a higher rank', function () {
      rejects(() => checkBroadcast('add', [2, 3, 4], [2, 3]), 'add', '[2, 3]', '[2, 3, 4]');
      rejects(() => checkBroadcast('mul', [2, 3], [5]), 'mul', '[5]', '[2, 3]');
      rejects(() => checkBroadcast('add', [3], [2, 3]), 'add', '[2, 3]', '[3]');
    });
  });

  describe('checkVector', function () {
    it('accepts n elements', function () {
      expect(() => checkVector('layerNorm weight', 8, 8)).not.to.throw();
    });
    it('rejects another size, naming what and both sizes', function () {
      rejects(() => checkVector('rmsNorm weight', 7, 8), 'rmsNorm weight', '7', '8');
    });
  });

  describe('ropeDims', function () {
    it('accepts [T, H, D] with T positions and an even D', function () {
      expect(ropeDims([3, 2, 8], 3)).to.deep.equal({ t: 3, h: 2, d: 8 });
      expect(ropeDims([0, 2, 8], 0)).to.deep.equal({ t: 0, h: 2, d: 8 });
    });
    it('rejects another rank, a position count other than T and an odd D', function () {
      rejects(() => ropeDims([3, 16], 3), 'rope', '[3, 16]');
      rejects(() => ropeDims([3, 2, 8], 2), 'rope', '2 positions', '3 rows');
      rejects(() => ropeDims([3, 2, 7], 3), 'rope', '7');
    });
  });

  describe('embeddingDims', function () {
    it('accepts a [V, H] table and ids in [0, V)', function () {
      expect(embeddingDims([10, 4], Int32Array.of(0, 9, 3))).to.deep.equal({ v: 10, h: 4 });
      expect(embeddingDims([10, 4], [])).to.deep.equal({ v: 10, h: 4 });
    });
    it('rejects a table that is not 2-D', function () {
      rejects(() => embeddingDims([10, 4, 2], [0]), 'embedding', '[10, 4, 2]');
    });
    it('rejects ids outside the vocabulary or not integers', function () {
      rejects(() => embeddingDims([10, 4], Int32Array.of(10)), 'token id 10', '10');
      rejects(() => embeddingDims([10, 4], Int32Array.of(-1)), 'token id -1', '10');
      rejects(() => embeddingDims([10, 4], [1.5]), 'token id 1.5', '10');
    });
  });

  describe('concatShape', function () {
    it('sums the axis and keeps the other dims', function () {
      expect(concatShape([[2, 3], [2, 5]], 1)).to.deep.equal([2, 8]);
      expect(concatShape([[2, 3], [4, 3], [1, 3]], 0)).to.deep.equal([7, 3]);
      expect(concatShape([[2, 3, 4]], 2)).to.deep.equal([2, 3, 4]);
    });
    it('rejects no tensors', function () {
      rejects(() => concatShape([], 0), 'concat');
    });
    it('rejects an axis out of range or not an integer', function () {
      rejects(() => concatShape([[2, 3]], 2), 'concat', 'axis 2', 'rank 2');
      rejects(() => concatShape([[2, 3]], -1), 'concat', 'axis -1');
      rejects(() => concatShape([[2, 3]], 0.5), 'concat', 'axis 0.5');
    });
    it('rejects shapes that differ off the axis or in rank', function () {
      rejects(() => concatShape([[2, 3], [4, 3]], 1), 'concat', '[4, 3]', '[2, 3]');
      rejects(() => concatShape([[2, 3], [2, 3, 1]], 0), 'concat', '[2, 3, 1]', '[2, 3]');
    });
  });

  describe('sliceShape', function () {
    it('returns the shape with end − start rows on the axis', function () {
      expect(sliceShape([5, 3], 0, 1, 4)).to.deep.equal([3, 3]);
      expect(sliceShape([5, 3], 1, 0, 3)).to.deep.equal([5, 3]);
      expect(sliceShape([5, 3], 1, 2, 2)).to.deep.equal([5, 0]);
    });
    it('rejects an axis out of range', function () {
      rejects(() => sliceShape([5, 3], 2, 0, 1), 'slice', 'axis 2', '[5, 3]');
      rejects(() => sliceShape([5, 3], -1, 0, 1), 'slice', 'axis -1', '[5, 3]');
    });
    it('rejects a range outside the axis, reversed or not integers', function () {
      rejects(() => sliceShape([5, 3], 0, 2, 6), 'slice', '[2, 6)', '[5, 3]');
      rejects(() => sliceShape([5, 3], 0, -1, 2), 'slice', '[-1, 2)', '[5, 3]');
      rejects(() => sliceShape([5, 3], 0, 3, 2), 'slice', '[3, 2)', '[5, 3]');
      rejects(() => sliceShape([5, 3], 0, 0.5, 2), 'slice', '[0.5, 2)', '[5, 3]');
    });
  });

  describe('checkReshape', function () {
    it('accepts the same element count', function () {
      expect(() => checkReshape([2, 3, 4], [6, 4])).not.to.throw();
      expect(() => checkReshape([1], [])).not.to.throw();
    });
    it('rejects another element count', function () {
      rejects(() => checkReshape([2, 3], [4, 2]), 'reshape', '[2, 3]', '[4, 2]', '6', '8');
    });
  });

  describe('transposeShape', function () {
    it('permutes the dims', function () {
      expect(transposeShape([2, 3, 4], [2, 0, 1])).to.deep.equal([4, 2, 3]);
      expect(transposeShape([2, 3], [0, 1])).to.deep.equal([2, 3]);
    });
    it('rejects a perm that is not a permutation of the rank', function () {
      rejects(() => transposeShape([2, 3, 4], [1, 0]), 'transpose', '[1,0]', 'rank 3');
      rejects(() => transposeShape([2, 3], [0, 0]), 'transpose', '[0,0]', 'rank 2');
      rejects(() => transposeShape([2, 3], [0, 2]), 'transpose', '[0,2]', 'rank 2');
      rejects(() => transposeShape([2, 3], [0.5, 1]), 'transpose', '[0.5,1]', 'rank 2');
    });
  });

  describe('checkWriteRows', function () {
    it('accepts rows of the same size that fit at the offset', function () {
      expect(() => checkWriteRows([8, 2, 3], [3, 2, 3], 5)).not.to.throw();
      expect(() => checkWriteRows([8, 6], [1, 2, 3], 0)).not.to.throw();
      expect(() => checkWriteRows([8, 6], [0, 6], 8)).not.to.throw();
    });
    it('rejects another row size, rows past the end and a bad offset', function () {
      rejects(() => checkWriteRows([8, 6], [2, 5], 0), 'writeRows', '[2, 5]', '[8, 6]', 'row 0');
      rejects(() => checkWriteRows([8, 6], [3, 6], 6), 'writeRows', '[3, 6]', '[8, 6]', 'row 6');
      rejects(() => checkWriteRows([8, 6], [1, 6], -1), 'writeRows', '[1, 6]', '[8, 6]', 'row -1');
      rejects(() => checkWriteRows([8, 6], [1, 6], 1.5), 'writeRows', '[1, 6]', '[8, 6]', 'row 1.5');
    });
  });

  describe('patchEmbedDims', function () {
    it('returns the sizes and the patch grid', function () {
      expect(patchEmbedDims([3, 28, 14], [16, 3, 14, 14], 16, 14))
        .to.deep.equal({ c: 3, h: 28, w: 14, o: 16, gh: 2, gw: 1 });
    });
    it('rejects pixels not [C, H, W] or a weight not [O, C, P, P]', function () {
      rejects(() => patchEmbedDims([28, 28], [16, 3, 14, 14], 16, 14), 'patchEmbed', '[28, 28]', '[16, 3, 14, 14]');
      rejects(() => patchEmbedDims([3, 28, 28], [16, 588], 16, 14), 'patchEmbed', '[3, 28, 28]', '[16, 588]');
    });
    it('rejects channels, patch size or an image that does not divide into patches', function () {
      rejects(() => patchEmbedDims([1, 28, 28], [16, 3, 14, 14], 16, 14), 'patchEmbed', '[16, 3, 14, 14]', '[1, 28, 28]');
      rejects(() => patchEmbedDims([3, 28, 28], [16, 3, 7, 7], 16, 14), 'patchEmbed', '[16, 3, 7, 7]', '[3, 28, 28]', '14');
      rejects(() => patchEmbedDims([3, 30, 28], [16, 3, 14, 14], 16, 14), 'patchEmbed', '[16, 3, 14, 14]', '[3, 30, 28]');
    });
    it('rejects a bias of other than O elements', function () {
      rejects(() => patchEmbedDims([3, 28, 28], [16, 3, 14, 14], 15, 14), 'patchEmbed bias', '15', '16');
    });
  });

  describe('attentionDims', function () {
    it('accepts grouped-query heads and kvLength in 1..Tk (default Tk)', function () {
      expect(attentionDims([4, 8, 16], [10, 2, 16], [10, 2, 16]))
        .to.deep.equal({ tq: 4, hq: 8, d: 16, tk: 10, hkv: 2, kvLength: 10 });
      expect(attentionDims([1, 8, 16], [10, 8, 16], [10, 8, 16], 1))
        .to.deep.equal({ tq: 1, hq: 8, d: 16, tk: 10, hkv: 8, kvLength: 1 });
      expect(attentionDims([1, 8, 16], [10, 8, 16], [10, 8, 16], undefined).kvLength).to.equal(10);
    });
    it('rejects operands that are not 3-D', function () {
      rejects(() => attentionDims([4, 128], [10, 2, 16], [10, 2, 16]), 'attention', '[4, 128]', '[10, 2, 16]');
      rejects(() => attentionDims([4, 8, 16], [10, 2, 16], [10, 32]), 'attention', '[4, 8, 16]', '[10, 32]');
    });
    it('rejects k/v that do not fit q or each other', function () {
      rejects(() => attentionDims([4, 8, 16], [10, 2, 8], [10, 2, 16]), 'attention', '[4, 8, 16]', '[10, 2, 8]', '[10, 2, 16]');
      rejects(() => attentionDims([4, 8, 16], [10, 2, 16], [9, 2, 16]), 'attention', '[10, 2, 16]', '[9, 2, 16]');
      rejects(() => attentionDims([4, 8, 16], [10, 2, 16], [10, 4, 16]), 'attention', '[10, 2, 16]', '[10, 4, 16]');
      rejects(() => attentionDims([4, 8, 16], [10, 2, 16], [10, 2, 8]), 'attention', '[10, 2, 16]', '[10, 2, 8]');
    });
    it('rejects query heads that do not share kv heads evenly', function () {
      rejects(() => attentionDims([4, 8, 16], [10, 3, 16], [10, 3, 16]), 'attention', '8 query heads', '3 kv heads');
      rejects(() => attentionDims([4, 8, 16], [10, 0, 16], [10, 0, 16]), 'attention', '8 query heads', '0 kv heads');
    });
    it('rejects kvLength outside 1..Tk', function () {
      rejects(() => attentionDims([1, 8, 16], [10, 2, 16], [10, 2, 16], 0), 'attention', 'kvLength 0', '10');
      rejects(() => attentionDims([1, 8, 16], [10, 2, 16], [10, 2, 16], 11), 'attention', 'kvLength 11', '10');
      rejects(() => attentionDims([1, 8, 16], [10, 2, 16], [10, 2, 16], 2.5), 'attention', 'kvLength 2.5', '10');
    });
  });
});
