/**
 * Safetensors headers and shard indexes read as strictly as the format's own reader: every
 * broken rule is refused with the file, the tensor and the rule named; a property-based fuzz
 * (fast-check) checks the header parser against an independent validator written here.
 */
import { expect } from 'chai';
import fc from 'fast-check';
import { mkdir, readFile, rename, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ReferenceBackend } from '../src/backends/reference/reference-backend.js';
import { PaliGemmaError } from '../src/interfaces/errors.js';
import { loadCheckpoint } from '../src/checkpoint/load-checkpoint.js';
import { SafetensorsFile, parseSafetensorsHeader } from '../src/checkpoint/safetensors.js';
import { findDuplicateKey } from '../src/checkpoint/duplicate-keys.js';
import { rawSafetensors } from './support/safetensors-writer.js';
import { buildTinyCheckpoint, makeTempDir, mqaSpec } from './support/tiny-checkpoint.js';
import { expectUserError } from './support/rejections.js';

function caught(fn: () => unknown): unknown {
  try { fn(); } catch (e) { return e; }
  return undefined;
}


/** Header text + data length → what the parser says (file name 'f.safetensors'). */
function parse(text: string, dataBytes: number) {
  const header = Buffer.from(text, 'utf8');
  return parseSafetensorsHeader('f.safetensors', header, 8 + header.length + dataBytes);
}

function expectRefused(text: string, dataBytes: number, ...parts: string[]): string {
  const e = caught(() => parse(text, dataBytes));
  expect(e, `accepted: ${text}`).to.be.instanceOf(PaliGemmaError);
  const msg = (e as PaliGemmaError).message;
  expect((e as PaliGemmaError).code).to.equal('corrupt_checkpoint');
  expect(msg).to.contain('f.safetensors');
  for (const p of parts) expect(msg).to.contain(p);
  expect(msg).not.to.contain('\n');
  return msg;
}

const t = (dtype: string, shape: number[], begin: number, end: number) => ({ dtype, shape, data_offsets: [begin, end] });

describe('safetensors header: the format reader\'s rules', () => {
  it('accepts a well-formed header, in any key order, with null or string metadata', () => {
    const ok = { b: t('F32', [2], 8, 16), a: t('F32', [2], 0, 8), __metadata__: { format: 'pt' } };
    const { entries, metadata } = parse(JSON.stringify(ok), 16);
    expect([...entries.keys()].sort()).to.deep.equal(['a', 'b']);
    expect(metadata).to.deep.equal({ format: 'pt' });
    expect(parse(JSON.stringify({ __metadata__: null, a: t('U8', [3], 0, 3) }), 3).entries.size).to.equal(1);
    // A scalar has one element; an empty tensor spans no bytes and may sit anywhere.
    expect(parse(JSON.stringify({ s: t('F32', [], 0, 4), e: t('F32', [0, 5], 4, 4) }), 4).entries.size).to.equal(2);
    expect(parse('{}', 0).entries.size).to.equal(0);
  });

  it('refuses a header that is not a JSON object', () => {
    expectRefused('[]', 0, 'not a JSON object');
    expectRefused(' {}', 0, 'not a JSON object');
    expectRefused('"x"', 0, 'not a JSON object');
    expectRefused('{"a": ', 0, 'not valid JSON');
  });

  it('refuses a tensor name (or metadata key) written twice in the text', () => {
    const e = JSON.stringify(t('F32', [1], 0, 4));
    expectRefused(`{"w": ${e}, "w": ${e}}`, 4, 'the header', '"w"', 'twice');
    expectRefused(`{"__metadata__": {"k": "a", "k": "b"}, "w": ${e}}`, 4, '__metadata__', '"k"', 'twice');
    expectRefused(`{"w": {"dtype": "F32", "dtype": "F16", "shape": [1], "data_offsets": [0, 4]}}`, 4, 'tensor w', '"dtype"');
    // Equal after unescaping counts as equal.
    expectRefused(`{"w": ${e}, "\\u0077": ${e}}`, 4, '"w"', 'twice');
  });

  it('refuses tensors that share bytes, fully or in part', () => {
    expectRefused(JSON.stringify({ a: t('F32', [2], 0, 8), b: t('F32', [2], 0, 8) }), 8, 'overlap', 'tensor');
    expectRefused(JSON.stringify({ a: t('F32', [2], 0, 8), b: t('F32', [2], 4, 12) }), 12, 'tensor b', 'overlap tensor a');
  });

  it('refuses holes, a late start and unindexed trailing bytes', () => {
    expectRefused(JSON.stringify({ a: t('F32', [1], 0, 4), b: t('F32', [1], 8, 12) }), 12, 'tensor b', 'hole', '[4, 8)');
    expectRefused(JSON.stringify({ a: t('F32', [1], 4, 8) }), 8, 'tensor a', 'start of the data section');
    expectRefused(JSON.stringify({ a: t('F32', [1], 0, 4) }), 6, '2 trailing bytes', 'tensor a');
    expectRefused('{}', 3, '3 trailing bytes');
  });

  it('refuses a byte span that is not elements × dtype size', () => {
    expectRefused(JSON.stringify({ a: t('F32', [3], 0, 8) }), 8, 'tensor a', 'holds 8 bytes', 'needs 12');
    expectRefused(JSON.stringify({ a: t('F4', [3], 0, 2) }), 2, 'tensor a', 'not a whole number of bytes');
    expectRefused(JSON.stringify({ a: t('F32', [2 ** 40, 2 ** 20], 0, 8) }), 8, 'tensor a', 'too many elements');
  });

  it('refuses bad dtypes, shapes, offsets and metadata values', () => {
    expectRefused(JSON.stringify({ a: t('F33', [1], 0, 4) }), 4, 'tensor a', 'not a safetensors dtype');
    expectRefused(JSON.stringify({ a: t('F32', [-1], 0, 4) }), 4, 'tensor a', 'shape');
    expectRefused(JSON.stringify({ a: t('F32', [1.5], 0, 4) }), 4, 'tensor a', 'shape');
    expectRefused(JSON.stringify({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 0] } }), 4, 'tensor a');
    expectRefused(JSON.stringify({ a: t('F32', [1], 0, 4), __metadata__: { n: 3 } }), 4, '__metadata__.n', 'not a string');
    expectRefused(JSON.stringify({ a: t('F32', [1], 0, 4), __metadata__: ['x'] }), 4, '__metadata__');
    expectRefused(JSON.stringify({ a: t('F32', [1], 0, 4), __metadata__: 'x' }), 4, '__metadata__');
  });
});

// ── property-based fuzz ─────────────────────────────────────────────────────

const DTYPE_BITS: Record<string, number> = { F32: 32, F16: 16, BF16: 16, U8: 8, I64: 64, BOOL: 8, F4: 4 };
const DTYPES = Object.keys(DTYPE_BITS);

/** A header as the list of [key, value] pairs it is written from, so duplicates stay visible. */
interface Draft {
  tensors: { name: string; dtype: unknown; shape: unknown; offsets: unknown }[];
  metadata: [string, unknown][] | null | 'absent' | unknown;
  dataBytes: number;
}

function render(d: Draft): string {
  const parts: string[] = [];
  if (d.metadata !== 'absent') {
    const m = Array.isArray(d.metadata) && d.metadata.every((p) => Array.isArray(p) && p.length === 2)
      ? `{${(d.metadata as [string, unknown][]).map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',')}}`
      : JSON.stringify(d.metadata);
    parts.push(`"__metadata__":${m}`);
  }
  for (const x of d.tensors) {
    parts.push(`${JSON.stringify(x.name)}:${JSON.stringify({ dtype: x.dtype, shape: x.shape, data_offsets: x.offsets })}`);
  }
  return `{${parts.join(',')}}`;
}

/** The format's rules, applied to the draft directly (independent of the parser under test). */
function oracleAccepts(d: Draft): boolean {
  const names = d.tensors.map((x) => x.name);
  if (new Set(names).size !== names.length || names.includes('__metadata__')) return false;
  if (d.metadata !== 'absent' && d.metadata !== null) {
    if (!Array.isArray(d.metadata) || !d.metadata.every((p) => Array.isArray(p) && p.length === 2)) return false;
    const pairs = d.metadata as [string, unknown][];
    if (new Set(pairs.map((p) => p[0])).size !== pairs.length) return false;
    if (!pairs.every((p) => typeof p[1] === 'string')) return false;
  }
  const spans: [bigint, bigint][] = [];
  for (const x of d.tensors) {
    if (typeof x.dtype !== 'string' || !(x.dtype in DTYPE_BITS)) return false;
    if (!Array.isArray(x.shape) || !x.shape.every((n) => Number.isSafeInteger(n) && n >= 0)) return false;
    if (!Array.isArray(x.offsets) || x.offsets.length !== 2 || !x.offsets.every((n) => Number.isSafeInteger(n) && n >= 0)) return false;
    const [b, e] = (x.offsets as number[]).map(BigInt);
    if (e < b) return false;
    const bits = (x.shape as number[]).reduce((a, n) => a * BigInt(n), 1n) * BigInt(DTYPE_BITS[x.dtype]);
    if (bits % 8n !== 0n || bits / 8n !== e - b) return false;
    spans.push([b, e]);
  }
  spans.sort((p, q) => (p[0] < q[0] ? -1 : p[0] > q[0] ? 1 : p[1] < q[1] ? -1 : p[1] > q[1] ? 1 : 0));
  let cursor = 0n;
  for (const [b, e] of spans) {
    if (b !== cursor) return false;
    cursor = e;
  }
  return cursor === BigInt(d.dataBytes);
}

/** A valid draft: tensors laid out back to back in a shuffled key order. */
const validDraft = fc.record({
  tensors: fc.array(fc.record({
    dtype: fc.constantFrom(...DTYPES),
    shape: fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }),
  }), { maxLength: 5 }),
  order: fc.array(fc.nat(), { maxLength: 5 }),
  metadata: fc.oneof(
    fc.constant<'absent'>('absent'), fc.constant(null),
    fc.array(fc.tuple(fc.string({ maxLength: 4 }), fc.string({ maxLength: 4 })), { maxLength: 3 })
      .map((ps) => [...new Map(ps)]),
  ),
}).map(({ tensors, order, metadata }): Draft => {
  let at = 0;
  const out = tensors.map((x, i) => {
    // F4 needs an even element count to fill whole bytes.
    const shape = x.dtype === 'F4' ? [...x.shape, 2] : x.shape;
    const bytes = shape.reduce((a, n) => a * n, 1) * DTYPE_BITS[x.dtype] / 8;
    const r = { name: `t${i}`, dtype: x.dtype, shape, offsets: [at, at + bytes] };
    at += bytes;
    return r;
  });
  for (let i = 0; i < order.length && out.length > 1; i++) {
    const j = order[i] % out.length;
    [out[0], out[j]] = [out[j], out[0]];
  }
  return { tensors: out, metadata, dataBytes: at };
});

/** One change that usually (not always) breaks a rule. */
const mutation = fc.oneof(
  fc.record({ kind: fc.constant('offset'), i: fc.nat(), which: fc.integer({ min: 0, max: 1 }), by: fc.integer({ min: -9, max: 9 }) }),
  fc.record({ kind: fc.constant('shape'), i: fc.nat(), dim: fc.nat(), value: fc.oneof(fc.integer({ min: -2, max: 6 }), fc.constant(1.5), fc.constant('2')) }),
  fc.record({ kind: fc.constant('dtype'), i: fc.nat(), value: fc.oneof(fc.constantFrom(...DTYPES), fc.constant('F33'), fc.constant(7)) }),
  fc.record({ kind: fc.constant('rename'), i: fc.nat(), j: fc.nat() }),
  fc.record({ kind: fc.constant('copy'), i: fc.nat() }),
  fc.record({ kind: fc.constant('data'), by: fc.integer({ min: -5, max: 5 }) }),
  fc.record({ kind: fc.constant('metadata'), value: fc.oneof(fc.constant(7), fc.constant('x'), fc.constant([['k', 1]]), fc.constant([['k', 'a'], ['k', 'b']])) }),
  fc.record({ kind: fc.constant('offsets'), i: fc.nat(), value: fc.oneof(fc.constant([0]), fc.constant('0-4'), fc.constant([0, 4, 8]), fc.constant([-4, 0])) }),
);
type Mutation = typeof mutation extends fc.Arbitrary<infer M> ? M : never;

function mutate(d: Draft, ms: Mutation[]): Draft {
  const x: Draft = { ...d, tensors: d.tensors.map((e) => ({ ...e, shape: structuredClone(e.shape), offsets: structuredClone(e.offsets) })) };
  for (const m of ms) {
    const n = x.tensors.length;
    const pick = (i: number) => x.tensors[i % n];
    switch (m.kind) {
      case 'offset': if (n) { const o = pick(m.i).offsets; if (Array.isArray(o)) o[m.which] = (o[m.which] as number) + m.by; } break;
      case 'shape': if (n) { const s = pick(m.i).shape; if (Array.isArray(s)) { if (s.length) s[m.dim % s.length] = m.value; else s.push(m.value); } } break;
      case 'dtype': if (n) pick(m.i).dtype = m.value; break;
      case 'rename': if (n) pick(m.i).name = pick(m.j).name; break;
      case 'copy': if (n) x.tensors.push({ ...pick(m.i), name: `${pick(m.i).name}c` }); break;
      case 'data': x.dataBytes = Math.max(0, x.dataBytes + m.by); break;
      case 'metadata': x.metadata = m.value; break;
      case 'offsets': if (n) pick(m.i).offsets = m.value; break;
    }
  }
  return x;
}

describe('safetensors header: property-based fuzz', function () {
  this.timeout(20000);

  it('every valid header is accepted with its tensors at their offsets', () => {
    fc.assert(fc.property(validDraft, (d) => {
      expect(oracleAccepts(d)).to.equal(true);
      const text = render(d);
      const { entries } = parse(text, d.dataBytes);
      const dataStart = 8 + Buffer.byteLength(text);
      expect(entries.size).to.equal(d.tensors.length);
      for (const x of d.tensors) {
        const e = entries.get(x.name)!;
        expect([e.begin - dataStart, e.end - dataStart]).to.deep.equal(x.offsets);
        expect(e.shape).to.deep.equal(x.shape);
      }
    }), { numRuns: 400, seed: 20 });
  });

  it('a mutated header is accepted exactly when the format\'s rules accept it, else refused by name', () => {
    let refused = 0, accepted = 0;
    fc.assert(fc.property(validDraft, fc.array(mutation, { minLength: 1, maxLength: 3 }), (d, ms) => {
      const m = mutate(d, ms);
      const text = render(m);
      const want = oracleAccepts(m);
      const e = caught(() => parse(text, m.dataBytes));
      if (want) {
        expect(e, `refused a valid header ${text} (${m.dataBytes} data bytes): ${(e as Error)?.message}`).to.equal(undefined);
        accepted++;
      } else {
        expect(e, `accepted an invalid header ${text} (${m.dataBytes} data bytes)`).to.be.instanceOf(PaliGemmaError);
        expect((e as Error).message).to.match(/^f\.safetensors: /).and.not.contain('\n');
        refused++;
      }
    }), { numRuns: 3000, seed: 2020 });
    // Both outcomes must be exercised, or the property says little.
    expect(refused).to.be.greaterThan(1000);
    expect(accepted).to.be.greaterThan(50);
  });

  it('random byte damage to a header never escapes as a raw error, and what loads obeys the rules', () => {
    fc.assert(fc.property(validDraft, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }), (d, flips) => {
      const bytes = Buffer.from(render(d), 'utf8');
      for (const [at, v] of flips) bytes[at % bytes.length] = v;
      let out;
      try {
        out = parseSafetensorsHeader('f.safetensors', bytes, 8 + bytes.length + d.dataBytes);
      } catch (e) {
        expect(e).to.be.instanceOf(PaliGemmaError);
        return;
      }
      // Accepted: the text is a duplicate-free object whose spans tile the data section.
      const text = bytes.toString('utf8');
      expect(findDuplicateKey(text)).to.equal(undefined);
      const spans = [...out.entries.values()].map((e) => [e.begin - 8 - bytes.length, e.end - 8 - bytes.length]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
      let cursor = 0;
      for (const [b, e] of spans) { expect(b).to.equal(cursor); cursor = e; }
      expect(cursor).to.equal(d.dataBytes);
    }), { numRuns: 1500, seed: 7 });
  });
});

// ── shard index and file layout ─────────────────────────────────────────────

describe('model.safetensors.index.json and the folder layout', function () {
  this.timeout(20000);
  const backend = new ReferenceBackend();

  it('refuses a tensor mapped twice in the index text', async () => {
    const { dir } = await buildTinyCheckpoint(await makeTempDir('pg-idx2-'), { ...mqaSpec(), shards: 2 });
    const indexPath = join(dir, 'model.safetensors.index.json');
    const index = JSON.parse(await readFile(indexPath, 'utf8'));
    const entries = Object.entries(index.weight_map as Record<string, string>);
    const [name, shard] = entries[0];
    const other = entries.find(([, s]) => s !== shard)![1];
    const body = entries.map(([n, s]) => `${JSON.stringify(n)}: ${JSON.stringify(s)}`);
    body.push(`${JSON.stringify(name)}: ${JSON.stringify(other)}`);
    await writeFile(indexPath, `{"metadata": {}, "weight_map": {${body.join(', ')}}}`);
    await expectUserError(loadCheckpoint(dir, backend), 'model.safetensors.index.json', `tensor ${name} twice`);
  });

  it('refuses a tensor stored in a shard the index does not name for it, or not listed at all', async () => {
    const { dir } = await buildTinyCheckpoint(await makeTempDir('pg-idxw-'), { ...mqaSpec(), shards: 2 });
    const indexPath = join(dir, 'model.safetensors.index.json');
    const index = JSON.parse(await readFile(indexPath, 'utf8'));
    const map = index.weight_map as Record<string, string>;
    const name = Object.keys(map)[0];
    const other = Object.values(map).find((s) => s !== map[name])!;
    await writeFile(indexPath, JSON.stringify({ ...index, weight_map: { ...map, [name]: other } }));
    await expectUserError(loadCheckpoint(dir, backend), `tensor ${name}`, other);
    const { [name]: _dropped, ...rest } = map;
    await writeFile(indexPath, JSON.stringify({ ...index, weight_map: rest }));
    await expectUserError(loadCheckpoint(dir, backend), `tensor ${name}`, 'does not list it');
  });

  it('a symlinked weight file into ../../blobs (the Hugging Face cache layout) keeps loading', async () => {
    const root = await makeTempDir('pg-hfcache-');
    const snap = join(root, 'models--x--tiny', 'snapshots', 'abc123');
    const blobs = join(root, 'models--x--tiny', 'blobs');
    await mkdir(blobs, { recursive: true });
    const tiny = await buildTinyCheckpoint(snap, { ...mqaSpec(), shards: 2 });
    const files = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json', 'config.json'];
    for (const [i, f] of files.entries()) {
      await rename(join(snap, f), join(blobs, `blob${i}`));
      await symlink(join('..', '..', 'blobs', `blob${i}`), join(snap, f));
    }
    const ck = await loadCheckpoint(snap, backend);
    try {
      const name = 'language_model.model.norm.weight';
      expect([...await backend.read(ck.weights.get(name)!)]).to.deep.equal([...tiny.weights[name].data]);
    } finally {
      ck.dispose();
    }
  });

  it('a refused file names the file and the tensor when opened from disk', async () => {
    const dir = await makeTempDir('pg-stdisk-');
    const p = join(dir, 'model.safetensors');
    await writeFile(p, rawSafetensors({ a: t('F32', [1], 0, 4), b: t('F32', [1], 0, 4) }, new Uint8Array(4)));
    await expectUserError(SafetensorsFile.open(p), p, 'tensor', 'overlap');
  });
});
