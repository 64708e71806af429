/** What a conformance run reports, and how the CLI prints it. */
import type { BackendOptions } from '../interfaces/contributions.js';

export type CaseStatus = 'pass' | 'fail' | 'unsupported';

export interface OpResult {
  /** A TensorBackend op name, 'attention', or 'sampler'. */
  op: string;
  case: string;
  shape: string;
  /** Normalized MSE against the oracle (samplers: their own statistic); null when not measured or not finite. */
  error: number | null;
  threshold: number;
  status: CaseStatus;
  /** Why it failed or is unsupported, or where the largest difference sits. */
  detail?: string;
  /** Composites the backend does not declare, which ran on the defaults of src/ops. */
  onDefaults?: string[];
  /** --perf: microseconds per run on the tested backend, and its rate. */
  usPerRun?: number;
  gflops?: number;
  gbps?: number;
}

export interface ModelCheck {
  /** 'vision', 'prefill logits', 'greedy tokens', 'kv cache', 'score'. */
  check: string;
  error: number | null;
  threshold: number;
  status: CaseStatus;
  detail?: string;
}

export interface ModelResult {
  /** The model folder (or the built-in tiny checkpoint's name). */
  model: string;
  /** Largest |logit difference| over every prefill row; null when the model did not run. */
  maxAbsLogitDiff: number | null;
  /** Greedy tokens equal the oracle's for every step. */
  tokensMatch: boolean;
  status: CaseStatus;
  checks: ModelCheck[];
  tokens: number[];
  oracleTokens: number[];
  detail?: string;
}

export interface ConformanceReport {
  backend: string;
  /** What actually ran, e.g. 'tfjs (wasm)'. */
  engine: string;
  /** The options the tested backend was created with (e.g. { quantize: 'int8' }); absent when none. */
  backendOptions?: BackendOptions;
  against: string;
  againstEngine: string;
  /** No case failed (unsupported ones do not count against it). */
  ok: boolean;
  ops: OpResult[];
  models: ModelResult[];
  counts: Record<CaseStatus, number>;
}

/** Builds the report's verdict fields from its cases. */
export function finishReport(r: Omit<ConformanceReport, 'ok' | 'counts'>): ConformanceReport {
  const counts: Record<CaseStatus, number> = { pass: 0, fail: 0, unsupported: 0 };
  for (const c of [...r.ops, ...r.models]) counts[c.status]++;
  const { backend, engine, backendOptions, against, againstEngine, ops, models } = r;
  const withOptions = backendOptions && Object.keys(backendOptions).length > 0 ? { backendOptions } : {};
  return { backend, engine, ...withOptions, against, againstEngine, ok: counts.fail === 0, counts, ops, models };
}

export function formatError(e: number | null): string {
  if (e === null) return '-';
  if (!Number.isFinite(e)) return String(e);
  return e === 0 ? '0' : e.toExponential(1);
}

/** The human-readable table: one line per case, failures with their detail, then a summary. */
export function formatReport(r: ConformanceReport, opts: { perf?: boolean } = {}): string {
  const who = (name: string, engine: string) => (engine.startsWith(name) ? engine : `${name} (${engine})`);
  const options = Object.entries(r.backendOptions ?? {}).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
  const withOptions = options.length > 0 ? ` with ${options.join(' ')}` : '';
  const lines: string[] = [`conformance: ${who(r.backend, r.engine)}${withOptions} against ${who(r.against, r.againstEngine)}`, ''];
  const header = ['op', 'case', 'shape', 'error', 'threshold', 'status', ...(opts.perf ? ['µs/run', 'rate'] : [])];
  const rows = r.ops.map((o) => [
    o.op, o.case, o.shape, formatError(o.error), formatError(o.threshold), statusText(o.status) + (o.onDefaults ? ' (default)' : ''),
    ...(opts.perf ? [o.usPerRun === undefined ? '' : short(o.usPerRun), rate(o)] : []),
  ]);
  lines.push(...table(header, rows, r.ops.map((o) => (o.status === 'pass' ? undefined : o.detail))));
  if (r.models.length > 0) {
    lines.push('');
    const mh = ['model', 'check', 'error', 'threshold', 'status'];
    const mrows: string[][] = [];
    const details: Array<string | undefined> = [];
    for (const m of r.models) {
      if (m.checks.length === 0) { mrows.push([m.model, 'run', '-', '-', statusText(m.status)]); details.push(m.detail); }
      for (const c of m.checks) {
        mrows.push([m.model, c.check, formatError(c.error), formatError(c.threshold), statusText(c.status)]);
        details.push(c.status === 'pass' ? undefined : c.detail);
      }
    }
    lines.push(...table(mh, mrows, details));
  }
  const failed = [...r.ops.filter((o) => o.status === 'fail').map((o) => `${o.op}/${o.case}`),
    ...r.models.filter((m) => m.status === 'fail').map((m) => `model ${m.model}`)];
  lines.push('', `${r.ok ? 'PASS' : 'FAIL'}: ${r.counts.pass} passed, ${r.counts.fail} failed, ${r.counts.unsupported} unsupported`
    + ` (${r.ops.length} op and sampler cases, ${r.models.length} models; ${r.backend} against ${r.against})`
    + (failed.length ? `\nfailed: ${failed.slice(0, 12).join(', ')}${failed.length > 12 ? `, … ${failed.length - 12} more` : ''}` : ''));
  return `${lines.join('\n')}\n`;
}

/** Three significant digits, without exponents. */
const short = (x: number): string => (x >= 100 ? x.toFixed(0) : x.toPrecision(3));

/** Failures shout, so they stand out in a long table. */
const statusText = (s: CaseStatus): string => (s === 'fail' ? 'FAIL' : s);

function rate(o: OpResult): string {
  if (o.gflops !== undefined) return `${short(o.gflops)} GFLOP/s`;
  if (o.gbps !== undefined) return `${short(o.gbps)} GB/s`;
  return '';
}

function table(header: string[], rows: string[][], details: Array<string | undefined>): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i < r.length - 1 ? c.padEnd(widths[i]) : c)).join('  ').trimEnd();
  const out = [line(header)];
  rows.forEach((r, i) => {
    out.push(line(r));
    if (details[i]) out.push(`    └ ${details[i]}`);
  });
  return out;
}
