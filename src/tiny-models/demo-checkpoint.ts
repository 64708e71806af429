/**
 * The built-in demo checkpoint: a tiny PaliGemma (MQA, like the 3B) with seeded random weights,
 * written once into the system temp folder and reused. Its output is noise by design; it lets
 * `paligemma generate` run end to end on a fresh machine with no download.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTinyCheckpoint, mqaSpec } from './tiny-checkpoint.js';

/** Bump when the builder's output changes, so stale copies are not reused. */
const DEMO_VERSION = 2;
const MARKER = '.complete';

export function demoCheckpointDir(): string {
  return join(tmpdir(), `paligemma-sdk-demo-v${DEMO_VERSION}`);
}

/** Path of the demo checkpoint, building it on first use (atomically: build, then rename). */
export async function ensureDemoCheckpoint(): Promise<string> {
  const dir = demoCheckpointDir();
  if (existsSync(join(dir, MARKER))) return dir;
  const staging = await mkdtemp(join(tmpdir(), 'paligemma-sdk-demo-staging-'));
  try {
    // An untied random head: with tied random weights greedy decoding repeats the last token.
    await buildTinyCheckpoint(staging, { ...mqaSpec(), includeLmHead: true });
    await writeFile(join(staging, MARKER), '');
    await rm(dir, { recursive: true, force: true });
    await rename(staging, dir);
  } catch (e) {
    await rm(staging, { recursive: true, force: true });
    // Another process may have finished the same build first.
    if (!existsSync(join(dir, MARKER))) throw e;
  }
  return dir;
}
