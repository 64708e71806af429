import { expect } from 'chai';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ReferenceBackend } from '../src/backends/reference/reference-backend.js';
import { PaliGemmaError } from '../src/interfaces/errors.js';
import { readNpz } from '../src/tasks/npz-reader.js';
import { loadVqVaeDecoderWeights, resolveVaePath } from '../src/tasks/vae-weights.js';
import { VqVaeDecoder } from '../src/tasks/vqvae-decoder.js';
import { encodeNpz, type NpzTensor } from '../src/testing/npz-writer.js';
import { encodeSafetensors } from '../src/tiny-models/safetensors-writer.js';
import { randomVaeTensors, smoothVaeTensors } from '../src/testing/tiny-vae.js';

// ── an independent float64 decoder, written from big_vision's definition in CHW layout ──
type T = Record<string, NpzTensor>;
type Img = { c: number; h: number; w: number; d: Float64Array };

function conv64(x: Img, t: T, name: string): Img {
  const W = t[`${name}.weight`], B = t[`${name}.bias`];
  const [o, i, k] = W.shape;
  const pad = (k - 1) / 2;
  const y: Img = { c: o, h: x.h, w: x.w, d: new Float64Array(o * x.h * x.w) };
  for (let oc = 0; oc < o; oc++) for (let r = 0; r < x.h; r++) for (let q = 0; q < x.w; q++) {
    let s = B.data[oc];
    for (let ic = 0; ic < i; ic++) for (let a = 0; a < k; a++) for (let b = 0; b < k; b++) {
      const rr = r + a - pad, qq = q + b - pad;
      if (rr < 0 || rr >= x.h || qq < 0 || qq >= x.w) continue;
      s += W.data[((oc * i + ic) * k + a) * k + b] * x.d[(ic * x.h + rr) * x.w + qq];
    }
    y.d[(oc * x.h + r) * x.w + q] = s;
  }
  return y;
}

/** Transposed conv as a gather: out(r) takes in((r + p - a) / s) where that is a whole index. */
function convT64(x: Img, t: T, name: string): Img {
  const W = t[`${name}.weight`], B = t[`${name}.bias`];
  const [i, o, k] = W.shape;
  const s = 2, p = 1, H = x.h * 2, Wd = x.w * 2;
  const y: Img = { c: o, h: H, w: Wd, d: new Float64Array(o * H * Wd) };
  for (let oc = 0; oc < o; oc++) for (let r = 0; r < H; r++) for (let q = 0; q < Wd; q++) {
    let acc = B.data[oc];
    for (let a = 0; a < k; a++) {
      const nr = r + p - a;
      if (nr % s !== 0 || nr < 0 || nr / s >= x.h) continue;
      for (let b = 0; b < k; b++) {
        const nq = q + p - b;
        if (nq % s !== 0 || nq < 0 || nq / s >= x.w) continue;
        for (let ic = 0; ic < i; ic++) acc += W.data[((ic * o + oc) * k + a) * k + b] * x.d[(ic * x.h + nr / s) * x.w + nq / s];
      }
    }
    y.d[(oc * H + r) * Wd + q] = acc;
  }
  return y;
}

const relu64 = (x: Img): Img => ({ ...x, d: x.d.map((v) => Math.max(0, v)) });

function decode64(t: T, codes: number[]): Float64Array {
  const E = t['_vq_vae._embedding'];
  const dim = E.shape[1];
  let x: Img = { c: dim, h: 4, w: 4, d: new Float64Array(dim * 16) };
  codes.forEach((code, i) => { for (let c = 0; c < dim; c++) x.d[c * 16 + i] = E.data[code * dim + c]; });
  x = relu64(conv64(x, t, 'decoder.0'));
  for (const b of ['decoder.2.net', 'decoder.3.net']) {
    const y = conv64(relu64(conv64(relu64(conv64(x, t, `${b}.0`)), t, `${b}.2`)), t, `${b}.4`);
    x = { ...y, d: y.d.map((v, j) => v + x.d[j]) };
  }
  for (const u of ['decoder.4', 'decoder.6', 'decoder.8', 'decoder.10']) x = relu64(convT64(x, t, u));
  return conv64(x, t, 'decoder.12').d;
}

describe('tasks: VQ-VAE mask decoder', function () {
  const backend = new ReferenceBackend();
  let dir: string;
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'vae-')); });
  after(async () => { await rm(dir, { recursive: true, force: true }); });

  it('matches an independent float64 implementation on a random-weight vae npz', async () => {
    const tensors = randomVaeTensors(7, { dim: 24 });
    const path = join(dir, 'random.npz');
    await writeFile(path, encodeNpz(tensors));
    const weights = await loadVqVaeDecoderWeights(path);
    expect(weights.codes).to.equal(128);
    expect(weights.dim).to.equal(24);
    const dec = new VqVaeDecoder(backend, weights);
    try {
      for (const codes of [Array.from({ length: 16 }, (_, i) => (i * 37 + 5) % 128), Array.from({ length: 16 }, (_, i) => 127 - i)]) {
        const got = await dec.decode(codes);
        const want = decode64(tensors, codes);
        expect(got.length).to.equal(64 * 64);
        let maxErr = 0, maxAbs = 0, positive = 0;
        for (let i = 0; i < want.length; i++) {
          maxErr = Math.max(maxErr, Math.abs(got[i] - want[i]));
          maxAbs = Math.max(maxAbs, Math.abs(want[i]));
          if (want[i] > 0) positive++;
        }
        // The comparison means something: outputs are neither zero nor all one sign.
        expect(maxAbs).to.be.greaterThan(0.1);
        expect(positive).to.be.within(1, 64 * 64 - 1);
        expect(maxErr / maxAbs).to.be.lessThan(1e-5);
      }
    } finally {
      dec.dispose();
    }
  });

  it('reads a compressed npz and a safetensors conversion to the same result', async () => {
    const tensors = randomVaeTensors(11, { dim: 8, channels: 32 });
    const npz = join(dir, 'c.npz'), st = join(dir, 'c.safetensors');
    await writeFile(npz, encodeNpz(tensors, true));
    await writeFile(st, encodeSafetensors(Object.fromEntries(Object.entries(tensors).map(([k, v]) => [k, { data: v.data, shape: [...v.shape] }]))));
    const codes = Array.from({ length: 16 }, (_, i) => (i * 11) % 128);
    const outs: Float32Array[] = [];
    for (const p of [npz, st]) {
      const dec = new VqVaeDecoder(backend, await loadVqVaeDecoderWeights(p));
      outs.push(await dec.decode(codes));
      dec.dispose();
    }
    expect(Array.from(outs[0])).to.deep.equal(Array.from(outs[1]));
    const want = decode64(tensors, codes);
    for (let i = 0; i < want.length; i += 97) expect(outs[0][i]).to.be.closeTo(want[i], 1e-4 * (1 + Math.abs(want[i])));
  });

  it('the smooth test decoder gives the upsampled 4×4 code grid (codes ≥ 64 inside)', async () => {
    const dec = new VqVaeDecoder(backend, await loadVqVaeDecoderWeights(await writeNpz('smooth.npz', smoothVaeTensors({ dim: 4, channels: 16 }))));
    const codes = [0, 0, 0, 0, 0, 127, 127, 0, 0, 127, 127, 0, 0, 0, 0, 0];
    const m = await dec.decode(codes);
    dec.dispose();
    expect(m[32 * 64 + 32]).to.be.greaterThan(0.4);   // centre: inside
    expect(m[2 * 64 + 2]).to.be.lessThan(-0.4);       // corner: outside
    expect(m[32 * 64 + 2]).to.be.lessThan(0);
  });

  async function writeNpz(name: string, t: T): Promise<string> {
    const p = join(dir, name);
    await writeFile(p, encodeNpz(t));
    return p;
  }

  it('names a missing tensor, a wrong shape and a bad code', async () => {
    const t = randomVaeTensors(3, { dim: 4, channels: 16 });
    const { ['decoder.8.weight']: _, ...missing } = t;
    await writeFile(join(dir, 'missing.npz'), encodeNpz(missing));
    await loadVqVaeDecoderWeights(join(dir, 'missing.npz')).then(() => expect.fail('loaded'), (e) => {
      expect(e).to.be.instanceOf(PaliGemmaError);
      expect(e.message).to.match(/no tensor named decoder\.8\.weight/);
    });
    const wrong = { ...t, 'decoder.2.net.0.weight': { data: new Float32Array(16 * 16 * 9), shape: [16, 16, 9, 1] } };
    await writeFile(join(dir, 'wrong.npz'), encodeNpz(wrong));
    await loadVqVaeDecoderWeights(join(dir, 'wrong.npz')).then(() => expect.fail('loaded'), (e) => {
      expect(e.message).to.match(/decoder\.2\.net\.0\.weight has shape \[16, 16, 9, 1\], expected \[16, 16, 3, 3\]/);
    });
    const dec = new VqVaeDecoder(backend, await loadVqVaeDecoderWeights(await writeNpz('ok.npz', t)));
    await dec.decode([1, 2, 3]).then(() => expect.fail('decoded'), (e) => expect(e.message).to.match(/16 seg codes, got 3/));
    await dec.decode(Array(16).fill(128)).then(() => expect.fail('decoded'), (e) => expect(e.message).to.match(/out of range 0..127/));
    dec.dispose();
  });

  it('refuses a corrupt npz and reports where the weights were looked for', async () => {
    await writeFile(join(dir, 'junk.npz'), new Uint8Array([0x50, 0x4b, 3, 4, 9, 9, 9]));
    await loadVqVaeDecoderWeights(join(dir, 'junk.npz')).then(() => expect.fail('loaded'), (e) => {
      expect(e).to.be.instanceOf(PaliGemmaError);
      expect(e.message).to.match(/junk\.npz/);
    });
    expect(() => readNpz(encodeNpz({ a: { data: new Float32Array(2), shape: [2] } }).subarray(0, 60), 'cut.npz')).to.throw(PaliGemmaError, /cut\.npz/);
    await resolveVaePath(join(dir, 'nope.npz'), undefined).then(() => expect.fail('resolved'), (e) => {
      expect(e.code).to.equal('not_found');
      expect(e.message).to.include(join(dir, 'nope.npz'));
    });
    const saved = process.env.PALIGEMMA_VAE;
    delete process.env.PALIGEMMA_VAE;
    try {
      await resolveVaePath(undefined, dir).then(() => expect.fail('resolved'), (e) => {
        expect(e.message).to.match(/--vae PATH/);
        expect(e.message).to.include(join(dir, 'vae-oid.npz'));
      });
      await writeFile(join(dir, 'vae-oid.npz'), encodeNpz(randomVaeTensors(1, { dim: 4, channels: 16 })));
      expect(await resolveVaePath(undefined, dir)).to.equal(join(dir, 'vae-oid.npz'));
    } finally {
      if (saved !== undefined) process.env.PALIGEMMA_VAE = saved;
    }
  });
});
