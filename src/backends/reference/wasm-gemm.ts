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
 * Layout (BLIS-style): per panel, a block of up to MC rows of A is converted to float64 and
 * packed as [row group of MR][p][MR]; for each group of NR output columns, the B rows are packed
 * as [p][NR] float64; an MR×NR micro-kernel keeps MR·NR/2 f64x2 accumulators in registers, with
 * one splat load of A per row and NR/2 vector loads of B per step p.
 *
 * All addresses are byte offsets into one (shared) memory, so several threads can run `gemm`
 * on disjoint column ranges of the same C.
 */
import { encodeModule, FnBuilder } from './wasm-encoder.js';

/** Panel length along K; must equal matmul.ts's K_PANEL for bit-equal results. */
export const K_PANEL = 512;

export interface GemmShape {
  /** Rows of the micro-kernel (A splats). */
  mr: number;
  /** Columns of the micro-kernel (even: two per f64x2). */
  nr: number;
  /** Rows of A packed per block. */
  mc: number;
  /** Load A's splat at each use instead of keeping it in a register (one register fewer). */
  reloadSplat?: boolean;
  /** Two steps of p per loop iteration. */
  unroll2?: boolean;
}

export const DEFAULT_GEMM_SHAPE: GemmShape = { mr: 6, nr: 4, mc: 264 };

/** Bytes of per-thread workspace `gemm` needs: packed A block + packed B micro-panel. */
export function workspaceBytes(s: GemmShape): number {
  return s.mc * K_PANEL * 8 + K_PANEL * s.nr * 8;
}

/** Function indices in the module. */
const PACK_A = 0, PACK_B = 1, KERNEL_1 = 2;

/**
 * packA(src, lda, rows, kc, dst): rows × kc float32 at src (row stride lda bytes) → float64,
 * grouped by MR rows; the group starting at row g·MR (width w = min(MR, rows − g·MR)) sits at
 * dst + g·MR·kc·8 as [p][w].
 */
function packA(mr: number): FnBuilder {
  const f = new FnBuilder([['src', 'i32'], ['lda', 'i32'], ['rows', 'i32'], ['kc', 'i32'], ['dst', 'i32']]);
  f.local('w', 'i32').local('s', 'i32').local('d', 'i32').local('stride', 'i32').local('end', 'i32');
  f.forRange('g', () => f.i32(0), () => f.get('rows'), mr, () => {
    // w = min(MR, rows - g)
    f.get('rows').get('g').op('i32Sub').set('w');
    f.ifThen(() => f.get('w').i32(mr).op('i32GtS'), () => f.i32(mr).set('w'));
    f.get('w').i32(8).op('i32Mul').set('stride');
    f.forRange('r', () => f.i32(0), () => f.get('w'), 1, () => {
      // s = src + (g + r)·lda;  d = dst + g·kc·8 + r·8;  end = s + kc·4
      f.get('src').get('g').get('r').op('i32Add').get('lda').op('i32Mul').op('i32Add').set('s');
      f.get('dst').get('g').get('kc').op('i32Mul').i32(3).op('i32Shl').op('i32Add')
        .get('r').i32(3).op('i32Shl').op('i32Add').set('d');
      f.get('s').get('kc').i32(2).op('i32Shl').op('i32Add').set('end');
      f.forRange('q', () => f.get('s'), () => f.get('end'), 4, () => {
        f.get('d').get('q').mem('f32Load').op('f64PromoteF32').mem('f64Store');
        f.get('d').get('stride').op('i32Add').set('d');
      });
    });
  });
  return f;
}

/**
 * packB(src, ldb, nv, kc, dst): columns j < nv of the micro-panel are B rows src + j·ldb
 * (kc float32 each) → dst [p][NR] float64; columns nv..NR-1 are zero.
 */
function packB(nr: number): FnBuilder {
  const f = new FnBuilder([['src', 'i32'], ['ldb', 'i32'], ['nv', 'i32'], ['kc', 'i32'], ['dst', 'i32']]);
  f.local('s', 'i32').local('d', 'i32').local('end', 'i32');
  f.forRange('j', () => f.i32(0), () => f.i32(nr), 1, () => {
    f.get('dst').get('j').i32(3).op('i32Shl').op('i32Add').set('d');
    f.ifThen(() => f.get('j').get('nv').op('i32LtS'), () => {
      f.get('src').get('j').get('ldb').op('i32Mul').op('i32Add').set('s');
      f.get('s').get('kc').i32(2).op('i32Shl').op('i32Add').set('end');
      f.forRange('q', () => f.get('s'), () => f.get('end'), 4, () => {
        f.get('d').get('q').mem('f32Load').op('f64PromoteF32').mem('f64Store');
        f.get('d').i32(nr * 8).op('i32Add').set('d');
      });
    }, () => {
      f.forRange('p', () => f.i32(0), () => f.get('kc'), 1, () => {
        f.get('d').f64(0).mem('f64Store');
        f.get('d').i32(nr * 8).op('i32Add').set('d');
      });
    });
  });
  return f;
}

/**
 * kernel(a, b, kc, c, ldc): rows × NR tile. a = packed A group [p][rows], b = packed B [p][NR],
 * c = &C[row0][col0] (float32, row stride ldc bytes). C[r][j] = f32(C[r][j] + Σ_p a·b).
 */
function kernel(rows: number, nr: number, s: GemmShape): FnBuilder {
  const f = new FnBuilder([['a', 'i32'], ['b', 'i32'], ['kc', 'i32'], ['c', 'i32'], ['ldc', 'i32']]);
  const vecs = nr / 2;
  const acc = (r: number, v: number) => `acc${r}_${v}`;
  for (let r = 0; r < rows; r++) for (let v = 0; v < vecs; v++) f.local(acc(r, v), 'v128').v128Zero().set(acc(r, v));
  for (let v = 0; v < vecs; v++) f.local(`b${v}`, 'v128');
  f.local('x', 'v128').local('end', 'i32').local('end2', 'i32');
  // One step p: acc[r][v] += A[p][r] · B[p][v·2 .. v·2+1]  (float64 product of float32 values is
  // exact; the add rounds once, as JS's `c += x * y` does).
  const step = (u: number) => {
    for (let v = 0; v < vecs; v++) f.get('pb').simdMem('v128Load', u * nr * 8 + v * 16).set(`b${v}`);
    for (let r = 0; r < rows; r++) {
      if (!s.reloadSplat) f.get('a').simdMem('v128Load64Splat', (u * rows + r) * 8).set('x');
      for (let v = 0; v < vecs; v++) {
        f.get(acc(r, v));
        if (s.reloadSplat) f.get('a').simdMem('v128Load64Splat', (u * rows + r) * 8); else f.get('x');
        f.get(`b${v}`).simd('f64x2Mul').simd('f64x2Add').set(acc(r, v));
      }
    }
  };
  f.get('b').get('kc').i32(nr * 8).op('i32Mul').op('i32Add').set('end');
  f.get('b').get('kc').i32(-2).op('i32And').i32(nr * 8).op('i32Mul').op('i32Add').set('end2');
  f.local('pb', 'i32').get('b').set('pb');
  if (s.unroll2) {
    f.forRange('pb', () => f.get('b'), () => f.get('end2'), nr * 16, () => {
      step(0); step(1);
      f.get('a').i32(rows * 16).op('i32Add').set('a');
    });
  }
  f.forRange('pb', () => f.get('pb'), () => f.get('end'), nr * 8, () => {
    step(0);
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
 * gemm(a, m, k, b, j0, j1, nv, c, ldc, ws): for output columns [j0, j1) (j1 − j0 a multiple of
 * NR, or running to the end of C's padded row), C[i][j] += Σ_p A[i][p]·B[j][p] panel by panel.
 * a: A float32 [m][k]; b: B float32 rows, B[j] at b + j·k·4, valid for j < nv (later columns
 * of the last micro-panel are zero-padded); c: C float32 [m][ldc] (bytes: ldc·4 per row), which
 * must hold zeros (or a previous partial result) on entry; ws: workspaceBytes() of scratch.
 */
function gemm(s: GemmShape): FnBuilder {
  const f = new FnBuilder([
    ['a', 'i32'], ['m', 'i32'], ['k', 'i32'], ['b', 'i32'], ['j0', 'i32'], ['j1', 'i32'],
    ['nv', 'i32'], ['c', 'i32'], ['ldc', 'i32'], ['ws', 'i32'],
  ]);
  f.local('kc', 'i32').local('mc', 'i32').local('rows', 'i32').local('wsB', 'i32').local('cols', 'i32')
    .local('ldk', 'i32').local('ldcb', 'i32').local('crow', 'i32');
  f.get('ws').i32(s.mc * K_PANEL * 8).op('i32Add').set('wsB');
  f.get('k').i32(2).op('i32Shl').set('ldk');
  f.get('ldc').i32(2).op('i32Shl').set('ldcb');
  f.forRange('k0', () => f.i32(0), () => f.get('k'), K_PANEL, () => {
    // kc = min(K_PANEL, k - k0)
    f.get('k').get('k0').op('i32Sub').set('kc');
    f.ifThen(() => f.get('kc').i32(K_PANEL).op('i32GtS'), () => f.i32(K_PANEL).set('kc'));
    f.forRange('i0', () => f.i32(0), () => f.get('m'), s.mc, () => {
      f.get('m').get('i0').op('i32Sub').set('mc');
      f.ifThen(() => f.get('mc').i32(s.mc).op('i32GtS'), () => f.i32(s.mc).set('mc'));
      // packA(&A[i0][k0], k·4, mc, kc, ws)
      f.get('a').get('i0').get('ldk').op('i32Mul').op('i32Add').get('k0').i32(2).op('i32Shl').op('i32Add')
        .get('ldk').get('mc').get('kc').get('ws').call(PACK_A);
      f.forRange('j', () => f.get('j0'), () => f.get('j1'), s.nr, () => {
        // packB(&B[j][k0], k·4, nv − j, kc, wsB)
        f.get('b').get('j').get('ldk').op('i32Mul').op('i32Add').get('k0').i32(2).op('i32Shl').op('i32Add')
          .get('ldk').get('nv').get('j').op('i32Sub').get('kc').get('wsB').call(PACK_B);
        // crow = &C[i0][j]
        f.get('c').get('i0').get('ldcb').op('i32Mul').op('i32Add').get('j').i32(2).op('i32Shl').op('i32Add').set('crow');
        f.forRange('ib', () => f.i32(0), () => f.get('mc'), s.mr, () => {
          f.get('mc').get('ib').op('i32Sub').set('rows');
          f.ifThen(() => f.get('rows').i32(s.mr).op('i32GtS'), () => f.i32(s.mr).set('rows'));
          // kernel_rows(ws + ib·kc·8, wsB, kc, crow + ib·ldc·4, ldc·4)
          const args = () => {
            f.get('ws').get('ib').get('kc').op('i32Mul').i32(3).op('i32Shl').op('i32Add')
              .get('wsB').get('kc').get('crow').get('ib').get('ldcb').op('i32Mul').op('i32Add').get('ldcb');
          };
          // Full groups first (the common case), then the remainder widths.
          const dispatch = (w: number) => {
            if (w === 0) return;
            f.ifThen(() => f.get('rows').i32(w).op('i32Eq'), () => { args(); f.call(KERNEL_1 + w - 1); }, () => dispatch(w - 1));
          };
          dispatch(s.mr);
        });
      });
    });
  });
  return f;
}

/** The module bytes: imports a memory (shared when `shared`), exports `gemm`. */
export function buildGemmModule(s: GemmShape = DEFAULT_GEMM_SHAPE, memory = { initialPages: 1, maximumPages: 65536, shared: true }): Uint8Array {
  if (s.nr % 2 !== 0 || s.mc % s.mr !== 0) throw new Error(`bad gemm shape ${JSON.stringify(s)}`);
  const fns = [packA(s.mr), packB(s.nr)];
  for (let r = 1; r <= s.mr; r++) fns.push(kernel(r, s.nr, s));
  fns.push(gemm(s));
  return encodeModule({
    memory,
    functions: fns.map((fn, i) => ({ fn, export: i === fns.length - 1 ? 'gemm' : i === PACK_A ? 'packA' : i === PACK_B ? 'packB' : `kernel${i - 1}` })),
  });
}
