/**
 * Synchronous parallel calls into one WebAssembly module on a shared memory.
 *
 * The caller's thread runs the first call itself; worker threads, each with its own instance of
 * the same module on the same shared memory, run the others. A worker sleeps in Atomics.wait on
 * its control word until the caller sets it to RUN (after writing the call's export index and
 * i32 arguments next to it), runs the call, sets it back to IDLE and notifies. Because the caller
 * blocks in Atomics.wait too, the whole operation is synchronous for its caller.
 *
 * Data written by the caller before Atomics.store(RUN) is visible to the worker after its wait
 * returns, and the worker's results are visible to the caller once it reads IDLE
 * (Atomics operations are sequentially consistent).
 */
import type { Worker } from 'node:worker_threads';

/** The part of the WebAssembly JS API used here (the project's TypeScript lib has no DOM types). */
export interface WasmMemory { readonly buffer: ArrayBufferLike; grow(pages: number): number }
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Memory: new (d: { initial: number; maximum: number; shared: boolean }) => WasmMemory;
  Instance: new (module: object, imports: object) => { exports: Record<string, unknown> };
}
export const wasmApi = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

export const WASM_PAGE = 65536;

/** `bytes` rounded up to a multiple of 64 (a cache line): where regions of a shared memory start. */
export function align64(bytes: number): number {
  return Math.ceil(bytes / 64) * 64;
}

/** One call: an export of the module (by name) and its i32 arguments. */
export interface WasmCall {
  fn: string;
  args: readonly number[];
}

// Control block of one worker (Int32Array over a SharedArrayBuffer).
const STATE = 0, READY = 1, FAILED = 2, FN = 3, ARGS = 4, MAX_ARGS = 12;
const IDLE = 0, RUN = 1, QUIT = 2;

/**
 * The worker. Plain JS evaluated from a string, so it runs the same from the sources and from
 * the bundled package (a worker file path would differ between the two).
 */
const WORKER_SOURCE = `
const { workerData } = require('node:worker_threads');
const ctl = new Int32Array(workerData.control);
let fns;
try {
  const exports = new WebAssembly.Instance(workerData.module, { env: { memory: workerData.memory } }).exports;
  fns = workerData.names.map((n) => exports[n]);
  Atomics.store(ctl, ${READY}, 1);
} catch (e) {
  Atomics.store(ctl, ${READY}, -1);
}
Atomics.notify(ctl, ${READY});
while (fns) {
  Atomics.wait(ctl, ${STATE}, ${IDLE});
  if (Atomics.load(ctl, ${STATE}) === ${QUIT}) break;
  try {
    fns[ctl[${FN}]](...ctl.subarray(${ARGS}, ${ARGS + MAX_ARGS}));
    ctl[${FAILED}] = 0;
  } catch (e) {
    ctl[${FAILED}] = 1;
  }
  Atomics.store(ctl, ${STATE}, ${IDLE});
  Atomics.notify(ctl, ${STATE});
}
`;

interface Helper {
  worker: Worker;
  ctl: Int32Array;
}

export interface WasmThreadPoolOptions {
  /** Threads in all, the caller's included (default: the machine's parallelism, at most 8). */
  threads?: number;
  /** Memory limits in 64 KiB pages. */
  initialPages?: number;
  maximumPages: number;
}

/** A module instantiated on the caller's thread and, lazily, on helper threads, sharing one memory. */
export class WasmThreadPool {
  readonly threads: number;
  readonly memory: WasmMemory;
  /** The caller thread's instance exports. */
  readonly exports: Record<string, unknown>;
  private readonly module: object;
  private readonly names: string[];
  private helpers: Helper[] | undefined;
  private cached: { f32: Float32Array<ArrayBufferLike>; u16: Uint16Array<ArrayBufferLike> } | undefined;

  constructor(moduleBytes: Uint8Array, names: readonly string[], options: WasmThreadPoolOptions) {
    this.threads = Math.max(1, Math.floor(options.threads ?? defaultThreads()));
    this.names = [...names];
    this.module = new wasmApi.Module(moduleBytes);
    this.memory = new wasmApi.Memory({ initial: options.initialPages ?? 1, maximum: options.maximumPages, shared: true });
    this.exports = new wasmApi.Instance(this.module, { env: { memory: this.memory } }).exports;
    for (const n of names) if (typeof this.exports[n] !== 'function') throw new Error(`module has no export ${n}`);
  }

  /** Grows the memory to at least `bytes`. */
  ensure(bytes: number): void {
    const have = this.memory.buffer.byteLength;
    if (bytes > have) this.memory.grow(Math.ceil((bytes - have) / WASM_PAGE));
  }

  /** float32 and 16-bit views of the whole memory as it is now (made again after it grows). */
  views(): { f32: Float32Array<ArrayBufferLike>; u16: Uint16Array<ArrayBufferLike> } {
    const buffer = this.memory.buffer;
    if (!this.cached || this.cached.f32.buffer !== buffer || this.cached.f32.byteLength !== buffer.byteLength) {
      this.cached = { f32: new Float32Array(buffer), u16: new Uint16Array(buffer) };
    }
    return this.cached;
  }

  /** Runs calls[0] here and the others on helper threads (calls.length ≤ threads); returns when all are done. */
  run(calls: readonly WasmCall[]): void {
    if (calls.length > this.threads) throw new Error(`${calls.length} calls for ${this.threads} threads`);
    const helpers = calls.length > 1 ? this.startHelpers().slice(0, calls.length - 1) : [];
    helpers.forEach((h, i) => {
      const call = calls[i + 1];
      if (call.args.length > MAX_ARGS) throw new Error(`at most ${MAX_ARGS} arguments`);
      h.ctl[FN] = this.index(call.fn);
      h.ctl.fill(0, ARGS, ARGS + MAX_ARGS);
      h.ctl.set(call.args, ARGS);
      Atomics.store(h.ctl, STATE, RUN);
      Atomics.notify(h.ctl, STATE);
    });
    let error: unknown;
    try {
      (this.exports[calls[0].fn] as (...a: number[]) => void)(...calls[0].args);
    } catch (e) {
      error = e;
    }
    for (const h of helpers) {
      while (Atomics.load(h.ctl, STATE) !== IDLE) Atomics.wait(h.ctl, STATE, RUN);
      if (h.ctl[FAILED] !== 0) error ??= new Error('a wasm worker thread failed');
    }
    if (error) throw error;
  }

  /** Stops the helper threads (unreferenced, they would otherwise idle until the process exits). */
  close(): void {
    for (const h of this.helpers ?? []) {
      Atomics.store(h.ctl, STATE, QUIT);
      Atomics.notify(h.ctl, STATE);
      void h.worker.terminate();
    }
    this.helpers = undefined;
  }

  private index(fn: string): number {
    const i = this.names.indexOf(fn);
    if (i < 0) throw new Error(`unknown export ${fn}`);
    return i;
  }

  private startHelpers(): Helper[] {
    if (this.helpers) return this.helpers;
    const helpers: Helper[] = [];
    try {
      for (let t = 1; t < this.threads; t++) {
        const ctl = new Int32Array(new SharedArrayBuffer((ARGS + MAX_ARGS) * 4));
        const { Worker } = nodeModule('node:worker_threads');
        const worker = new Worker(WORKER_SOURCE, {
          eval: true,
          workerData: { module: this.module, memory: this.memory, names: this.names, control: ctl.buffer },
        });
        worker.unref();
        helpers.push({ worker, ctl });
      }
      for (const h of helpers) {
        // A worker boots on its own thread, so the caller may block while it starts.
        if (Atomics.wait(h.ctl, READY, 0, 30_000) === 'timed-out' || h.ctl[READY] !== 1) {
          throw new Error('a wasm worker thread did not start');
        }
      }
    } catch (e) {
      for (const h of helpers) void h.worker.terminate();
      throw e;
    }
    this.helpers = helpers;
    return helpers;
  }
}

export function defaultThreads(): number {
  return Math.min(8, nodeModule('node:os').availableParallelism());
}

/**
 * Node built-ins, loaded when first needed, so that importing the reference backend does not
 * require Node (elsewhere the wasm path fails to start and the JS kernel runs).
 */
function nodeModule<T extends 'node:os' | 'node:worker_threads'>(id: T): T extends 'node:os' ? typeof import('node:os') : typeof import('node:worker_threads') {
  const get = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process?.getBuiltinModule;
  const m = get?.(id);
  if (!m) throw new Error(`${id} is not available`);
  return m as never;
}
