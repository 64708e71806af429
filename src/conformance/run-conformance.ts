/**
 * Cross-backend conformance as a library call: every op case, the sampler cases and whole
 * tiny (or given) checkpoints on one backend, each judged against the oracle backend.
 *
 * ```ts
 * const report = await runConformance({ backend: 'onnx', plugins: ['./my-plugin.js'] });
 * if (!report.ok) console.log(report.ops.filter((o) => o.status === 'fail'));
 * ```
 */
import { existsSync, statSync } from 'node:fs';
import { createRegistry, startBackend } from '../create-pipeline.js';
import type { BackendOptions } from '../interfaces/contributions.js';
import { PaliGemmaError } from '../interfaces/errors.js';
import type { TensorBackend } from '../interfaces/tensor-backend.js';
import type { PaliGemmaPlugin } from '../plugin/define-plugin.js';
import { loadPluginModule } from '../plugin/load-plugin.js';
import type { PartRegistry } from '../plugin/part-registry.js';
import { runModelCase, type ModelSide } from './model-cases.js';
import type { OpCase } from './op-case.js';
import { opCases } from './op-cases.js';
import { finishReport, type ConformanceReport, type ModelResult, type OpResult } from './report.js';
import { caseLabel, runOpCase, type ConformanceSide } from './run-op-case.js';
import { samplerCases } from './sampler-cases.js';
import { buildTinyModels, type ModelFolder } from './tiny-models.js';

/** Makes the backend under test directly, instead of by registry name. */
export type BackendFactory = () => TensorBackend | Promise<TensorBackend>;

export interface ConformanceOptions {
  /** A registered backend name, or a factory for an instance you build yourself. */
  backend: string | BackendFactory;
  /** The oracle's registry name (default 'reference'). */
  against?: string;
  /** Passed to the tested backend's factory (e.g. { device: 'cuda' }). */
  backendOptions?: BackendOptions;
  /** A factory backend's default attention kernel (default 'plain'). */
  attention?: string;
  /** Model folders; default: the built-in tiny checkpoints (MQA, MHA, GQA); [] runs none. */
  models?: readonly string[];
  /** Keeps only the op and sampler cases whose "op case" text matches (a string: substring or regex, case-insensitive). */
  ops?: string | RegExp;
  /** Adds µs per run and GFLOP/s or GB/s to each op case. */
  perf?: boolean;
  /** Sampler cases (default true). */
  samplers?: boolean;
  /** Plugin objects, paths or packages; loaded into `registry` when one is given. */
  plugins?: ReadonlyArray<PaliGemmaPlugin | string>;
  registry?: PartRegistry;
  /** Called as each case finishes (progress). */
  onResult?: (r: OpResult | ModelResult) => void;
}

/** Whether a case's "op case" text passes --ops: a substring, or a regex, case-insensitive. */
export function caseMatcher(pattern: string | RegExp | undefined): (text: string) => boolean {
  if (!pattern) return () => true;
  if (pattern instanceof RegExp) return (text) => pattern.test(text);
  let re: RegExp | undefined;
  try { re = new RegExp(pattern, 'i'); } catch { re = undefined; }
  const needle = pattern.toLowerCase();
  return (text) => text.toLowerCase().includes(needle) || (re?.test(text) ?? false);
}

/** The started backends and kernels of one run; the mocha helper drives it case by case. */
export class ConformanceSession {
  private constructor(
    readonly registry: PartRegistry,
    readonly tested: ConformanceSide & ModelSide,
    readonly oracle: ConformanceSide & ModelSide,
    private readonly options: ConformanceOptions,
  ) {}

  static async open(options: ConformanceOptions): Promise<ConformanceSession> {
    const registry = options.registry ?? await createRegistry(options.plugins);
    if (options.registry) {
      for (const p of options.plugins ?? []) registry.load(typeof p === 'string' ? await loadPluginModule(p) : p);
    }
    const againstName = options.against ?? 'reference';
    // Unknown names fail here, before anything starts, with a PaliGemmaError listing the available ones.
    if (typeof options.backend === 'string') registry.get('backend', options.backend);
    const oracleBackend = await startBackend(registry, againstName);
    let testedBackend: TensorBackend | undefined;
    try {
      const oracle = side(registry, againstName, oracleBackend);
      const named = typeof options.backend === 'string' ? options.backend : undefined;
      testedBackend = named ? await startBackend(registry, named, options.backendOptions) : await (options.backend as BackendFactory)();
      const tested = side(registry, named, testedBackend, options.attention);
      return new ConformanceSession(registry, tested, oracle, options);
    } catch (e) {
      await testedBackend?.close?.();
      await oracleBackend.close?.();
      throw e;
    }
  }

  /** Op cases after --ops; the 'plain' kernel slot is dropped when it is the default kernel. */
  opCases(): OpCase[] {
    const match = caseMatcher(this.options.ops);
    return opCases().filter((c) => !(c.kernel === 'plain' && this.tested.kernels.default.name === 'plain'))
      .filter((c) => match(`${c.op} ${caseLabel(c, this.tested)}`));
  }

  runOp(c: OpCase): Promise<OpResult> {
    return runOpCase(c, this.tested, this.oracle, this.options.perf);
  }

  async runSamplers(): Promise<OpResult[]> {
    const match = caseMatcher(this.options.ops);
    return (await samplerCases(this.registry, this.tested, this.oracle)).filter((r) => match(`${r.op} ${r.case}`));
  }

  runModel(model: ModelFolder): Promise<ModelResult> {
    return runModelCase(model, this.tested, this.oracle, this.registry);
  }

  async close(): Promise<void> {
    await this.tested.backend.close?.();
    await this.oracle.backend.close?.();
  }
}

/** A started backend with its default kernel, 'plain', and its KV cache store. */
function side(registry: PartRegistry, name: string | undefined, backend: TensorBackend, attention?: string): ConformanceSide & ModelSide {
  const contribution = name === undefined ? undefined : registry.get('backend', name);
  const defaultName = contribution?.defaultAttention ?? attention ?? 'plain';
  const kvCacheStore = registry.get('kvCache', contribution?.defaultKvCache ?? 'contiguous').create();
  const kernel = registry.get('attention', defaultName).create();
  return {
    name: name ?? backend.name,
    backend,
    attention: kernel,
    kvCacheStore,
    kernels: {
      default: { name: defaultName, kernel },
      plain: { name: 'plain', kernel: defaultName === 'plain' ? kernel : registry.get('attention', 'plain').create() },
    },
  };
}

function checkModelFolders(dirs: readonly string[]): void {
  for (const dir of dirs) {
    if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new PaliGemmaError(`model folder ${dir} does not exist`);
    if (!existsSync(`${dir}/config.json`)) throw new PaliGemmaError(`model folder ${dir} has no config.json`);
  }
}

export async function runConformance(options: ConformanceOptions): Promise<ConformanceReport> {
  if (options.models) checkModelFolders(options.models);
  const session = await ConformanceSession.open(options);
  const done = <T extends OpResult | ModelResult>(r: T): T => { options.onResult?.(r); return r; };
  try {
    const ops: OpResult[] = [];
    for (const c of session.opCases()) ops.push(done(await session.runOp(c)));
    if (options.samplers !== false) for (const r of await session.runSamplers()) ops.push(done(r));
    if (options.ops && ops.length === 0) {
      throw new PaliGemmaError(`--ops ${String(options.ops)} matches no case (ops: ${[...new Set(opCases().map((c) => c.op))].join(', ')}, sampler)`);
    }

    const models: ModelResult[] = [];
    const tiny = options.models ? undefined : await buildTinyModels();
    try {
      const folders = tiny?.models ?? options.models!.map((dir) => ({ label: dir, dir }));
      for (const m of folders) models.push(done(await session.runModel(m)));
    } finally {
      await tiny?.remove();
    }
    return finishReport({
      backend: session.tested.name,
      engine: session.tested.backend.engine ?? session.tested.backend.name,
      backendOptions: typeof options.backend === 'string' ? options.backendOptions : undefined,
      against: session.oracle.name,
      againstEngine: session.oracle.backend.engine ?? session.oracle.backend.name,
      ops, models,
    });
  } finally {
    await session.close();
  }
}
