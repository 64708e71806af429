/**
 * A very small WebAssembly binary writer: just enough to emit the reference backend's matmul
 * kernels from TypeScript (no compiler or text-format tool is needed at build or run time).
 *
 * A function body is written through `FnBuilder`, one instruction per call, with named locals
 * and structured helpers (`forRange`, `ifThen`). `encodeModule` lays out the sections:
 * types, one imported memory, functions, exports and code.
 */

export type ValType = 'i32' | 'f32' | 'f64' | 'v128';
const VALTYPE: Record<ValType, number> = { i32: 0x7f, f32: 0x7d, f64: 0x7c, v128: 0x7b };

/** Unsigned LEB128. */
export function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let byte = n & 0x7f;
    n = Math.floor(n / 128);
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  } while (n !== 0);
  return out;
}

/** Signed LEB128 (32-bit range). */
export function sleb(n: number): number[] {
  const out: number[] = [];
  n |= 0;
  for (;;) {
    const byte = n & 0x7f;
    n >>= 7;
    const done = (n === 0 && (byte & 0x40) === 0) || (n === -1 && (byte & 0x40) !== 0);
    out.push(done ? byte : byte | 0x80);
    if (done) return out;
  }
}

function name(s: string): number[] {
  const bytes = [...new TextEncoder().encode(s)];
  return [...uleb(bytes.length), ...bytes];
}

function vec(items: number[][]): number[] {
  return [...uleb(items.length), ...items.flat()];
}

// Opcodes used by the kernels (single-byte core ones, and the 0xfd-prefixed SIMD ones).
const OP = {
  block: 0x02, loop: 0x03, if: 0x04, else: 0x05, end: 0x0b, br: 0x0c, brIf: 0x0d, call: 0x10,
  localGet: 0x20, localSet: 0x21, localTee: 0x22,
  f32Load: 0x2a, f64Load: 0x2b, f32Store: 0x38, f64Store: 0x39,
  i32Const: 0x41, f64Const: 0x44,
  i32Eq: 0x46, i32LtS: 0x48, i32GtS: 0x4a, i32GeU: 0x4f,
  i32Add: 0x6a, i32Sub: 0x6b, i32Mul: 0x6c, i32And: 0x71, i32Shl: 0x74, f32Add: 0x92,
  f64PromoteF32: 0xbb,
} as const;

const SIMD = {
  v128Load: 0x00, v128Load64Splat: 0x0a, v128Store: 0x0b, v128Const: 0x0c,
  i8x16Shuffle: 0x0d, f32x4ExtractLane: 0x1f,
  v128Store64Lane: 0x5b, v128Load64Zero: 0x5d,
  f32x4DemoteF64x2Zero: 0x5e, f64x2PromoteLowF32x4: 0x5f,
  f32x4Add: 0xe4, f64x2Add: 0xf0, f64x2Mul: 0xf2,
  i16x8Splat: 0x10, i32x4Splat: 0x11, i16x8Eq: 0x2d, v128And: 0x4e, v128Or: 0x50, v128AnyTrue: 0x53,
  i32x4ExtendLowI16x8U: 0xa9, i32x4ExtendHighI16x8U: 0xaa, i32x4Shl: 0xab, i32x4ShrS: 0xac, f32x4Mul: 0xe6,
} as const;

/** Builds one function body. Parameters are declared up front; other locals on first use. */
export class FnBuilder {
  readonly code: number[] = [];
  private readonly locals = new Map<string, { index: number; type: ValType }>();
  private readonly extra: ValType[] = [];

  constructor(readonly params: ReadonlyArray<[string, ValType]>, readonly results: readonly ValType[] = []) {
    params.forEach(([n, t], i) => this.locals.set(n, { index: i, type: t }));
  }

  /** Declares a local (idempotent for the same name and type). */
  local(n: string, type: ValType): this {
    const have = this.locals.get(n);
    if (have) {
      if (have.type !== type) throw new Error(`local ${n} redeclared as ${type}`);
      return this;
    }
    this.locals.set(n, { index: this.params.length + this.extra.length, type });
    this.extra.push(type);
    return this;
  }

  private idx(n: string): number[] {
    const l = this.locals.get(n);
    if (!l) throw new Error(`unknown local ${n}`);
    return uleb(l.index);
  }

  raw(...bytes: number[]): this { this.code.push(...bytes); return this; }
  get(n: string): this { return this.raw(OP.localGet, ...this.idx(n)); }
  set(n: string): this { return this.raw(OP.localSet, ...this.idx(n)); }
  tee(n: string): this { return this.raw(OP.localTee, ...this.idx(n)); }
  i32(v: number): this { return this.raw(OP.i32Const, ...sleb(v)); }
  f64(v: number): this {
    const b = new Uint8Array(new Float64Array([v]).buffer);
    return this.raw(OP.f64Const, ...b);
  }
  op(o: keyof typeof OP): this { return this.raw(OP[o]); }
  call(fn: number): this { return this.raw(OP.call, ...uleb(fn)); }
  simd(o: keyof typeof SIMD): this { return this.raw(0xfd, ...uleb(SIMD[o])); }

  /** Memory access with a constant byte offset; `align` is log2 of the natural alignment. */
  mem(o: 'f32Load' | 'f64Load' | 'f32Store' | 'f64Store', offset = 0): this {
    return this.raw(OP[o], o.startsWith('f32') ? 2 : 3, ...uleb(offset));
  }
  simdMem(o: 'v128Load' | 'v128Load64Splat' | 'v128Store' | 'v128Load64Zero', offset = 0): this {
    const align = o === 'v128Load64Splat' || o === 'v128Load64Zero' ? 3 : 4;
    return this.raw(0xfd, ...uleb(SIMD[o]), align, ...uleb(offset));
  }
  /** v128.store64_lane: stores 8 bytes of lane `lane` (of the i64x2 view). */
  store64Lane(offset: number, lane: number): this {
    return this.raw(0xfd, ...uleb(SIMD.v128Store64Lane), 3, ...uleb(offset), lane);
  }
  f32x4ExtractLane(lane: number): this { return this.raw(0xfd, ...uleb(SIMD.f32x4ExtractLane), lane); }
  v128Zero(): this { return this.raw(0xfd, ...uleb(SIMD.v128Const), ...new Array(16).fill(0)); }
  shuffle(lanes: readonly number[]): this {
    if (lanes.length !== 16) throw new Error('i8x16.shuffle takes 16 lane indices');
    return this.raw(0xfd, ...uleb(SIMD.i8x16Shuffle), ...lanes);
  }

  /** `for (;;) { if (exit) break; body }`; exit emits one i32, non-zero to leave the loop. */
  loopUntil(exit: () => void, body: () => void): this {
    this.raw(OP.block, 0x40, OP.loop, 0x40);
    exit(); this.raw(OP.brIf, 1);
    body();
    return this.raw(OP.br, 0, OP.end, OP.end);
  }

  /** `for (v = from; v < to; v += step) body` with unsigned i32 compare; from/to emit one value each. */
  forRange(v: string, from: () => void, to: () => void, step: number | string, body: () => void): this {
    this.local(v, 'i32');
    from(); this.set(v);
    return this.loopUntil(() => { this.get(v); to(); this.op('i32GeU'); }, () => {
      body();
      this.get(v);
      if (typeof step === 'number') this.i32(step); else this.get(step);
      this.op('i32Add').set(v);
    });
  }

  /** `if (cond) then else otherwise`; cond emits one i32. */
  ifThen(cond: () => void, then: () => void, otherwise?: () => void): this {
    cond();
    this.raw(OP.if, 0x40);
    then();
    if (otherwise) { this.raw(OP.else); otherwise(); }
    return this.raw(OP.end);
  }

  /** Body bytes (locals declaration + code + end), as the code section stores them. */
  encodeBody(): number[] {
    const groups: number[][] = [];
    for (const t of this.extra) groups.push([1, VALTYPE[t]]);          // one local per entry: simple
    const body = [...vec(groups), ...this.code, OP.end];
    return [...uleb(body.length), ...body];
  }

  typeBytes(): number[] {
    return [0x60, ...vec(this.params.map(([, t]) => [VALTYPE[t]])), ...vec(this.results.map((t) => [VALTYPE[t]]))];
  }
}

export interface ModuleSpec {
  /** Imported as env.memory. */
  memory: { initialPages: number; maximumPages: number; shared: boolean };
  functions: ReadonlyArray<{ fn: FnBuilder; export?: string }>;
}

/** Serialises a module whose functions are numbered in the order given (no imported functions). */
export function encodeModule(spec: ModuleSpec): Uint8Array {
  const section = (id: number, content: number[]) => [id, ...uleb(content.length), ...content];
  const types = spec.functions.map((f) => f.fn.typeBytes());
  const m = spec.memory;
  const limits = m.shared ? [0x03, ...uleb(m.initialPages), ...uleb(m.maximumPages)] : [0x01, ...uleb(m.initialPages), ...uleb(m.maximumPages)];
  const bytes = [
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vec(types)),
    ...section(2, vec([[...name('env'), ...name('memory'), 0x02, ...limits]])),
    ...section(3, vec(spec.functions.map((_, i) => uleb(i)))),
    ...section(7, vec(spec.functions.flatMap((f, i) => (f.export ? [[...name(f.export), 0x00, ...uleb(i)]] : [])))),
    ...section(10, vec(spec.functions.map((f) => f.fn.encodeBody()))),
  ];
  return Uint8Array.from(bytes);
}
