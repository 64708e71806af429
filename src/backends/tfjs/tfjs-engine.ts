/**
 * Picks and starts the TensorFlow.js engine the tfjs backend runs on.
 *
 * TensorFlow.js keeps one engine per process: its tensor registry and its "current backend"
 * are globals of @tensorflow/tfjs-core. So every TfjsBackend in a process shares one engine:
 *
 * - the first backend to start picks it (its `engine` option, else the best one installed);
 * - later backends join it; one that asks for a different engine while any tfjs backend is
 *   open fails with a PaliGemmaError naming both (switching would silently move every live
 *   tensor, weights included, to the other engine);
 * - once every tfjs backend is closed, the next one may start a different engine.
 *
 * Engines, best first:
 *   node-gpu  @tensorflow/tfjs-node-gpu   libtensorflow with CUDA
 *   node      @tensorflow/tfjs-node       libtensorflow on the CPU
 *   wasm      @tensorflow/tfjs-backend-wasm (XNNPACK, SIMD; single-threaded in Node)
 *   cpu       @tensorflow/tfjs's plain JavaScript kernels
 *
 * Every package is imported on demand, so the rest of the SDK loads without any of them.
 */
import { createRequire } from 'node:module';
import { dirname, sep } from 'node:path';
import { PaliGemmaError } from '../../interfaces/errors.js';
import { PackageNotInstalledError, isPackageNotFound } from '../optional-package.js';

/** The @tensorflow/tfjs namespace (tfjs-node re-exports the same one). Types only. */
export type TfModule = typeof import('@tensorflow/tfjs');
/** A TensorFlow.js tensor. */
export type TfTensor = import('@tensorflow/tfjs').Tensor;

export type TfjsEngineKind = 'node-gpu' | 'node' | 'wasm' | 'cpu';

/** Auto-selection order. */
export const ENGINE_ORDER: readonly TfjsEngineKind[] = ['node-gpu', 'node', 'wasm', 'cpu'];

/** What to install for each engine. */
const INSTALL: Readonly<Record<TfjsEngineKind, string>> = {
  'node-gpu': 'npm install @tensorflow/tfjs-node-gpu (needs CUDA 11.8 and cuDNN 8; its install script downloads libtensorflow)',
  node: 'npm install @tensorflow/tfjs-node (its install script downloads libtensorflow)',
  wasm: 'npm install @tensorflow/tfjs @tensorflow/tfjs-backend-wasm',
  cpu: 'npm install @tensorflow/tfjs',
};

/** The engine running in this process. */
export interface TfjsEngine {
  readonly kind: TfjsEngineKind;
  readonly tf: TfModule;
  /** TensorFlow.js's name for it ('tensorflow', 'wasm', 'cpu'). */
  readonly tfBackendName: string;
  /** wasm only: whether the SIMD build runs. */
  readonly simd?: boolean;
  /** Human-readable, e.g. 'tfjs (wasm)'. */
  readonly label: string;
}

export function isEngineKind(x: unknown): x is TfjsEngineKind {
  return typeof x === 'string' && (ENGINE_ORDER as readonly string[]).includes(x);
}

// ── process-wide state ──────────────────────────────────────────────────────
let active: TfjsEngine | undefined;
/** Open backends using `active` (tokens, so a double release is harmless). */
const users = new Set<object>();
/** Starts are serialised: two backends initialising at once must not race setBackend. */
let queue: Promise<unknown> = Promise.resolve();

/** The engine in use, if any backend has started one. */
export function activeEngine(): TfjsEngine | undefined {
  return active;
}

/** Number of open tfjs backends. */
export function engineUsers(): number {
  return users.size;
}

/**
 * Starts (or joins) the process's engine for `user`. `wanted` forces an engine; `allowed`
 * limits auto-selection (e.g. no GPU engine for device 'cpu').
 */
export function acquireEngine(
  user: object, wanted: TfjsEngineKind | undefined, allowed: readonly TfjsEngineKind[] = ENGINE_ORDER,
): Promise<TfjsEngine> {
  const run = queue.then(() => acquire(user, wanted, allowed));
  queue = run.catch(() => undefined);
  return run;
}

/** `user` no longer uses the engine. */
export function releaseEngine(user: object): void {
  users.delete(user);
}

async function acquire(user: object, wanted: TfjsEngineKind | undefined, allowed: readonly TfjsEngineKind[]): Promise<TfjsEngine> {
  if (active && users.size > 0) {
    if (wanted ? wanted !== active.kind : !allowed.includes(active.kind)) {
      throw new PaliGemmaError(
        `tfjs backend: engine ${wanted ? `'${wanted}'` : `${allowed.join('/')}`} was asked for, but this process already runs TensorFlow.js on '${active.kind}' ` +
        `for ${users.size} open tfjs backend(s); TensorFlow.js has one engine per process, so close those first or use engine '${active.kind}'`,
        'engine_conflict');
    }
    // Someone may have switched TensorFlow.js's global backend behind our back: switch it back.
    if (active.tf.getBackend() !== active.tfBackendName) await active.tf.setBackend(active.tfBackendName);
    users.add(user);
    return active;
  }

  // Nobody uses the engine: the same one asked for again is selected as it is; a different or
  // automatic choice probes the engines afresh (imports are cached, so this is quick).
  if (active && wanted === active.kind) {
    if (active.tf.getBackend() !== active.tfBackendName) await active.tf.setBackend(active.tfBackendName);
    users.add(user);
    return active;
  }

  const candidates = wanted ? [wanted] : ENGINE_ORDER.filter((k) => allowed.includes(k));
  const failures: string[] = [];
  let allAbsent = true;   // every engine failed only because its package is not installed
  for (const kind of candidates) {
    let engine: TfjsEngine;
    try {
      engine = await startEngine(kind);
    } catch (e) {
      const why = e instanceof PaliGemmaError ? e.message : firstLine(e);
      if (wanted) throw e instanceof PaliGemmaError ? e : new PaliGemmaError(`tfjs backend: engine '${kind}' failed to start: ${why}`, 'missing_dependency');
      failures.push(`${kind}: ${why}`);
      if (!(e instanceof PackageNotInstalledError)) allAbsent = false;
      continue;
    }
    active = engine;
    users.add(user);
    return engine;
  }
  if (allAbsent) {
    // The lean install: TensorFlow.js is an optional peer dependency.
    throw new PaliGemmaError(`the tfjs backend needs TensorFlow.js, which is not installed: ${INSTALL.wasm}`, 'missing_dependency');
  }
  throw new PaliGemmaError(`tfjs backend: no TensorFlow.js engine could start (${failures.join('; ')}); ${INSTALL.cpu}`, 'missing_dependency');
}

// ── loading ─────────────────────────────────────────────────────────────────
const require = createRequire(import.meta.url);

function firstLine(e: unknown): string {
  return String((e as Error)?.message ?? e).split('\n')[0];
}

/**
 * Imports a package by a name TypeScript does not resolve (it may not be installed). CommonJS
 * packages arrive as a namespace whose `default` is module.exports: `probe` names an export
 * that tells which of the two carries the API.
 */
async function importPackage(name: string, kind: TfjsEngineKind, probe: string): Promise<Record<string, unknown>> {
  let ns: Record<string, unknown> & { default?: Record<string, unknown> };
  try {
    ns = await import(name);
  } catch (e) {
    if (isPackageNotFound(e, name)) {
      throw new PackageNotInstalledError(`tfjs backend: engine '${kind}' needs the ${name} package, which is not installed: ${INSTALL[kind]}`);
    }
    throw new PaliGemmaError(`tfjs backend: engine '${kind}': ${name} failed to load: ${firstLine(e)}`, 'missing_dependency');
  }
  if (typeof ns[probe] !== 'function' && typeof ns.default?.[probe] === 'function') return ns.default;
  return ns;
}

function asTf(m: Record<string, unknown>, from: string): TfModule {
  if (typeof m.matMul !== 'function' || typeof m.setBackend !== 'function') {
    throw new PaliGemmaError(`tfjs backend: ${from} does not look like TensorFlow.js (no matMul/setBackend export)`, 'missing_dependency');
  }
  return m as unknown as TfModule;
}

async function select(tf: TfModule, name: string, kind: TfjsEngineKind): Promise<void> {
  let ok = false;
  try {
    ok = await tf.setBackend(name);
  } catch (e) {
    throw new PaliGemmaError(`tfjs backend: engine '${kind}' failed to start: ${firstLine(e)}`, 'missing_dependency');
  }
  if (!ok || tf.getBackend() !== name) {
    throw new PaliGemmaError(`tfjs backend: engine '${kind}' failed to start (TensorFlow.js could not initialise its '${name}' backend)`, 'missing_dependency');
  }
  await tf.ready();
}

async function startEngine(kind: TfjsEngineKind): Promise<TfjsEngine> {
  switch (kind) {
    case 'node-gpu':
    case 'node': {
      // Both register TensorFlow.js's 'tensorflow' backend and re-export the tfjs namespace.
      const tf = asTf(await importPackage(kind === 'node' ? '@tensorflow/tfjs-node' : '@tensorflow/tfjs-node-gpu', kind, 'matMul'), kind);
      await select(tf, 'tensorflow', kind);
      return { kind, tf, tfBackendName: 'tensorflow', label: `tfjs (${kind})` };
    }
    case 'wasm': {
      const tf = asTf(await importPackage('@tensorflow/tfjs', kind, 'matMul'), '@tensorflow/tfjs');
      const wasm = await importPackage('@tensorflow/tfjs-backend-wasm', kind, 'setWasmPaths') as { setWasmPaths?: (p: string, platformFetch?: boolean) => void };
      if (typeof wasm.setWasmPaths !== 'function') {
        throw new PaliGemmaError('tfjs backend: @tensorflow/tfjs-backend-wasm has no setWasmPaths export', 'missing_dependency');
      }
      // The .wasm binaries sit next to the package's main file: load them from disk, never fetch.
      wasm.setWasmPaths(dirname(require.resolve('@tensorflow/tfjs-backend-wasm')) + sep);
      // Node has SharedArrayBuffer, so tfjs would pick the threaded build, whose workers cannot
      // start from a file path in Node. The single-threaded SIMD build runs everywhere.
      tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
      await select(tf, 'wasm', kind);
      const simd = Boolean(await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT'));
      return { kind, tf, tfBackendName: 'wasm', simd, label: simd ? 'tfjs (wasm)' : 'tfjs (wasm, no SIMD)' };
    }
    case 'cpu': {
      const tf = asTf(await importPackage('@tensorflow/tfjs', kind, 'matMul'), '@tensorflow/tfjs');
      await select(tf, 'cpu', kind);
      // The cpu kernels print a multi-line "install the node backend" notice on first use;
      // engine selection already tells the user which engine runs.
      const cpu = tf.backend() as unknown as { firstUse?: boolean };
      if (typeof cpu.firstUse === 'boolean') cpu.firstUse = false;
      return { kind, tf, tfBackendName: 'cpu', label: 'tfjs (cpu)' };
    }
  }
}
