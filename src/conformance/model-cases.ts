/**
 * Model cases: one checkpoint run end to end on the tested backend and on the oracle, through
 * the same PaliGemmaModel/PaliGemmaPipeline code users run. Checked: the vision tower output,
 * prefill logits on every row, greedy tokens over STEPS steps and the logits they came from, KV-cache decoding against a
 * no-cache forward of prompt + generated tokens (every step's logits, tested backend alone), and
 * `score`.
 */
import type { AttentionKernel } from '../interfaces/attention-kernel.js';
import { PaliGemmaError } from '../interfaces/errors.js';
import type { ImageInput } from '../interfaces/image-processor.js';
import type { KVCacheStore } from '../interfaces/kv-cache-store.js';
import type { Sampler } from '../interfaces/sampler.js';
import type { LossyWeights, Tensor, TensorBackend } from '../interfaces/tensor-backend.js';
import type { Tokenizer } from '../interfaces/tokenizer.js';
import { loadCheckpoint } from '../checkpoint/load-checkpoint.js';
import type { ScoreResult } from '../generation/generation-types.js';
import { PaliGemmaPipeline } from '../paligemma-pipeline.js';
import { promptIds } from '../generation/prompt-format.js';
import type { PartRegistry } from '../plugin/part-registry.js';
import { seededRng } from '../samplers/rng.js';
import { compare } from './compare.js';
import { LOSSY_THRESHOLDS } from './lossy-weights.js';
import { formatError, type CaseStatus, type ModelCheck, type ModelResult } from './report.js';
import { isNotSupported } from './run-op-case.js';
import { SeededData } from './seeded-data.js';

export const STEPS = 8;
const PROMPT = 'caption en';
const SUFFIX = 'a cat on a mat';

/**
 * Whole-model thresholds. NMSE for tensors: a backend within the op thresholds stays orders
 * below 1e-6 through a few layers, while any wrong op is far above. Score: max |Δ log-prob|.
 */
export const MODEL_THRESHOLDS = { vision: 1e-6, logits: 1e-6, kvCache: 1e-6, score: 1e-3 } as const;

type ModelThresholds = { readonly [K in keyof typeof MODEL_THRESHOLDS]: number };

/** The whole-model thresholds for the tested backend: wider where it stores weights lossily. */
export function modelThresholds(lossy: LossyWeights | undefined): ModelThresholds {
  return lossy ? LOSSY_THRESHOLDS[lossy].model : MODEL_THRESHOLDS;
}

export interface ModelSide {
  name: string;
  backend: TensorBackend;
  attention: AttentionKernel;
  kvCacheStore: KVCacheStore;
}

interface SideRun {
  vision: Float32Array;
  /** Prefill logits [T, V], every row. */
  prefill: Float32Array;
  /** Greedy tokens, and the logits [V] each was chosen from. */
  tokens: number[];
  stepLogits: Float32Array[];
  /** Logits [STEPS, V] of one prefill over prompt + tokens[0..STEPS-2], rows T-1 onwards. */
  noCache: Float32Array;
  score: ScoreResult;
}

/** A seeded RGB test image the size of the vision tower's input. */
function testImage(size: number): ImageInput {
  const d = new SeededData(size);
  return { data: Uint8Array.from({ length: size * size * 3 }, () => Math.floor(256 * d.next())), width: size, height: size, channels: 3 };
}

async function readAndDispose(b: TensorBackend, t: Tensor): Promise<Float32Array> {
  try { return await b.read(t); } finally { b.dispose(t); }
}

async function runSide(side: ModelSide, dir: string, registry: PartRegistry, tokenizer: Tokenizer, greedy: Sampler): Promise<SideRun> {
  const b = side.backend;
  const ckpt = await loadCheckpoint(dir, b);
  try {
    const processor = await registry.get('imageProcessor', 'siglip').load(dir, ckpt.config.vision.imageSize);
    const pipe = new PaliGemmaPipeline(b, side.attention, side.kvCacheStore, greedy, tokenizer, processor, ckpt);
    const m = pipe.model;
    const image = testImage(m.config.vision.imageSize);
    const pixels = await processor.process(image);
    const vision = await readAndDispose(b, m.visionFeatures(pixels));                 // [N, Dv]
    const ids = Int32Array.from(promptIds(tokenizer, PROMPT, m.config.numImageTokens));
    const rows = m.imageRows(pixels);                                                 // [N, H]
    const rng = seededRng(0);
    try {
      // Prefill the prompt (all rows' logits), then STEPS greedy tokens through the KV cache.
      const s = await m.begin(rows, ids, { capacity: ids.length + STEPS, logitsFrom: 0 });
      const prefill = s.promptLogits!;                                                // [T, V]
      const tokens: number[] = [], stepLogits: Float32Array[] = [];
      try {
        let logits: Float32Array = s.logits;
        for (let i = 0; i < STEPS; i++) {
          stepLogits.push(logits);
          tokens.push(greedy.sample(logits, { rng }));
          if (i + 1 < STEPS) logits = await s.step(tokens[i]);
        }
      } finally {
        s.dispose();
      }
      // No cache: prompt + the first STEPS-1 tokens in one prefill; its last STEPS rows are the
      // steps' logits. The tokens enter as text rows even if one is the <image> id.
      const head = m.embedPrompt(ids, rows), tail = m.embedText(Int32Array.from(tokens.slice(0, -1)));
      const all = b.concat([head, tail], 0);                                          // [T + STEPS-1, H]
      b.dispose([head, tail]);
      const s2 = m.session(all.shape[0]);
      let noCache: Float32Array;
      try {
        noCache = await s2.prefill(all, ids.length, ids.length - 1);
      } finally {
        b.dispose(all);
        s2.dispose();
      }
      const score = await pipe.score(image, PROMPT, SUFFIX);
      return { vision, prefill, tokens, stepLogits, noCache, score };
    } finally {
      b.dispose(rows);
    }
  } finally {
    ckpt.dispose();
  }
}

function concat(rows: Float32Array[]): Float32Array {
  const out = new Float32Array(rows.reduce((a, r) => a + r.length, 0));
  rows.reduce((at, r) => { out.set(r, at); return at + r.length; }, 0);
  return out;
}

function tensorCheck(check: string, actual: Float32Array, expected: Float32Array, threshold: number): ModelCheck & { maxAbsDiff: number } {
  const c = compare(actual, expected);
  if (c.problem) return { check, error: null, threshold, status: 'fail', detail: c.problem, maxAbsDiff: Infinity };
  const ok = c.error <= threshold;
  return { check, error: c.error, threshold, status: ok ? 'pass' : 'fail', maxAbsDiff: c.maxAbsDiff,
    detail: `max |diff| ${formatError(c.maxAbsDiff)}${ok ? '' : `; NMSE ${formatError(c.error)} > ${formatError(threshold)}`}` };
}

/** Greedy tokens must match, except at a near-tie the numerics cannot decide (margin within the logit noise). */
function tokensCheck(mine: SideRun, theirs: SideRun, limits: ModelThresholds): ModelCheck {
  const i = mine.tokens.findIndex((t, k) => t !== theirs.tokens[k]);
  const base = { check: `greedy tokens (${STEPS} steps)`, threshold: 0 };
  if (i < 0) return { ...base, error: 0, status: 'pass' };
  const step = compare(mine.stepLogits[i], theirs.stepLogits[i]);
  const ref = theirs.stepLogits[i];
  const margin = ref[theirs.tokens[i]] - ref[mine.tokens[i]];
  const mismatches = mine.tokens.filter((t, k) => t !== theirs.tokens[k]).length;
  const where = `step ${i}: ${mine.tokens[i]} vs ${theirs.tokens[i]}`;
  if (!step.problem && step.error <= limits.logits && margin <= 2 * step.maxAbsDiff) {
    return { ...base, error: mismatches, status: 'pass', detail: `diverged at a near-tie, ${where} (margin ${margin.toExponential(1)})` };
  }
  return { ...base, error: mismatches, status: 'fail', detail: `first differs at ${where} (oracle margin ${margin.toFixed(4)})` };
}

/**
 * The logits each greedy token was chosen from, up to and including the first step where the
 * tokens part (later steps read different inputs). Catches what greedy tokens miss: a wrong
 * window or cap on the generated rows that happens not to flip an argmax.
 */
function stepLogitsCheck(mine: SideRun, theirs: SideRun, limits: ModelThresholds): ModelCheck & { maxAbsDiff: number } {
  const i = mine.tokens.findIndex((t, k) => t !== theirs.tokens[k]);
  const n = i < 0 ? STEPS : i + 1;
  return tensorCheck('decode step logits', concat(mine.stepLogits.slice(0, n)), concat(theirs.stepLogits.slice(0, n)), limits.logits);
}

function scoreCheck(mine: ScoreResult, theirs: ScoreResult, limits: ModelThresholds): ModelCheck {
  const base = { check: 'score log-probs', threshold: limits.score };
  if (mine.tokens.join() !== theirs.tokens.join()) return { ...base, error: null, status: 'fail', detail: 'scored different tokens' };
  const diff = Math.max(0, ...mine.logprobs.map((lp, i) => Math.abs(lp - theirs.logprobs[i])));
  const ok = Number.isFinite(diff) && diff <= base.threshold;
  return { ...base, error: Number.isFinite(diff) ? diff : null, status: ok ? 'pass' : 'fail',
    detail: `max |Δ log-prob| ${diff.toExponential(2)} over ${mine.tokens.length} tokens` };
}

export async function runModelCase(
  model: { label: string; dir: string }, tested: ModelSide, oracle: ModelSide, registry: PartRegistry,
): Promise<ModelResult> {
  const empty = { model: model.label, maxAbsLogitDiff: null, tokensMatch: false, checks: [], tokens: [], oracleTokens: [] };
  const tokenizer = await registry.get('tokenizer', 'hf').load(model.dir);
  const greedy = registry.get('sampler', 'greedy').create({});
  let theirs: SideRun;
  try {
    theirs = await runSide(oracle, model.dir, registry, tokenizer, greedy);
  } catch (e) {
    if (e instanceof PaliGemmaError) throw e;                 // a bad folder is the user's to fix
    return { ...empty, status: 'fail', detail: `the oracle (${oracle.name}) threw: ${(e as Error).message.split('\n')[0]}` };
  }
  let mine: SideRun;
  try {
    mine = await runSide(tested, model.dir, registry, tokenizer, greedy);
  } catch (e) {
    const status: CaseStatus = isNotSupported(e) ? 'unsupported' : 'fail';
    return { ...empty, oracleTokens: theirs.tokens, status, detail: `${status === 'fail' ? 'threw: ' : ''}${(e as Error).message.split('\n')[0]}` };
  }
  const limits = modelThresholds(tested.backend.lossyWeights);
  const logits = tensorCheck('prefill logits (all rows)', mine.prefill, theirs.prefill, limits.logits);
  const checks: ModelCheck[] = [
    tensorCheck('vision tower', mine.vision, theirs.vision, limits.vision),
    logits,
    tokensCheck(mine, theirs, limits),
    stepLogitsCheck(mine, theirs, limits),
    tensorCheck('kv cache vs no cache', concat(mine.stepLogits), mine.noCache, limits.kvCache),
    scoreCheck(mine.score, theirs.score, limits),
  ].map(({ maxAbsDiff: _, ...c }: ModelCheck & { maxAbsDiff?: number }) => c);
  return {
    model: model.label,
    maxAbsLogitDiff: Number.isFinite(logits.maxAbsDiff) ? logits.maxAbsDiff : null,
    tokensMatch: mine.tokens.join() === theirs.tokens.join(),
    status: checks.some((c) => c.status === 'fail') ? 'fail' : 'pass',
    checks, tokens: mine.tokens, oracleTokens: theirs.tokens,
  };
}
