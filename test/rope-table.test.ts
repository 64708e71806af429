/** The shared RoPE table (src/tensor/rope-table.ts) against angles written out here. */
import { expect } from 'chai';
import { ropeTable } from '../src/tensor/rope-table.js';

describe('ropeTable', () => {
  it('is cos/sin of position · θ^(−2i/D) in float64, [T, D/2] row-major', () => {
    const positions = Int32Array.from([1, 2, 977]);
    const theta = 10000, d = 6;
    const { cos, sin } = ropeTable(positions, theta, d);
    expect(cos).to.be.instanceOf(Float64Array);
    expect(cos.length).to.equal(9);
    // i = 0, 1, 2: inverse frequencies 1, 10000^(-1/3), 10000^(-2/3)
    const inv = [1, 1 / Math.cbrt(10000), 1 / Math.cbrt(10000) ** 2];
    positions.forEach((p, t) => inv.forEach((f, i) => {
      expect(cos[t * 3 + i]).to.be.closeTo(Math.cos(p * f), 1e-12);
      expect(sin[t * 3 + i]).to.be.closeTo(Math.sin(p * f), 1e-12);
    }));
    // A large angle (977 rad at i = 0) is taken in float64 as it is.
    expect(sin[6]).to.be.closeTo(Math.sin(977), 1e-12);
  });

  it('no positions, no rows', () => {
    const { cos, sin } = ropeTable(new Int32Array(0), 10000, 4);
    expect(cos.length).to.equal(0);
    expect(sin.length).to.equal(0);
  });
});
