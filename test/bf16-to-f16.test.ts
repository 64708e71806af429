/**
 * bf16 → f16-with-patches by table (src/backends/onnx/bf16-to-f16.ts), over every one of the
 * 65536 bf16 bit patterns, against float64 decodings written here: an element keeps f16 bits
 * exactly when those bits decode to its value, and is patched (with its exact value) exactly
 * when no f16 holds it.
 */
import { expect } from 'chai';
import { bf16ToPatchedF16 } from '../src/backends/onnx/bf16-to-f16.js';

/** bf16 bits → value, float64 math. */
function bf16Value(b: number): number {
  const sign = b & 0x8000 ? -1 : 1, e = (b >> 7) & 0xff, m = b & 0x7f;
  if (e === 0xff) return m ? NaN : sign * Infinity;
  return e === 0 ? sign * m * 2 ** -133 : sign * (1 + m / 128) * 2 ** (e - 127);
}

/** f16 bits → value, float64 math. */
function f16Value(h: number): number {
  const sign = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  if (e === 0x1f) return m ? NaN : sign * Infinity;
  return e === 0 ? sign * m * 2 ** -24 : sign * (1 + m / 1024) * 2 ** (e - 15);
}

/** Whether some f16 holds v exactly: 0, ±Inf, or |v| ≤ 65504 with 11 significant bits at most (none below 2^-24). */
function f16Holds(v: number): boolean {
  if (v === 0 || Math.abs(v) === Infinity) return true;
  if (Number.isNaN(v) || Math.abs(v) > 65504) return false;
  const e = Math.max(-14, Math.floor(Math.log2(Math.abs(v))));
  return Number.isInteger(v * 2 ** (10 - e));
}

describe('bf16 → f16 with patches (onnx storage of BF16 weights)', function () {
  it('keeps every value f16 holds as its f16 bits and patches exactly the others', function () {
    const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const p = bf16ToPatchedF16(all, Infinity)!;
    const patched = new Set(p.index);
    let kept = 0;
    for (let b = 0; b < 65536; b++) {
      const v = bf16Value(b);
      if (Number.isNaN(v)) continue;                  // NaN payloads: either way is exact
      if (patched.has(b)) {
        expect(f16Holds(v), `bf16 0x${b.toString(16)} = ${v} was patched`).to.equal(false);
        expect(p.half[b]).to.equal(0);
      } else {
        expect(Object.is(f16Value(p.half[b]), v), `bf16 0x${b.toString(16)} = ${v} → f16 0x${p.half[b].toString(16)}`).to.equal(true);
        kept++;
      }
    }
    p.index.forEach((i, j) => { if (!Number.isNaN(bf16Value(i))) expect(p.values[j]).to.equal(Math.fround(bf16Value(i))); });
    // f16's normal range holds 30 binades × 128 mantissas × 2 signs, plus zeros, infinities and some subnormals.
    expect(kept).to.be.above(30 * 128 * 2);
    expect(p.index.length).to.be.above(0);
  });

  it('gives up past maxPatches (the caller widens to float32)', function () {
    const bits = new Uint16Array([0x3f80, 0x0001, 0x7f7f, 0x3f80]);   // 1, a tiny and a huge value
    expect(bf16ToPatchedF16(bits, 1)).to.equal(undefined);
    const p = bf16ToPatchedF16(bits, 2)!;
    expect(p.index).to.deep.equal([1, 2]);
    expect(f16Value(p.half[0])).to.equal(1);
  });
});
