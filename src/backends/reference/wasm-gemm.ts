/**
 * The WebAssembly SIMD kernel behind the reference backend's fast matmul, generated in code.
 *
 * It computes C[M, N] = A[M, K] · B[N, K]ᵀ with exactly the arithmetic of the JS kernel in
 * matmul.ts, so the two agree bit for bit:
 *   - K is cut into panels of K_PANEL (512) columns, as the JS kernel does;
 *   - inside a panel each output element is a float64 sum, in order p = k0, k0+1, …, of the
 *     exact float64 products of float32 inputs (f64x2 lanes hold two output columns, never
 *     two terms of one sum, so no reassociation happens);
 *   - at the end of each panel the sum is added to the float32 output as JS's `out[o] += c`:
 *     float32 → float64, add, round to float32.
 *
 * Layout (BLIS-style): `packA` converts A to float64 once per call, panel by panel, as
 * [row group of MR][p][MR]; `gemm` packs each group of NR rows of B (NR output columns) as
 * [p][NR] float64 and runs an MR×NR micro-kernel that keeps MR·NR/2 f64x2 accumulators in
 * registers, with one splat load of A per row and NR/2 vector loads of B per step p.
 *
 * All addresses are byte offsets into one (shared) memory, so several threads can run `gemm`
 * on disjoint column ranges of the same C.
 */
import { encodeModule, FnBuilder } from './wasm-encoder.js';

/**
 * Panel length along K, shared with the JS kernel (matmul.ts): the two agree bit for bit only
 * because both round to float32 at the same panel ends.
 */
export const K_PANEL = 512;

export interface GemmShape {
  /** Rows of the micro-kernel (A splats). */
  mr: number;
  /** Columns of the micro-kernel (even: two per f64x2). */
  nr: number;
  /** Rows of packed A used per pass over a B micro-panel (a multiple of mr; sized for L2). */
  mc: number;
}

/**
 * 4×4 is the largest tile whose accumulators, B vectors and A splats fit the 15 vector registers
 * V8 allocates on x64 without spilling (V8 issues all loads of a step before the arithmetic).
 */
export const DEFAULT_GEMM_SHAPE: GemmShape = { mr: 4, nr: 4, mc: 128 };

/** Bytes of A packed by `packA` for m rows and k columns. */
export function packedABytes(m: number, k: number): number {
  return m * k * 8;
}

/** Bytes of per-thread workspace `gemm` needs: one packed B micro-panel. */
export function workspaceBytes(s: GemmShape): number {
  return K_PANEL * s.nr * 8;
}

/** Function indices in the module. */
const PACK = 0, PACK_A = 1, KERNEL_1 = 2;

/**
 * pack(src, ld, count, kc, dst, width): `width` lanes of float64 per step p, dst [p][width]:
 * lane r < count is float32 row src + r·ld (kc values), later lanes are zero. Rows are taken
 * four at a time through a 4×4 transpose when possible, one at a time otherwise.
 */
function pack(): FnBuilder {
  const f = new FnBuilder([['src', 'i32'], ['ld', 'i32'], ['count', 'i32'], ['kc', 'i32'], ['dst', 'i32'], ['width', 'i32']]);
  f.local('stride', 'i32').local('s0', 'i32').local('s1', 'i32').local('s2', 'i32').local('s3', 'i32')
    .local('d', 'i32').local('end', 'i32').local('end4', 'i32').local('r', 'i32');
  for (const v of ['v0', 'v1', 'v2', 'v3', 'lo01', 'hi01', 'lo23', 'hi23']) f.local(v, 'v128');
  f.ifThen(() => f.get('count').get('width').op('i32GtS'), () => f.get('width').set('count'));
  f.get('width').i32(3).op('i32Shl').set('stride');
  // Interleave the low or high halves of two f32x4 (unpcklps / unpckhps).
  const lo = [0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23];
  const hi = [8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31];
  const upper = [8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15];
  // Stores lanes (x[0], x[1]) of f32x4 `x` (or its upper half) as f64x2 at d + off.
  const store2 = (x: string, upperHalf: boolean, off: number) => {
    f.get('d').get(x);
    if (upperHalf) f.get(x).shuffle(upper);
    f.simd('f64x2PromoteLowF32x4').simdMem('v128Store', off);
  };
  f.i32(0).set('r');
  // Four full rows at a time.
  f.loopUntil(() => f.get('r').i32(4).op('i32Add').get('count').op('i32GtS'), () => {
    f.get('src').get('r').get('ld').op('i32Mul').op('i32Add').set('s0');
    f.get('s0').get('ld').op('i32Add').set('s1');
    f.get('s1').get('ld').op('i32Add').set('s2');
    f.get('s2').get('ld').op('i32Add').set('s3');
    f.get('dst').get('r').i32(3).op('i32Shl').op('i32Add').set('d');
    f.get('s0').get('kc').i32(-4).op('i32And').i32(2).op('i32Shl').op('i32Add').set('end4');
    f.get('s0').get('kc').i32(2).op('i32Shl').op('i32Add').set('end');
    f.forRange('q', () => f.i32(0), () => f.get('end4').get('s0').op('i32Sub'), 16, () => {
      f.get('s0').get('q').op('i32Add').simdMem('v128Load').set('v0');
      f.get('s1').get('q').op('i32Add').simdMem('v128Load').set('v1');
      f.get('s2').get('q').op('i32Add').simdMem('v128Load').set('v2');
      f.get('s3').get('q').op('i32Add').simdMem('v128Load').set('v3');
      f.get('v0').get('v1').shuffle(lo).set('lo01');                     // r0p0 r1p0 r0p1 r1p1
      f.get('v0').get('v1').shuffle(hi).set('hi01');                     // r0p2 r1p2 r0p3 r1p3
      f.get('v2').get('v3').shuffle(lo).set('lo23');
      f.get('v2').get('v3').shuffle(hi).set('hi23');
      store2('lo01', false, 0); store2('lo23', false, 16);              // p
      f.get('d').get('stride').op('i32Add').set('d');
      store2('lo01', true, 0); store2('lo23', true, 16);                // p + 1
      f.get('d').get('stride').op('i32Add').set('d');
      store2('hi01', false, 0); store2('hi23', false, 16);              // p + 2
      f.get('d').get('stride').op('i32Add').set('d');
      store2('hi01', true, 0); store2('hi23', true, 16);                // p + 3
      f.get('d').get('stride').op('i32Add').set('d');
    });
    // Steps kc & ~3 .. kc − 1, one value per row.
    f.forRange('q', () => f.get('end4').get('s0').op('i32Sub'), () => f.get('end').get('s0').op('i32Sub'), 4, () => {
      for (let i = 0; i < 4; i++) f.get('d').get(`s${i}`).get('q').op('i32Add').mem('f32Load').op('f64PromoteF32').mem('f64Store', i * 8);
      f.get('d').get('stride').op('i32Add').set('d');
    });
    f.get('r').i32(4).op('i32Add').set('r');
  });
  // Remaining lanes one at a time: a row while r < count, zeros after.
  f.forRange('r', () => f.get('r'), () => f.get('width'), 1, () => {
    f.get('dst').get('r').i32(3).op('i32Shl').op('i32Add').set('d');
    f.ifThen(() => f.get('r').get('count').op('i32LtS'), () => {
      f.get('src').get('r').get('ld').op('i32Mul').op('i32Add').set('s0');
      f.get('s0').get('kc').i32(2).op('i32Shl').op('i32Add').set('end');
      f.forRange('q', () => f.get('s0'), () => f.get('end'), 4, () => {
        f.get('d').get('q').mem('f32Load').op('f64PromoteF32').mem('f64Store');
        f.get('d').get('stride').op('i32Add').set('d');
      });
    }, () => {
      f.forRange('q', () => f.i32(0), () => f.get('kc'), 1, () => {
        f.get('d').f64(0).mem('f64Store');
        f.get('d').get('stride').op('i32Add').set('d');
      });
    });
  });
  return f;
}

/**
 * packA(a, lda, m, k, dst): A float32 [m][k] (row stride lda bytes) → float64, panel by panel:
 * panel k0 starts at dst + m·k0·8; inside it the group of rows g .. g+w−1 (w = min(MR, m − g))
 * starts at g·kc·8 and is laid out [p][w].
 */
function packA(mr: number): FnBuilder {
  const f = new FnBuilder([['a', 'i32'], ['lda', 'i32'], ['m', 'i32'], ['k', 'i32'], ['dst', 'i32']]);
  f.local('kc', 'i32').local('w', 'i32').local('panel', 'i32');
  f.forRange('k0', () => f.i32(0), () => f.get('k'), K_PANEL, () => {
    f.get('k').get('k0').op('i32Sub').set('kc');
    f.ifThen(() => f.get('kc').i32(K_PANEL).op('i32GtS'), () => f.i32(K_PANEL).set('kc'));
    f.get('dst').get('m').get('k0').op('i32Mul').i32(3).op('i32Shl').op('i32Add').set('panel');
    f.forRange('g', () => f.i32(0), () => f.get('m'), mr, () => {
      f.get('m').get('g').op('i32Sub').set('w');
      f.ifThen(() => f.get('w').i32(mr).op('i32GtS'), () => f.i32(mr).set('w'));
      // pack(&A[g][k0], lda, w, kc, panel + g·kc·8, w)
      f.get('a').get('g').get('lda').op('i32Mul').op('i32Add').get('k0').i32(2).op('i32Shl').op('i32Add')
        .get('lda').get('w').get('kc')
        .get('panel').get('g').get('kc').op('i32Mul').i32(3).op('i32Shl').op('i32Add')
        .get('w').call(PACK);
    });
  });
  return f;
}

/**
 * kernel(a, b, kc, c, ldc): rows × NR tile. a = packed A group [p][rows], b = packed B [p][NR],
 * c = &C[row0][col0] (float32, row stride ldc bytes). C[r][j] = f32(C[r][j] + Σ_p a·b).
 */
function kernel(rows: number, nr: number): FnBuilder {
  const f = new FnBuilder([['a', 'i32'], ['b', 'i32'], ['kc', 'i32'], ['c', 'i32'], ['ldc', 'i32']]);
  const vecs = nr / 2;
  const acc = (r: number, v: number) => `acc${r}_${v}`;
  for (let r = 0; r < rows; r++) for (let v = 0; v < vecs; v++) f.local(acc(r, v), 'v128').v128Zero().set(acc(r, v));
  for (let v = 0; v < vecs; v++) f.local(`b${v}`, 'v128');
  f.local('x', 'v128').local('end', 'i32');
  f.get('b').get('kc').i32(nr * 8).op('i32Mul').op('i32Add').set('end');
  f.forRange('pb', () => f.get('b'), () => f.get('end'), nr * 8, () => {
    // One step p: acc[r][v] += A[p][r] · B[p][2v .. 2v+1]. The float64 product of float32 values
    // is exact and the add rounds once, as JS's `c += x * y` does.
    for (let v = 0; v < vecs; v++) f.get('pb').simdMem('v128Load', v * 16).set(`b${v}`);
    for (let r = 0; r < rows; r++) {
      f.get('a').simdMem('v128Load64Splat', r * 8).set('x');
      for (let v = 0; v < vecs; v++) {
        f.get(acc(r, v)).get('x').get(`b${v}`).simd('f64x2Mul').simd('f64x2Add').set(acc(r, v));
      }
    }
    f.get('a').i32(rows * 8).op('i32Add').set('a');
  });
  // Write back: C = f32(f64(C) + acc), two columns per f64x2.
  for (let r = 0; r < rows; r++) {
    for (let v = 0; v < vecs; v++) {
      f.get('c');                                                      // store address
      f.get('c').simdMem('v128Load64Zero', v * 8).simd('f64x2PromoteLowF32x4');
      f.get(acc(r, v)).simd('f64x2Add').simd('f32x4DemoteF64x2Zero');
      f.store64Lane(v * 8, 0);
    }
    if (r + 1 < rows) f.get('c').get('ldc').op('i32Add').set('c');
  }
  return f;
}

/**
 * gemm(ap, m, k, b, j0, j1, nv, c, ldc, ws): for output columns [j0, j1) (whole micro-panels),
 * C[i][j] += Σ_p A[i][p]·B[j][p], panel by panel. ap: A as packA left it; b: B float32 rows,
 * B[j] at b + j·k·4, valid for j < nv (later columns of the last micro-panel are zeros); c: C
 * float32 [m][ldc], zero (or a previous partial result) on entry; ws: workspaceBytes() of scratch.
 */
function gemm(s: GemmShape): FnBuilder {
  const f = new FnBuilder([
    ['ap', 'i32'], ['m', 'i32'], ['k', 'i32'], ['b', 'i32'], ['j0', 'i32'], ['j1', 'i32'],
    ['nv', 'i32'], ['c', 'i32'], ['ldc', 'i32'], ['ws', 'i32'],
  ]);
  f.local('kc', 'i32').local('mc', 'i32').local('rows', 'i32').local('panel', 'i32')
    .local('ldk', 'i32').local('ldcb', 'i32').local('crow', 'i32');
  f.get('k').i32(2).op('i32Shl').set('ldk');
  f.get('ldc').i32(2).op('i32Shl').set('ldcb');
  f.forRange('k0', () => f.i32(0), () => f.get('k'), K_PANEL, () => {
    // kc = min(K_PANEL, k − k0); this panel of packed A starts at ap + m·k0·8
    f.get('k').get('k0').op('i32Sub').set('kc');
    f.ifThen(() => f.get('kc').i32(K_PANEL).op('i32GtS'), () => f.i32(K_PANEL).set('kc'));
    f.get('ap').get('m').get('k0').op('i32Mul').i32(3).op('i32Shl').op('i32Add').set('panel');
    f.forRange('i0', () => f.i32(0), () => f.get('m'), s.mc, () => {
      f.get('m').get('i0').op('i32Sub').set('mc');
      f.ifThen(() => f.get('mc').i32(s.mc).op('i32GtS'), () => f.i32(s.mc).set('mc'));
      f.forRange('j', () => f.get('j0'), () => f.get('j1'), s.nr, () => {
        // pack(&B[j][k0], k·4, nv − j, kc, ws, NR)
        f.get('b').get('j').get('ldk').op('i32Mul').op('i32Add').get('k0').i32(2).op('i32Shl').op('i32Add')
          .get('ldk').get('nv').get('j').op('i32Sub').get('kc').get('ws').i32(s.nr).call(PACK);
        // crow = &C[i0][j]
        f.get('c').get('i0').get('ldcb').op('i32Mul').op('i32Add').get('j').i32(2).op('i32Shl').op('i32Add').set('crow');
        f.forRange('ib', () => f.get('i0'), () => f.get('i0').get('mc').op('i32Add'), s.mr, () => {
          f.get('m').get('ib').op('i32Sub').set('rows');
          f.ifThen(() => f.get('rows').i32(s.mr).op('i32GtS'), () => f.i32(s.mr).set('rows'));
          // kernel_rows(panel + ib·kc·8, ws, kc, crow, ldc·4); then crow += MR rows
          const args = () => {
            f.get('panel').get('ib').get('kc').op('i32Mul').i32(3).op('i32Shl').op('i32Add')
              .get('ws').get('kc').get('crow').get('ldcb');
          };
          // Full groups first (the common case), then the remainder widths.
          const dispatch = (w: number) => {
            if (w === 0) return;
            f.ifThen(() => f.get('rows').i32(w).op('i32Eq'), () => { args(); f.call(KERNEL_1 + w - 1); }, () => dispatch(w - 1));
          };
          dispatch(s.mr);
          f.get('crow').get('ldcb').i32(s.mr).op('i32Mul').op('i32Add').set('crow');
        });
      });
    });
  });
  return f;
}

// Core opcodes the widening functions need beyond the encoder's named ones.
const I32_LOAD = [0x28, 2, 0], I32_LOAD16_U = [0x2f, 1, 0], I32_STORE = [0x36, 2, 0];

/**
 * widenBf16(src, dst, n): n bf16 bit patterns at src → float32 at dst (each one the top half of
 * its float32: a byte shuffle with zeros, eight at a time).
 */
function widenBf16(): FnBuilder {
  const f = new FnBuilder([['src', 'i32'], ['dst', 'i32'], ['n', 'i32']]);
  f.local('n8', 'i32').local('d', 'i32').local('v', 'v128');
  const lo = [0, 1, 16, 17, 0, 1, 18, 19, 0, 1, 20, 21, 0, 1, 22, 23];
  const hi = [0, 1, 24, 25, 0, 1, 26, 27, 0, 1, 28, 29, 0, 1, 30, 31];
  f.get('n').i32(-8).op('i32And').i32(1).op('i32Shl').set('n8');       // bytes of src done 8 at a time
  f.forRange('q', () => f.i32(0), () => f.get('n8'), 16, () => {
    f.get('dst').get('q').op('i32Add').get('q').op('i32Add').set('d');
    f.get('src').get('q').op('i32Add').simdMem('v128Load').set('v');
    f.get('d').v128Zero().get('v').shuffle(lo).simdMem('v128Store', 0);
    f.get('d').v128Zero().get('v').shuffle(hi).simdMem('v128Store', 16);
  });
  f.forRange('q', () => f.get('n8'), () => f.get('n').i32(1).op('i32Shl'), 2, () => {
    f.get('dst').get('q').op('i32Add').get('q').op('i32Add');
    f.get('src').get('q').op('i32Add').raw(...I32_LOAD16_U).i32(16).op('i32Shl').raw(...I32_STORE);
  });
  return f;
}

/** widenF16(src, dst, n, table): n f16 bit patterns → float32 through a 65536-entry float32 bit-pattern table. */
function widenF16(): FnBuilder {
  const f = new FnBuilder([['src', 'i32'], ['dst', 'i32'], ['n', 'i32'], ['table', 'i32']]);
  f.forRange('q', () => f.i32(0), () => f.get('n').i32(1).op('i32Shl'), 2, () => {
    f.get('dst').get('q').op('i32Add').get('q').op('i32Add');
    f.get('table').get('src').get('q').op('i32Add').raw(...I32_LOAD16_U).i32(2).op('i32Shl').op('i32Add').raw(...I32_LOAD);
    f.raw(...I32_STORE);
  });
  return f;
}

/** Where gemmF16 expects the 65536 float32 bit patterns of the f16 values (the caller writes them). */
export const F16_TABLE_ADDRESS = 0;

const GEMM_PARAMS = ['ap', 'm', 'k', 'b', 'j0', 'j1', 'nv', 'c', 'ldc', 'ws'] as const;

/**
 * gemmBf16 / gemmF16(src, n, …gemm's arguments): widens n 16-bit values at src (the B rows this
 * call's column range reads, from row j0) into the float32 B chunk at b + j0·k·4, then runs
 * gemm. Each thread widens its own rows, so the conversion runs in parallel and needs no extra
 * round of synchronisation. The f16 table sits at address 0 (F16_TABLE_ADDRESS).
 */
function gemm16(widen: number, gemmIndex: number, f16: boolean): FnBuilder {
  const f = new FnBuilder([['src', 'i32'], ['n', 'i32'], ...GEMM_PARAMS.map((p) => [p, 'i32'] as [string, 'i32'])]);
  f.get('src');
  f.get('b').get('j0').get('k').op('i32Mul').i32(2).op('i32Shl').op('i32Add');
  f.get('n');
  if (f16) f.i32(F16_TABLE_ADDRESS);
  f.call(widen);
  for (const p of GEMM_PARAMS) f.get(p);
  return f.call(gemmIndex);
}

/**
 * The module bytes: imports env.memory (shared when `shared`); exports pack, packA,
 * kernel1..MR, gemm, widenBf16, widenF16, gemmBf16 and gemmF16.
 */
export function buildGemmModule(s: GemmShape = DEFAULT_GEMM_SHAPE, memory = { initialPages: 1, maximumPages: 65536, shared: true }): Uint8Array {
  if (s.nr % 2 !== 0 || s.mc % s.mr !== 0) throw new Error(`bad gemm shape ${JSON.stringify(s)}`);
  const fns = [pack(), packA(s.mr)];
  for (let r = 1; r <= s.mr; r++) fns.push(kernel(r, s.nr));
  fns.push(gemm(s));
  const gemmIndex = fns.length - 1, bf16 = fns.length, f16 = bf16 + 1;
  fns.push(widenBf16(), widenF16(), gemm16(bf16, gemmIndex, false), gemm16(f16, gemmIndex, true));
  const names = [
    'pack', 'packA', ...Array.from({ length: s.mr }, (_, r) => `kernel${r + 1}`), 'gemm',
    'widenBf16', 'widenF16', 'gemmBf16', 'gemmF16',
  ];
  return encodeModule({ memory, functions: fns.map((fn, i) => ({ fn, export: names[i] })) });
}
