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

import { wrapBackend } from 'paligemma-sdk';

/** @import { DType, OpName, Tensor, TensorBackend } from 'paligemma-sdk' */

/**
 * @typedef {object} OpProfile
 * @property {string} op
 * @property {number} count
 * @property {number} totalMs
 * @property {number} meanUs
 * @property {{ shapes: string, count: number }[]} shapes  input shapes, most frequent first
 */

/**
 * Every method of the inner backend is forwarded by `wrapBackend` (fused ones included, so a
 * fused attention or norm of the inner backend still runs) and timed under its own name; the
 * members below are the profiler's own. The constructor returns that forwarding proxy.
 */
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
    // eslint-disable-next-line no-constructor-return
    return wrapBackend(inner, this, (op, args, call) => this.timed(op, args, call));
  }

  /**
   * Runs `fn` and records its time under `op`, keyed by the input shapes in `args`; a promise
   * (read) is timed until it settles.
   * @template T @param {string} op @param {readonly unknown[]} args @param {() => T} fn @returns {T}
   */
  timed(op, args, fn) {
    const t0 = performance.now();
    const out = fn();
    if (out instanceof Promise) {
      return /** @type {T} */ (out.then((v) => { this.record(op, args, performance.now() - t0); return v; }));
    }
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

  /** @private @param {string} op @param {readonly unknown[]} args @param {number} ms */
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

/** Input shapes of one call, e.g. "[1,64] [256,64]ᵀ" or "[7,4,16] i32[7]". @param {readonly unknown[]} args */
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
