import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { maskToRle, pasteMask, resizeMaskBilinear, SOFT_OUTSIDE } from '../src/tasks/mask-paste.js';

const FIXTURE = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'mask-resize', 'cases.json');
const f32 = (b64: string) => { const b = Buffer.from(b64, 'base64'); return new Float32Array(b.buffer, b.byteOffset, b.length / 4); };

describe('tasks: mask paste', () => {
  const fx = JSON.parse(readFileSync(FIXTURE, 'utf8')) as { pillow: string; input: string; cases: Array<{ width: number; height: number; output: string }> };
  const input = f32(fx.input);

  for (const c of fx.cases) {
    it(`resizes 64×64 → ${c.width}×${c.height} as Pillow ${fx.pillow} BILINEAR on mode F`, () => {
      const got = resizeMaskBilinear(input, 64, 64, c.width, c.height);
      const want = f32(c.output);
      expect(got.length).to.equal(want.length);
      let maxErr = 0;
      for (let i = 0; i < want.length; i++) maxErr = Math.max(maxErr, Math.abs(got[i] - want[i]));
      // Same double arithmetic, float32 storage: a few ulps at most.
      expect(maxErr).to.be.lessThan(1e-6);
    });
  }

  it('pastes into the rectangle only, > 0 inside, soft -1 outside', () => {
    const m = new Float32Array(64 * 64).fill(-0.5);
    for (let y = 16; y < 48; y++) for (let x = 16; x < 48; x++) m[y * 64 + x] = 0.8;
    const rect = { x0: 10, y0: 5, x1: 30, y1: 45 };   // 20 wide, 40 high in a 50×60 image
    const { binary, soft } = pasteMask(m, rect, 50, 60);
    let inside = 0;
    for (let y = 0; y < 60; y++) for (let x = 0; x < 50; x++) {
      const i = y * 50 + x;
      const inRect = x >= 10 && x < 30 && y >= 5 && y < 45;
      if (!inRect) { expect(binary[i]).to.equal(0); expect(soft[i]).to.equal(SOFT_OUTSIDE); }
      inside += binary[i];
    }
    expect(binary[25 * 50 + 20]).to.equal(1);   // centre of the rect
    expect(binary[6 * 50 + 11]).to.equal(0);    // rect corner: the mask's border is negative
    // The positive square covers the middle half of each axis: about 10 × 20 pixels.
    expect(inside).to.be.within(180, 230);
  });

  it('run-length encodes row-major, starting with zeros', () => {
    expect(maskToRle(Uint8Array.from([0, 0, 1, 1, 1, 0]))).to.deep.equal([2, 3, 1]);
    expect(maskToRle(Uint8Array.from([1, 1, 0]))).to.deep.equal([0, 2, 1]);
    expect(maskToRle(new Uint8Array(4))).to.deep.equal([4]);
  });
});
