/**
 * The WebAssembly SIMD kernels behind the onnx backend's 16-bit weights: few-row products
 * y[r, n] = Σ_k x[r, k] · W[n, k] for W stored as IEEE half or bfloat16 bits [N, K], read
 * straight from the bits, and widening to float32 (for onnxruntime's many-row products and
 * the embedding gather). A product reads the bits (half the bytes of float32, and no widened
 * copy). onnxruntime's CPU provider has no half-precision Gemm on x86 and widens the whole weight with a Cast on every call, which is
 * what made decoding a 16-bit checkpoint slower than decoding a float32 one; a decode step is
 * bound by reading weights, so reading 2 bytes per weight instead of 4 (+4 written, +4 read
 * again for the Cast) is the whole gain.
 *
 * bfloat16 → float32 is the bits moved to the top half of a 32-bit lane (one shift or mask).
 * Half → float32, exactly, for every finite value: with h the 16 bits placed in the top half
 * of a 32-bit lane (x = h << 16), an arithmetic shift right by 3 and a mask
 * 0x8fffe000 leave the sign in bit 31 and the 15 exponent and mantissa bits at bits 27..13,
 * which read as a float32 are the value times 2⁻¹¹² (normal and subnormal halves alike, since
 * a half subnormal lands on a float32 normal); one multiply by 2¹¹² (exact) finishes. Infinity
 * and NaN halves would come out finite, so a weight holding one is never placed in the half
 * memory (`hasSpecial16` finds them).
 *
 * Arithmetic: each output is a float32 sum in 8 or 16 interleaved partial sums (f32x4
 * accumulators), combined at the end; the rounding differs from onnxruntime's Gemm only by
 * summation order (both accumulate in float32).
 */
import { encodeModule, FnBuilder } from '../reference/wasm-encoder.js';

/** Most rows of x one call computes (one accumulator pair per row). */
export const GEMV16_MAX_ROWS = 4;

// i32 bit patterns of the constants (as signed 32-bit integers).
const SIGN_AND_MAGNITUDE = 0x8fffe000 | 0;
const TWO_POW_112 = (112 + 127) << 23;
const F16_EXPONENT = 0x7c00;

/** Which four of the eight 16-bit values in a v128 one widening takes (see widenLanes). */
type Lanes = 'lo' | 'hi';

/** The 16-bit formats: IEEE half, or bfloat16 (the top half of a float32). */
export type Half = 'f16' | 'bf16';

/**
 * Widens four of the eight 16-bit values in local `v` (values 0..3 for 'lo', 4..7 for 'hi') to
 * float32 into local `into`; needs the locals `halfConstants` sets. With `pairs`, it takes the
 * even values for 'lo' and the odd ones for 'hi' instead (one bit operation each, where the
 * in-order widening takes two); the caller orders x to match (pairOrder).
 * Without `scaled`, f16 values come out times 2⁻¹¹² (the caller scaled x by 2¹¹² instead).
 */
function widenLanes(f: FnBuilder, format: Half, lanes: Lanes, into: string, pairs = false, scaled = true): void {
  if (pairs) {
    // Value 2i is the low half of 32-bit lane i (shift it up), value 2i+1 the high half (clear
    // the low one): `lo` gets the even values and `hi` the odd ones of the eight, each at the
    // top of its lane.
    if (lanes === 'lo') f.get('v').i32(16).simd('i32x4Shl');
    else f.get('v').get('high').simd('v128And');
  } else {
    // In order: widen lanes 0..3 (or 4..7) to 32 bits, then move them to the top half.
    f.get('v').simd(lanes === 'lo' ? 'i32x4ExtendLowI16x8U' : 'i32x4ExtendHighI16x8U').i32(16).simd('i32x4Shl');
  }
  if (format === 'f16') {
    f.i32(3).simd('i32x4ShrS').get('mask').simd('v128And');
    if (scaled) f.get('scale').simd('f32x4Mul');
  }
  f.set(into);
}

function halfConstants(f: FnBuilder): void {
  f.local('mask', 'v128').local('scale', 'v128').local('v', 'v128').local('high', 'v128');
  f.i32(SIGN_AND_MAGNITUDE).simd('i32x4Splat').set('mask');
  f.i32(TWO_POW_112).simd('i32x4Splat').set('scale');
  f.i32(0xffff0000 | 0).simd('i32x4Splat').set('high');
}

/**
 * gemv_<format>_M(w, k, x, y, ldy, n0, n1): for n in [n0, n1), rows r < M:
 * y[r·ldy + n] = Σ_{p<k} x[r·k + p] · widen(w[n·k + p]). w: 16-bit bits [N][k] (k a multiple
 * of 8); x: float32 [M][k] in pairOrder; y: float32 rows of ldy. All addresses are
 * byte offsets.
 *
 * The loop over k takes 32 values a step (four 16-byte loads at constant offsets from one
 * pointer, so the step is mostly loads and arithmetic), then 8 at a time for the rest. One row
 * keeps four accumulators (independent add chains); more rows keep two each (registers).
 */
function gemv(rows: number, format: Half, scaled = true): FnBuilder {
  const f = new FnBuilder([['w', 'i32'], ['k', 'i32'], ['x', 'i32'], ['y', 'i32'], ['ldy', 'i32'], ['n0', 'i32'], ['n1', 'i32']]);
  halfConstants(f);
  f.local('lo', 'v128').local('hi', 'v128').local('s', 'v128');
  f.local('wp', 'i32').local('end', 'i32').local('rowBytes', 'i32').local('out', 'i32');
  const accs = rows === 1 ? 4 : 2;
  const acc = (r: number, j: number) => `acc${r}_${j % accs}`;
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < accs; j++) f.local(acc(r, j), 'v128');
    f.local(`xp${r}`, 'i32');
  }
  f.get('k').i32(1).op('i32Shl').set('rowBytes');
  // In pairs: `lo` the even values, `hi` the odd ones, met by x permuted to match (pairOrder).
  const widen = (lanes: Lanes, into: string) => widenLanes(f, format, lanes, into, true, scaled);
  /** Eight values of W at wp + 16·g meet x[r] at xp_r + 32·g. */
  const group = (g: number) => {
    f.get('wp').simdMem('v128Load', 16 * g).set('v');
    widen('lo', 'lo');
    widen('hi', 'hi');
    for (let r = 0; r < rows; r++) {
      f.get(acc(r, 2 * g)).get('lo').get(`xp${r}`).simdMem('v128Load', 32 * g).simd('f32x4Mul').simd('f32x4Add').set(acc(r, 2 * g));
      f.get(acc(r, 2 * g + 1)).get('hi').get(`xp${r}`).simdMem('v128Load', 32 * g + 16).simd('f32x4Mul').simd('f32x4Add').set(acc(r, 2 * g + 1));
    }
  };
  const advance = (wBytes: number) => {
    f.get('wp').i32(wBytes).op('i32Add').set('wp');
    for (let r = 0; r < rows; r++) f.get(`xp${r}`).i32(wBytes * 2).op('i32Add').set(`xp${r}`);
  };
  f.forRange('n', () => f.get('n0'), () => f.get('n1'), 1, () => {
    f.get('w').get('n').get('rowBytes').op('i32Mul').op('i32Add').tee('wp').get('rowBytes').op('i32Add').set('end');
    for (let r = 0; r < rows; r++) {
      for (let j = 0; j < accs; j++) f.v128Zero().set(acc(r, j));
      f.get('x').get('k').i32(r * 4).op('i32Mul').op('i32Add').set(`xp${r}`);
    }
    // 32 values a step while they last, then 8.
    f.loopUntil(() => f.get('wp').i32(64).op('i32Add').get('end').op('i32GtS'), () => {
      for (let g = 0; g < 4; g++) group(g);
      advance(64);
    });
    f.loopUntil(() => f.get('wp').get('end').op('i32GeU'), () => {
      group(0);
      advance(16);
    });
    for (let r = 0; r < rows; r++) {
      // out = &y[r·ldy + n]; y = Σ lanes of Σ accumulators
      f.get('y').get('ldy').i32(r).op('i32Mul').get('n').op('i32Add').i32(2).op('i32Shl').op('i32Add').set('out');
      f.get(acc(r, 0)).get(acc(r, 1)).simd('f32x4Add');
      if (accs === 4) f.get(acc(r, 2)).get(acc(r, 3)).simd('f32x4Add').simd('f32x4Add');
      f.set('s');
      f.get('out');
      f.get('s').f32x4ExtractLane(0).get('s').f32x4ExtractLane(1).op('f32Add')
        .get('s').f32x4ExtractLane(2).op('f32Add').get('s').f32x4ExtractLane(3).op('f32Add');
      f.mem('f32Store');
    }
  });
  return f;
}

/** widen_<format>(src, dst, n): n 16-bit values at src (n a multiple of 8) → float32 at dst. */
function widen(format: Half): FnBuilder {
  const f = new FnBuilder([['src', 'i32'], ['dst', 'i32'], ['n', 'i32']]);
  halfConstants(f);
  f.local('lo', 'v128').local('hi', 'v128').local('d', 'i32');
  f.forRange('q', () => f.i32(0), () => f.get('n').i32(1).op('i32Shl'), 16, () => {
    f.get('src').get('q').op('i32Add').simdMem('v128Load').set('v');
    widenLanes(f, format, 'lo', 'lo');
    widenLanes(f, format, 'hi', 'hi');
    f.get('dst').get('q').op('i32Add').get('q').op('i32Add').set('d');
    f.get('d').get('lo').simdMem('v128Store', 0);
    f.get('d').get('hi').simdMem('v128Store', 16);
  });
  return f;
}

/**
 * hasSpecial16(src, bytes) → 1 when any of the halves at src .. src+bytes (a multiple of 16)
 * has the all-ones exponent (±Infinity or NaN), else 0.
 */
function hasSpecial(): FnBuilder {
  const f = new FnBuilder([['src', 'i32'], ['bytes', 'i32']], ['i32']);
  f.local('e', 'v128').local('any', 'v128');
  f.i32(F16_EXPONENT).simd('i16x8Splat').set('e');
  f.v128Zero().set('any');
  f.forRange('q', () => f.i32(0), () => f.get('bytes'), 16, () => {
    f.get('any').get('src').get('q').op('i32Add').simdMem('v128Load').get('e').simd('v128And').get('e').simd('i16x8Eq')
      .simd('v128Or').set('any');
  });
  return f.get('any').simd('v128AnyTrue');
}

const FORMATS: readonly Half[] = ['f16', 'bf16'];
const ROWS = Array.from({ length: GEMV16_MAX_ROWS }, (_, r) => r + 1);

/**
 * The export computing `rows` rows of x against a weight in `format`. `prescaled` (f16 only):
 * the kernel that leaves out the 2¹¹² factor, for x already multiplied by it (see half-memory.ts).
 */
export function gemvExport(format: Half, rows: number, prescaled = false): string {
  return `gemv_${format}${prescaled ? '_prescaled' : ''}_${rows}`;
}

/** |x| below this may be multiplied by 2¹¹² without overflow (float32's largest is just under 2¹²⁸). */
export const PRESCALE_LIMIT = 2 ** 15;
export const PRESCALE = 2 ** 112;
export function widenExport(format: Half): string { return `widen_${format}`; }

/**
 * x as the gemv kernels read it: within each block of eight, the even elements first, then the
 * odd ones (the order `widenLanes` with pairs gives the weights).
 */
export function pairOrder(x: Float32Array, out: Float32Array, scale = 1): void {
  for (let b = 0; b + 8 <= x.length; b += 8) {
    for (let i = 0; i < 4; i++) { out[b + i] = x[b + 2 * i] * scale; out[b + 4 + i] = x[b + 2 * i + 1] * scale; }
  }
}

/** Export names, in module order. */
export const GEMV16_EXPORTS = [
  ...FORMATS.flatMap((h) => ROWS.map((r) => gemvExport(h, r))), ...ROWS.map((r) => gemvExport('f16', r, true)),
  ...FORMATS.map(widenExport), 'hasSpecial16',
];

/** The module bytes (imports env.memory, shared, up to `maximumPages`). */
export function buildGemv16Module(maximumPages: number): Uint8Array {
  const fns = [
    ...FORMATS.flatMap((h) => ROWS.map((r) => gemv(r, h))), ...ROWS.map((r) => gemv(r, 'f16', false)),
    ...FORMATS.map(widen), hasSpecial(),
  ];
  return encodeModule({
    memory: { initialPages: 1, maximumPages, shared: true },
    functions: fns.map((fn, i) => ({ fn, export: GEMV16_EXPORTS[i] })),
  });
}
