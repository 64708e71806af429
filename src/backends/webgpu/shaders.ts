/**
 * WGSL sources for the WebGPU backend, generated per variant (tile shape, bias or not, head
 * size bucket). Each shader reads its sizes from one uniform struct at binding 0; storage
 * bindings follow in the order the backend passes buffers. Only bindings a variant really uses
 * are declared, because pipelines use the 'auto' layout.
 *
 * Large 1-D problems are dispatched as a 2-D grid of workgroups (at most 65535 per axis), so
 * every flat kernel computes its index as gid.x + gid.y · (num_workgroups.x · WG).
 *
 * 16-bit tensors (f16, bf16) are stored packed, two halves per u32 word, element 2w in the low
 * half of word w. Kernels read them with core WGSL only (no `enable f16`, so every adapter runs
 * them, SwiftShader included): matmul's B and the embedding table directly, everything else
 * after the backend widened it to f32 with widenShader.
 */

/** Threads per workgroup of the flat (one element per thread) kernels. */
export const FLAT_WG = 256;
/** Threads per workgroup of the row-reduction kernels (norms, softmax) and attention. */
export const ROW_WG = 64;

const flatIndex = `
fn flatIndex(gid: vec3u, nwg: vec3u) -> u32 { return gid.x + gid.y * nwg.x * ${FLAT_WG}u; }`;

const flatEntry = `@compute @workgroup_size(${FLAT_WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u)`;

/**
 * tanh without overflow (attention soft-capping): sign(u)·(1 − e^(−2|u|)) / (1 + e^(−2|u|)).
 * A builtin tanh built from exp(2u) turns into NaN for large |u| on some drivers.
 */
const stableTanh = `
fn stableTanh(u: f32) -> f32 {
  let e = exp(-2.0 * abs(u));
  return sign(u) * (1.0 - e) / (1.0 + e);
}`;

// ── 16-bit storage ───────────────────────────────────────────────────────────

/** How a storage binding holds its elements: floats, or 16-bit halves packed two per u32. */
export type StorageKind = 'f32' | 'f16' | 'bf16';

/** The WGSL element type of a storage binding of this kind. */
function elementType(kind: StorageKind): string {
  return kind === 'f32' ? 'f32' : 'u32';
}

/**
 * WGSL `fn <fn>(e: u32) -> f32`: element e of the storage array `arr`, widened exactly. f16
 * through unpack2x16float; bf16 is the high half of a float32, so moving it there is the value.
 */
export function loadFn(fn: string, arr: string, kind: StorageKind): string {
  const body = {
    f32: `return ${arr}[e];`,
    f16: `return unpack2x16float(${arr}[e >> 1u])[e & 1u];`,
    bf16: `let w = ${arr}[e >> 1u];
  return bitcast<f32>(select(w << 16u, w & 0xffff0000u, (e & 1u) == 1u));`,
  }[kind];
  return `
fn ${fn}(e: u32) -> f32 {
  ${body}
}`;
}

/** out[i] = the f32 value of element i of a packed 16-bit array. */
export function widenShader(kind: 'f16' | 'bf16'): string {
  return `
struct Params { n: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
${loadFn('load', 'src', kind)}
${flatIndex}
${flatEntry} {
  let i = flatIndex(gid, nwg);
  if (i >= P.n) { return; }
  out[i] = load(i);
}`;
}

/**
 * out[w] = f16 bits of (x[2w], x[2w + 1]) packed in one word; a missing last element packs as 0.
 * Rounds as pack2x16float does (to nearest on the adapters we know). pack2x16float is undefined
 * outside f16's finite range, so it gets clamped values and a value that rounds past it becomes
 * ±Infinity here, as IEEE conversion (and the checkpoint converters) have it.
 */
export const packF16Shader = `
struct Params { n: u32, words: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
fn overflow(v: f32, bits: u32) -> u32 {
  if (abs(v) >= 65520.0) { return select(0x7c00u, 0xfc00u, v < 0.0); }
  return bits;
}
${flatIndex}
${flatEntry} {
  let w = flatIndex(gid, nwg);
  if (w >= P.words) { return; }
  let lo = x[2u * w];
  var hi = 0.0;
  if (2u * w + 1u < P.n) { hi = x[2u * w + 1u]; }
  let p = pack2x16float(clamp(vec2f(lo, hi), vec2f(-65504.0), vec2f(65504.0)));
  out[w] = overflow(lo, p & 0xffffu) | (overflow(hi, p >> 16u) << 16u);
}`;

// ── elementwise ──────────────────────────────────────────────────────────────

/** out[i] = a[i] op b[i mod nb]: b repeats over a's leading dims. */
/**
 * add/mul with b broadcast onto a: b repeated over a's leading dims ('trailing'), or one b
 * value per row of P.d elements of a ('rows', a [..., 1] reduction).
 */
export function binaryShader(op: 'add' | 'mul', kind: 'trailing' | 'rows' = 'trailing'): string {
  const bi = kind === 'rows' ? 'b[i / P.d]' : 'b[i % P.nb]';
  const expr = op === 'add' ? `a[i] + ${bi}` : `a[i] * ${bi}`;
  return `
struct Params { n: u32, nb: u32, d: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
${flatIndex}
${flatEntry} {
  let i = flatIndex(gid, nwg);
  if (i >= P.n) { return; }
  out[i] = ${expr};
}`;
}

/** The maps of `unary`, and scale by s, tanh-GELU, or fill with s (no input). */
export type UnaryShaderOp = 'scale' | 'gelu' | 'fill' | 'tanh' | 'exp' | 'sigmoid' | 'rsqrt' | 'reciprocal';

/** Unary maps; tanh and sigmoid go through e^(−|v|) so that neither overflows for large |v|. */
export function unaryShader(op: UnaryShaderOp): string {
  const body = {
    scale: 'out[i] = x[i] * P.s;',
    // 0.5·v·(1 + tanh(u)) = v·σ(2u), with σ evaluated from e^(−2|u|) so that the negative side
    // (where 1 + tanh(u) cancels) keeps its relative precision.
    gelu: `let v = x[i];
  let u = 0.7978845608028654 * (v + 0.044715 * v * v * v);
  let e = exp(-2.0 * abs(u));
  out[i] = v * select(e, 1.0, u >= 0.0) / (1.0 + e);`,
    fill: 'out[i] = P.s;',
    tanh: `let v = x[i];
  let e = exp(-2.0 * abs(v));
  out[i] = sign(v) * (1.0 - e) / (1.0 + e);`,
    exp: 'out[i] = exp(x[i]);',
    sigmoid: `let v = x[i];
  let e = exp(-abs(v));
  out[i] = select(e, 1.0, v >= 0.0) / (1.0 + e);`,
    rsqrt: 'out[i] = inverseSqrt(x[i]);',
    reciprocal: 'out[i] = 1.0 / x[i];',
  }[op];
  return `
struct Params { n: u32, s: f32 }
@group(0) @binding(0) var<uniform> P: Params;
${op === 'fill' ? '' : '@group(0) @binding(1) var<storage, read> x: array<f32>;'}
@group(0) @binding(${op === 'fill' ? 1 : 2}) var<storage, read_write> out: array<f32>;
${flatIndex}
${flatEntry} {
  let i = flatIndex(gid, nwg);
  if (i >= P.n) { return; }
  ${body}
}`;
}

// ── matmul ───────────────────────────────────────────────────────────────────

/** A workgroup of wx·wy threads, each computing rm×rn outputs: a (wy·rm)×(wx·rn) tile. */
export interface MatmulTile {
  wx: number;
  wy: number;
  rm: number;
  rn: number;
  /** K panel held in workgroup memory per step. */
  tk: number;
}

/** 64×64 output tiles, 4×4 per thread: the general case. */
export const TILE_LARGE: MatmulTile = { wx: 16, wy: 16, rm: 4, rn: 4, tk: 16 };
/** 8×64 tiles for few rows (decode steps, short prompts): no 64-row tile of mostly padding. */
export const TILE_SKINNY: MatmulTile = { wx: 64, wy: 1, rm: 8, rn: 1, tk: 16 };

/**
 * Tiled C[M, N] = A[M, K] · B (+ bias). B is [K, N], or [N, K] when transposed, stored as `bKind`
 * (packed 16-bit B is widened as its panel is loaded; A and bias are f32). Each step loads
 * an A panel [TM, TK] and a B panel [TK, TN] into workgroup memory (zero-padded at the edges),
 * then every thread accumulates its rm×rn block from them. The per-thread loops are unrolled
 * here, so accumulators are plain scalars a compiler keeps in registers (dynamically indexed
 * private arrays end up in memory on some drivers, SwiftShader among them).
 */
export function matmulShader(tile: MatmulTile, transposeB: boolean, bias: boolean, bKind: StorageKind = 'f32'): string {
  const { wx, wy, rm, rn, tk } = tile;
  const threads = wx * wy, tm = wy * rm, tn = wx * rn;
  const aLoads = Math.ceil((tm * tk) / threads), bLoads = Math.ceil((tk * tn) / threads);
  const range = (n: number) => Array.from({ length: n }, (_, i) => i);
  const guard = (total: number, loads: number, body: string) =>
    (loads * threads > total ? `if (idx < ${total}u) { ${body} }` : body);
  const aPanel = range(aLoads).map((r) => `{
      let idx = tid + ${r * threads}u;
      ${guard(tm * tk, aLoads, `let m = idx / ${tk}u; let k = idx % ${tk}u;
        let gm = row0 + m; let gk = k0 + k;
        var v = 0.0;
        if (gm < P.M && gk < P.K) { v = A[gm * P.K + gk]; }
        As[k * ${tm}u + m] = v;`)}
    }`).join('\n    ');
  // B panel loads: consecutive threads walk the contiguous axis of B in memory.
  const bRead = transposeB
    ? `let n = idx / ${tk}u; let k = idx % ${tk}u;
        let gn = col0 + n; let gk = k0 + k;
        var v = 0.0;
        if (gn < P.N && gk < P.K) { v = loadB(gn * P.K + gk); }`
    : `let k = idx / ${tn}u; let n = idx % ${tn}u;
        let gn = col0 + n; let gk = k0 + k;
        var v = 0.0;
        if (gn < P.N && gk < P.K) { v = loadB(gk * P.N + gn); }`;
  const bPanel = range(bLoads).map((r) => `{
      let idx = tid + ${r * threads}u;
      ${guard(tk * tn, bLoads, `${bRead}
        Bs[k * ${tn}u + n] = v;`)}
    }`).join('\n    ');
  const accDecl = range(rm).map((i) => range(rn).map((j) => `var c${i}_${j} = 0.0;`).join(' ')).join('\n  ');
  const inner = [
    ...range(rm).map((i) => `let a${i} = As[k * ${tm}u + ly + ${i}u];`),
    ...range(rn).map((j) => `let b${j} = Bs[k * ${tn}u + lx + ${j}u];`),
    ...range(rm).flatMap((i) => range(rn).map((j) => `c${i}_${j} += a${i} * b${j};`)),
  ].join('\n      ');
  const store = range(rm).map((i) => `if (row0 + ly + ${i}u < P.M) {
    let o = (row0 + ly + ${i}u) * P.N + col0 + lx;
    ${range(rn).map((j) => `if (col0 + lx + ${j}u < P.N) { C[o + ${j}u] = c${i}_${j}${bias ? ` + bias[col0 + lx + ${j}u]` : ''}; }`).join('\n    ')}
  }`).join('\n  ');
  return `
struct Params { M: u32, N: u32, K: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<${elementType(bKind)}>;
${bias ? '@group(0) @binding(3) var<storage, read> bias: array<f32>;' : ''}
@group(0) @binding(${bias ? 4 : 3}) var<storage, read_write> C: array<f32>;
${loadFn('loadB', 'B', bKind)}

var<workgroup> As: array<f32, ${tk * tm}>;   // [TK][TM]
var<workgroup> Bs: array<f32, ${tk * tn}>;   // [TK][TN]

@compute @workgroup_size(${wx}, ${wy})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let row0 = wid.y * ${tm}u;
  let col0 = wid.x * ${tn}u;
  let tid = lid.y * ${wx}u + lid.x;
  let ly = lid.y * ${rm}u;
  let lx = lid.x * ${rn}u;
  ${accDecl}
  for (var k0 = 0u; k0 < P.K; k0 += ${tk}u) {
    ${aPanel}
    ${bPanel}
    workgroupBarrier();
    for (var k = 0u; k < ${tk}u; k++) {
      ${inner}
    }
    workgroupBarrier();
  }
  ${store}
}`;
}

// ── reductions over the last axis: one workgroup per row ─────────────────────

/** Workgroup tree reduction helpers over ROW_WG partial values. */
const rowReduce = `
var<workgroup> red: array<f32, ${ROW_WG}>;
fn reduceSum(t: u32, v: f32) -> f32 {
  red[t] = v;
  workgroupBarrier();
  for (var s = ${ROW_WG / 2}u; s > 0u; s >>= 1u) {
    if (t < s) { red[t] = red[t] + red[t + s]; }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}
fn reduceMax(t: u32, v: f32) -> f32 {
  red[t] = v;
  workgroupBarrier();
  for (var s = ${ROW_WG / 2}u; s > 0u; s >>= 1u) {
    if (t < s) { red[t] = max(red[t], red[t + s]); }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}`;

const rowEntry = `@compute @workgroup_size(${ROW_WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u)`;

const rowStart = `
  let row = wid.x + wid.y * nwg.x;
  if (row >= P.rows) { return; }
  let t = lid.x;
  let o = row * P.d;`;

/**
 * Row kernels. layerNorm sums x − x[0] (a shift that keeps the mean exact for rows far from 0)
 * and then the squared deviations; rmsNorm scales by (1 + w); softmax subtracts the row max.
 */
export function rowShader(op: 'layerNorm' | 'rmsNorm' | 'softmax' | 'sum' | 'max'): string {
  const io = {
    layerNorm: `@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;`,
    rmsNorm: `@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;`,
    softmax: `@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;`,
    sum: `@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;`,
    max: `@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;`,
  }[op];
  const body = {
    layerNorm: `
  let shift = x[o];
  var s1 = 0.0;
  for (var i = t; i < P.d; i += ${ROW_WG}u) { s1 += x[o + i] - shift; }
  let mean = shift + reduceSum(t, s1) / f32(P.d);
  var s2 = 0.0;
  for (var i = t; i < P.d; i += ${ROW_WG}u) { let c = x[o + i] - mean; s2 += c * c; }
  let inv = 1.0 / sqrt(reduceSum(t, s2) / f32(P.d) + P.eps);
  for (var i = t; i < P.d; i += ${ROW_WG}u) { out[o + i] = (x[o + i] - mean) * inv * w[i] + b[i]; }`,
    rmsNorm: `
  var s2 = 0.0;
  for (var i = t; i < P.d; i += ${ROW_WG}u) { let v = x[o + i]; s2 += v * v; }
  let inv = 1.0 / sqrt(reduceSum(t, s2) / f32(P.d) + P.eps);
  for (var i = t; i < P.d; i += ${ROW_WG}u) { out[o + i] = x[o + i] * inv * (1.0 + w[i]); }`,
    softmax: `
  var m = -3.0e38;
  for (var i = t; i < P.d; i += ${ROW_WG}u) { m = max(m, x[o + i]); }
  let mx = reduceMax(t, m);
  var s = 0.0;
  for (var i = t; i < P.d; i += ${ROW_WG}u) { s += exp(x[o + i] - mx); }
  let inv = 1.0 / reduceSum(t, s);
  for (var i = t; i < P.d; i += ${ROW_WG}u) { out[o + i] = exp(x[o + i] - mx) * inv; }`,
    // reduce: one value per row, out [rows, 1]; each thread's max starts from an element of the
    // row, so a row of −∞ (all masked) reduces to −∞ exactly.
    sum: `
  var s = 0.0;
  for (var i = t; i < P.d; i += ${ROW_WG}u) { s += x[o + i]; }
  let r = reduceSum(t, s);
  if (t == 0u) { out[row] = r; }`,
    max: `
  var m = x[o + min(t, P.d - 1u)];
  for (var i = t; i < P.d; i += ${ROW_WG}u) { m = max(m, x[o + i]); }
  let r = reduceMax(t, m);
  if (t == 0u) { out[row] = r; }`,
  }[op];
  return `
struct Params { rows: u32, d: u32, eps: f32 }
@group(0) @binding(0) var<uniform> P: Params;
${io}
${rowReduce}
${rowEntry} {
${rowStart}
${body}
}`;
}

// ── rope, gather, copies, transpose, im2col ──────────────────────────────────

/** Rotate-half RoPE with a host-computed [T, D/2, 2] (cos, sin) table. */
export const ropeShader = `
struct Params { n: u32, h: u32, half: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> cs: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
${flatIndex}
${flatEntry} {
  let idx = flatIndex(gid, nwg);           // over T · H · D/2
  if (idx >= P.n) { return; }
  let i = idx % P.half;
  let th = idx / P.half;                   // t · H + h
  let t = th / P.h;
  let o = th * 2u * P.half;
  let c = cs[(t * P.half + i) * 2u];
  let s = cs[(t * P.half + i) * 2u + 1u];
  let x1 = x[o + i];
  let x2 = x[o + i + P.half];
  out[o + i] = x1 * c - x2 * s;
  out[o + i + P.half] = x2 * c + x1 * s;
}`;

/** out[t, :] = table[ids[t], :], the table stored as `kind` (16-bit rows are widened). */
export function gatherShader(kind: StorageKind): string {
  return `
struct Params { n: u32, h: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> table: array<${elementType(kind)}>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
${loadFn('load', 'table', kind)}
${flatIndex}
${flatEntry} {
  let i = flatIndex(gid, nwg);
  if (i >= P.n) { return; }
  out[i] = load(ids[i / P.h] * P.h + i % P.h);
}`;
}

/**
 * Strided block copy: `outer` blocks of `inner` contiguous elements,
 * dst[dstOff + o·dstStride + r] = src[srcOff + o·srcStride + r]. Slices and concat use it.
 */
export const stridedCopyShader = `
struct Params { n: u32, inner: u32, srcStride: u32, srcOff: u32, dstStride: u32, dstOff: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
${flatIndex}
${flatEntry} {
  let i = flatIndex(gid, nwg);
  if (i >= P.n) { return; }
  let o = i / P.inner;
  let r = i % P.inner;
  dst[P.dstOff + o * P.dstStride + r] = src[P.srcOff + o * P.srcStride + r];
}`;

/** Max rank transpose handles. */
export const MAX_RANK = 8;

/** General permutation: shape is the output's, strides the input stride of each output axis. */
export const transposeShader = `
struct Params { n: u32, rank: u32, pad0: u32, pad1: u32, shape: array<vec4u, 2>, strides: array<vec4u, 2> }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
${flatIndex}
${flatEntry} {
  let i = flatIndex(gid, nwg);
  if (i >= P.n) { return; }
  var rem = i;
  var src = 0u;
  for (var d = i32(P.rank) - 1; d >= 0; d--) {
    let size = P.shape[d / 4][d % 4];
    src += (rem % size) * P.strides[d / 4][d % 4];
    rem /= size;
  }
  out[i] = x[src];
}`;

/** Patches of pixels [C, H, W] as rows [(H/P)·(W/P), C·P·P] in (channel, y, x) order. */
export const im2colShader = `
struct Params { n: u32, c: u32, h: u32, w: u32, p: u32, gw: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> px: array<f32>;
@group(0) @binding(2) var<storage, read_write> cols: array<f32>;
${flatIndex}
${flatEntry} {
  let i = flatIndex(gid, nwg);
  if (i >= P.n) { return; }
  let k = P.c * P.p * P.p;
  let pi = i / k;
  let r = i % k;
  let ci = r / (P.p * P.p);
  let y = (r / P.p) % P.p;
  let xx = r % P.p;
  let py = pi / P.gw;
  let pxi = pi % P.gw;
  cols[i] = px[ci * P.h * P.w + (py * P.p + y) * P.w + pxi * P.p + xx];
}`;

// ── attention ────────────────────────────────────────────────────────────────

/** Keys per block of the attention kernel (one per thread). */
export const ATTN_BLOCK = ROW_WG;

/** Mask kinds as the attention shader numbers them. */
export const MASK_KIND = { bidirectional: 0, causal: 1, prefixLm: 2 } as const;

/**
 * Fused attention with online softmax (Milakov & Gimelshein; FlashAttention's recurrence). One
 * workgroup per (query row, query head). Keys are visited in blocks of ATTN_BLOCK: each thread
 * scores one key, the block max and sum come from workgroup reductions, and the running output
 * (each thread owns headDim/ATTN_BLOCK of its dims) is rescaled by exp(m_old − m_new). Only one
 * block of scores ever exists, never the [Tq, Tk] matrix. Visibility is evaluated per key from
 * the mask uniforms (the definition in src/attention/attention-mask.ts); the visited key range is
 * also clipped to the visible span, which is contiguous for every mask kind.
 *
 * `dims` is the number of head dims each thread owns: ceil(headDim / ATTN_BLOCK).
 */
export function attentionShader(dims: number): string {
  const qCap = dims * ATTN_BLOCK;
  return `
struct Params {
  tq: u32, hq: u32, hkv: u32, d: u32,
  kvLength: u32, queryOffset: u32, maskKind: u32, prefixLength: u32,
  window: u32, scale: f32, softCap: f32,
}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

var<workgroup> qs: array<f32, ${qCap}>;
var<workgroup> ps: array<f32, ${ATTN_BLOCK}>;
${rowReduce}
${stableTanh}

const NEG = -3.0e38;

// Same rule as keyVisible (attention-mask.ts): the bidirectional prefix wins over the window.
fn visible(qi: u32, j: u32) -> bool {
  if (P.maskKind == 2u && qi < P.prefixLength && j < P.prefixLength) { return true; }
  if (P.window > 0u && qi >= j + P.window) { return false; }
  switch P.maskKind {
    case 0u: { return true; }
    case 1u: { return j <= qi; }
    default: { return j < P.prefixLength || j <= qi; }
  }
}

@compute @workgroup_size(${ATTN_BLOCK})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let h = wid.x;
  let i = wid.y;
  let t = lid.x;
  let g = h / (P.hq / P.hkv);
  let qi = P.queryOffset + i;
  let qo = (i * P.hq + h) * P.d;
  for (var x = t; x < P.d; x += ${ATTN_BLOCK}u) { qs[x] = q[qo + x]; }

  // The visible keys form one span [lo, hi) for every mask kind.
  var hi = P.kvLength;
  if (P.maskKind == 1u) { hi = min(hi, qi + 1u); }
  if (P.maskKind == 2u) { hi = min(hi, max(qi + 1u, P.prefixLength)); }
  var lo = 0u;
  let inPrefix = P.maskKind == 2u && qi < P.prefixLength;
  if (P.window > 0u && qi + 1u > P.window && !inPrefix) { lo = qi + 1u - P.window; }
  workgroupBarrier();

  var m = NEG;
  var l = 0.0;
  var acc: array<f32, ${dims}>;
  let kvStride = P.hkv * P.d;
  for (var j0 = lo; j0 < hi; j0 += ${ATTN_BLOCK}u) {
    let j = j0 + t;
    var s = NEG;
    let ok = j < hi && visible(qi, j);
    if (ok) {
      let ko = j * kvStride + g * P.d;
      var dot = 0.0;
      for (var x = 0u; x < P.d; x++) { dot += qs[x] * k[ko + x]; }
      s = dot * P.scale;
      if (P.softCap > 0.0) { s = P.softCap * stableTanh(s / P.softCap); }
    }
    let mNew = max(m, reduceMax(t, s));
    var p = 0.0;
    if (ok) { p = exp(s - mNew); }
    ps[t] = p;
    let corr = exp(m - mNew);
    l = l * corr + reduceSum(t, p);       // reduceSum's barriers also publish ps
    let count = min(${ATTN_BLOCK}u, hi - j0);
    for (var r = 0u; r < ${dims}u; r++) {
      let x = t + r * ${ATTN_BLOCK}u;
      if (x < P.d) {
        var a = acc[r] * corr;
        var vo = j0 * kvStride + g * P.d + x;
        for (var jj = 0u; jj < count; jj++) {
          a += ps[jj] * v[vo];
          vo += kvStride;
        }
        acc[r] = a;
      }
    }
    m = mNew;
    workgroupBarrier();                    // ps is rewritten by the next block
  }
  var inv = 0.0;
  if (l > 0.0) { inv = 1.0 / l; }
  for (var r = 0u; r < ${dims}u; r++) {
    let x = t + r * ${ATTN_BLOCK}u;
    if (x < P.d) { out[qo + x] = acc[r] * inv; }
  }
}`;
}
