// @ts-check
/**
 * A TensorBackend that forwards every call to another backend and records, per op, how often it
 * ran, how long it took and on which input shapes. Tensors pass through untouched, so anything
 * that works on the inner backend works on this one.
 *
 * Times are wall-clock around each call. A backend that records ops lazily and runs them at
 * read() (WebGPU, graph-compiling backends) shows dispatch cost per op and the compute in `read`.
 *
 * ```js
 * const backend = new ProfilingBackend(new ReferenceBackend());
 * // … run a pipeline on it …
 * console.log(formatProfile(backend.report()));
 * ```
 */

/** @import { DType, OpName, Tensor, TensorBackend } from 'paligemma-sdk' */

/**
 * @typedef {object} OpProfile
 * @property {string} op
 * @property {number} count
 * @property {number} totalMs
 * @property {number} meanUs
 * @property {{ shapes: string, count: number }[]} shapes  input shapes, most frequent first
 */

/** @implements {TensorBackend} */
export class ProfilingBackend {
  /**
   * @param {TensorBackend} inner  the backend that does the work
   * @param {{ print?: (text: string) => void, printAtExit?: boolean }} [options]
   *   print: where close() (and process exit, if close never came) writes the table; default stderr.
   */
  constructor(inner, options = {}) {
    this.inner = inner;
    this.name = 'profiling';
    this.engine = `profiling(${inner.engine ?? inner.name})`;
    /** @type {Map<string, { count: number, ms: number, shapes: Map<string, number> }>} */
    this.stats = new Map();
    this.print = options.print ?? ((text) => process.stderr.write(text));
    this.printed = false;
    this.onExit = () => this.printReport();
    if (options.printAtExit !== false) process.once('exit', this.onExit);
  }

  /**
   * Runs `fn` and records its time under `op`, keyed by the input shapes in `args`.
   * @template T @param {string} op @param {unknown[]} args @param {() => T} fn @returns {T}
   */
  timed(op, args, fn) {
    const t0 = performance.now();
    const out = fn();
    this.record(op, args, performance.now() - t0);
    return out;
  }

  async init() {
    const t0 = performance.now();
    await this.inner.init?.();
    this.record('init', [], performance.now() - t0);
  }

  /** @param {OpName} op @param {DType} [dtype] */
  supports(op, dtype) {
    return this.inner.supports(op, dtype);
  }

  /** @param {Tensor} t */
  async read(t) {
    const t0 = performance.now();
    const out = await this.inner.read(t);
    this.record('read', [t], performance.now() - t0);
    return out;
  }

  // ── every op: forwarded, timed ──────────────────────────────────────────────
  /** @type {TensorBackend['upload']} */
  upload(data, shape, dtype) { return this.timed('upload', [shape, dtype ?? 'f32'], () => this.inner.upload(data, shape, dtype)); }
  /** @type {TensorBackend['zeros']} */
  zeros(shape) { return this.timed('zeros', [shape], () => this.inner.zeros(shape)); }
  /** @type {TensorBackend['dispose']} */
  dispose(t) { this.timed('dispose', [t], () => this.inner.dispose(t)); }
  /** @type {TensorBackend['matmul']} */
  matmul(a, b, opts) { return this.timed('matmul', [a, b, opts], () => this.inner.matmul(a, b, opts)); }
  /** @type {TensorBackend['add']} */
  add(a, b) { return this.timed('add', [a, b], () => this.inner.add(a, b)); }
  /** @type {TensorBackend['mul']} */
  mul(a, b) { return this.timed('mul', [a, b], () => this.inner.mul(a, b)); }
  /** @type {TensorBackend['scale']} */
  scale(a, s) { return this.timed('scale', [a], () => this.inner.scale(a, s)); }
  /** @type {TensorBackend['gelu']} */
  gelu(a) { return this.timed('gelu', [a], () => this.inner.gelu(a)); }
  /** @type {TensorBackend['layerNorm']} */
  layerNorm(x, w, b, eps) { return this.timed('layerNorm', [x, w, b], () => this.inner.layerNorm(x, w, b, eps)); }
  /** @type {TensorBackend['rmsNorm']} */
  rmsNorm(x, w, eps) { return this.timed('rmsNorm', [x, w], () => this.inner.rmsNorm(x, w, eps)); }
  /** @type {TensorBackend['softmax']} */
  softmax(x) { return this.timed('softmax', [x], () => this.inner.softmax(x)); }
  /** @type {TensorBackend['rope']} */
  rope(x, positions, theta) { return this.timed('rope', [x, positions], () => this.inner.rope(x, positions, theta)); }
  /** @type {TensorBackend['embedding']} */
  embedding(table, ids) { return this.timed('embedding', [table, ids], () => this.inner.embedding(table, ids)); }
  /** @type {TensorBackend['concat']} */
  concat(ts, axis) { return this.timed('concat', [ts], () => this.inner.concat(ts, axis)); }
  /** @type {TensorBackend['slice']} */
  slice(x, axis, start, end) { return this.timed('slice', [x], () => this.inner.slice(x, axis, start, end)); }
  /** @type {TensorBackend['reshape']} */
  reshape(x, shape) { return this.timed('reshape', [x, shape], () => this.inner.reshape(x, shape)); }
  /** @type {TensorBackend['transpose']} */
  transpose(x, perm) { return this.timed('transpose', [x, perm], () => this.inner.transpose(x, perm)); }
  /** @type {TensorBackend['writeRows']} */
  writeRows(dst, src, offset) { this.timed('writeRows', [dst, src], () => this.inner.writeRows(dst, src, offset)); }
  /** @type {TensorBackend['patchEmbed']} */
  patchEmbed(pixels, weight, bias, patch) {
    return this.timed('patchEmbed', [pixels, weight, bias], () => this.inner.patchEmbed(pixels, weight, bias, patch));
  }

  /** Prints the table once, then closes the inner backend. */
  async close() {
    process.off('exit', this.onExit);
    this.printReport();
    await this.inner.close?.();
  }

  /** Per-op rows, the most expensive first. @returns {OpProfile[]} */
  report() {
    return [...this.stats].map(([op, s]) => ({
      op,
      count: s.count,
      totalMs: s.ms,
      meanUs: (s.ms / s.count) * 1000,
      shapes: [...s.shapes].map(([shapes, count]) => ({ shapes, count })).sort((a, b) => b.count - a.count),
    })).sort((a, b) => b.totalMs - a.totalMs);
  }

  /** Forgets what was recorded so far. */
  reset() {
    this.stats.clear();
    this.printed = false;
  }

  /** @private */
  printReport() {
    if (this.printed || this.stats.size === 0) return;
    this.printed = true;
    this.print(formatProfile(this.report(), this.engine));
  }

  /** @private @param {string} op @param {unknown[]} args @param {number} ms */
  record(op, args, ms) {
    let s = this.stats.get(op);
    if (!s) this.stats.set(op, s = { count: 0, ms: 0, shapes: new Map() });
    s.count++;
    s.ms += ms;
    const key = describeArgs(args);
    s.shapes.set(key, (s.shapes.get(key) ?? 0) + 1);
  }
}

/**
 * The per-op table: op, count, total ms, mean µs, share of the total, and the most frequent input
 * shapes (`ᵀ` marks matmul's transposed B).
 * @param {OpProfile[]} rows @param {string} [title]
 */
export function formatProfile(rows, title = 'profile') {
  const total = rows.reduce((a, r) => a + r.totalMs, 0);
  const header = ['op', 'count', 'total ms', 'mean µs', '%', 'shapes (most frequent first)'];
  const body = rows.map((r) => [
    r.op,
    String(r.count),
    r.totalMs.toFixed(2),
    r.meanUs.toFixed(1),
    total > 0 ? ((100 * r.totalMs) / total).toFixed(1) : '0.0',
    r.shapes.slice(0, 3).map((s) => `${s.shapes || '()'} ×${s.count}`).join(', ')
      + (r.shapes.length > 3 ? `, … ${r.shapes.length - 3} more` : ''),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i].length)));
  const right = [false, true, true, true, true, false];
  const line = (/** @type {string[]} */ r) => r.map((c, i) => (i === r.length - 1 ? c
    : right[i] ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ');
  return [`── ${title}: ${total.toFixed(1)} ms in ${rows.reduce((a, r) => a + r.count, 0)} calls ──`,
    line(header), ...body.map(line), ''].join('\n');
}

/** Input shapes of one call, e.g. "[1,64] [256,64]ᵀ" or "[7,4,16] i32[7]". @param {unknown[]} args */
function describeArgs(args) {
  /** @type {string[]} */
  const parts = [];
  for (const a of args) {
    if (isTensor(a)) parts.push(shapeOf(a));
    else if (Array.isArray(a) && a.length > 0 && a.every((n) => typeof n === 'number')) parts.push(`[${a.join(',')}]`);
    else if (Array.isArray(a) && a.every(isTensor)) {
      parts.push(a.length > 4 ? `(${a.length} tensors)` : `(${a.map(shapeOf).join(' ')})`);
    } else if (a instanceof Int32Array) parts.push(`i32[${a.length}]`);
    else if (typeof a === 'string') parts.push(a);
    else if (a && typeof a === 'object' && !ArrayBuffer.isView(a)) {
      const o = /** @type {Record<string, unknown>} */ (a);
      if (o.transposeB && parts.length) parts[parts.length - 1] += 'ᵀ';
      if (isTensor(o.bias)) parts.push(`+${shapeOf(o.bias)}`);
    }
  }
  return parts.join(' ');
}

/** @param {unknown} t @returns {t is Tensor} */
function isTensor(t) {
  return typeof t === 'object' && t !== null && Array.isArray(/** @type {Tensor} */ (t).shape);
}

/** @param {Tensor} t */
function shapeOf(t) {
  return `[${t.shape.join(',')}]`;
}
