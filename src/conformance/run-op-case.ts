/**
 * Runs one op case on the tested backend and on the oracle, and judges it: unsupported when the
 * backend says so (supports() false, or a "not supported" error), fail on a throw, a shape
 * mismatch, a NaN/Inf the oracle does not have, or an error above the case's threshold.
 */
import type { AttentionKernel } from '../interfaces/attention-kernel.js';
import type { Tensor, TensorBackend } from '../interfaces/tensor-backend.js';
import { DEFAULT_USES, declaresOp } from '../ops/with-default-ops.js';
import type { FusedOpName, OpName } from '../interfaces/tensor-backend.js';
import { compare, unflatten } from './compare.js';
import { opThreshold } from './lossy-weights.js';
import { fmt, type CaseContext, type KernelSlot, type OpCase, type PreparedCase } from './op-case.js';
import { formatError, type OpResult } from './report.js';

/** One backend with the attention kernels its cases may ask for. */
export interface ConformanceSide {
  /** Registry name (or the factory's backend name). */
  name: string;
  backend: TensorBackend;
  /** The oracle runs every attention case on its default kernel. */
  kernels: Readonly<Record<KernelSlot, { name: string; kernel: AttentionKernel }>>;
}

/** The case as the report names it: attention cases lead with the kernel's name. */
export function caseLabel(c: OpCase, side: ConformanceSide): string {
  return c.kernel ? `${side.kernels[c.kernel].name}: ${c.name}` : c.name;
}

/** An error that means "this backend does not do that", as opposed to a crash. */
export function isNotSupported(e: unknown): boolean {
  const err = e as { code?: unknown; message?: unknown };
  return err?.code === 'unsupported' || err?.code === 'not_supported'
    || (typeof err?.message === 'string' && /not supported|unsupported|not implemented/i.test(err.message));
}

const num = (x: number): string => String(Number(x.toPrecision(6)));
const firstLine = (e: unknown): string => String((e as Error)?.message ?? e).split('\n')[0];

interface Output { data: Float32Array; shape: readonly number[] }

async function execute(c: OpCase, side: ConformanceSide, oracle: boolean): Promise<Output> {
  const attention = side.kernels[oracle ? 'default' : c.kernel ?? 'default'].kernel;
  const ctx: CaseContext = { backend: side.backend, attention, oracle };
  const prepared = c.prepare(ctx);
  try {
    const out = prepared.run();
    try {
      return { data: await side.backend.read(out), shape: [...out.shape] };
    } finally {
      side.backend.dispose(out);
    }
  } finally {
    prepared.dispose();
  }
}

export async function runOpCase(c: OpCase, tested: ConformanceSide, oracle: ConformanceSide, perf = false): Promise<OpResult> {
  const base = { op: c.op, case: caseLabel(c, tested), shape: c.shape, threshold: opThreshold(c, tested.backend.lossyWeights) };
  // A composite the backend does not declare runs on the defaults: it needs their core ops.
  const onDefaults = c.needs.filter(([op]) => isFused(op) && !declaresOp(tested.backend, op)).map(([op]) => op);
  const needs = c.needs.flatMap(([op, dtype]) => (onDefaults.includes(op)
    ? DEFAULT_USES[op as FusedOpName].map((core) => [core, dtype] as const) : [[op, dtype] as const]));
  const missing = needs.find(([op, dtype]) => !tested.backend.supports(op, dtype));
  if (missing) return { ...base, error: null, status: 'unsupported', detail: `supports('${missing[0]}', '${missing[1]}') is false` };
  const result = await runSupported(c, tested, oracle, base, perf);
  if (onDefaults.length > 0) result.onDefaults = [...new Set(onDefaults)];
  return result;
}

const FUSED: ReadonlySet<string> = new Set(Object.keys(DEFAULT_USES));
const isFused = (op: OpName): op is FusedOpName => FUSED.has(op);

async function runSupported(c: OpCase, tested: ConformanceSide, oracle: ConformanceSide, base: Omit<OpResult, 'error' | 'status'>, perf: boolean): Promise<OpResult> {

  let expected: Output;
  try {
    expected = await execute(c, oracle, true);
  } catch (e) {
    return isNotSupported(e)
      ? { ...base, error: null, status: 'unsupported', detail: `the oracle (${oracle.name}) cannot run it: ${firstLine(e)}` }
      : { ...base, error: null, status: 'fail', detail: `the oracle (${oracle.name}) threw: ${firstLine(e)}` };
  }
  let actual: Output;
  try {
    actual = await execute(c, tested, false);
  } catch (e) {
    return isNotSupported(e)
      ? { ...base, error: null, status: 'unsupported', detail: firstLine(e) }
      : { ...base, error: null, status: 'fail', detail: `threw: ${firstLine(e)}` };
  }

  const result = judge(base, actual, expected);
  if (perf) Object.assign(result, await measure(c, tested));
  return result;
}

function judge(base: Omit<OpResult, 'error' | 'status'>, actual: Output, expected: Output): OpResult {
  if (fmt(actual.shape) !== fmt(expected.shape)) {
    return { ...base, error: null, status: 'fail', detail: `output shape ${fmt(actual.shape)}, expected ${fmt(expected.shape)}` };
  }
  const cmp = compare(actual.data, expected.data);
  const at = `at ${fmt(unflatten(cmp.at, expected.shape))} (${num(actual.data[cmp.at])} vs ${num(expected.data[cmp.at])})`;
  if (cmp.problem) return { ...base, error: null, status: 'fail', detail: `${cmp.problem}; first ${at}` };
  if (cmp.error <= base.threshold) return { ...base, error: cmp.error, status: 'pass' };
  return { ...base, error: cmp.error, status: 'fail',
    detail: `error ${formatError(cmp.error)} > ${formatError(base.threshold)}; max |diff| ${formatError(cmp.maxAbsDiff)} ${at}` };
}

/**
 * µs per run. A backend may record ops lazily and compute only on read, so each run is read back;
 * the time of reading an already computed result is then subtracted. After one warm-up, n
 * doubles until n runs take ≥ 10 ms; the best of three such batches is kept (the one least
 * disturbed by GC or other load).
 */
async function measure(c: OpCase, side: ConformanceSide): Promise<Pick<OpResult, 'usPerRun' | 'gflops' | 'gbps'>> {
  const b = side.backend;
  const prepared: PreparedCase = c.prepare({ backend: b, attention: side.kernels[c.kernel ?? 'default'].kernel, oracle: false });
  const runs = async (n: number): Promise<number> => {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      const out = prepared.run();
      await b.read(out);
      b.dispose(out);
    }
    return performance.now() - t0;
  };
  const reads = async (n: number): Promise<number> => {
    const out = prepared.run();
    await b.read(out);
    const t0 = performance.now();
    for (let i = 0; i < n; i++) await b.read(out);
    const ms = performance.now() - t0;
    b.dispose(out);
    return ms;
  };
  try {
    await runs(1);
    let n = 1;
    while (n < 1 << 16 && await runs(n) < 10) n *= 2;
    const best = Math.min(await runs(n), await runs(n), await runs(n));
    const readBack = Math.min(await reads(n), await reads(n));
    const us = (Math.max(best - readBack, best / 100) * 1000) / n;
    return 'flops' in c.work ? { usPerRun: us, gflops: c.work.flops / us / 1e3 } : { usPerRun: us, gbps: c.work.bytes / us / 1e3 };
  } catch {
    return {};           // the verdict already records a throw; timing adds nothing
  } finally {
    prepared.dispose();
  }
}
