/**
 * The repos the hub stand-in serves in tests and in the fixture script: a tiny PaliGemma in two
 * safetensors shards (with index), plus files a pipeline never reads, to show they are skipped.
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTinyCheckpoint, mqaSpec } from '../../src/tiny-models/tiny-checkpoint.js';
import type { StandInFile, StandInRepo } from './hub-stand-in.js';

export const OPEN_REPO = 'test-org/paligemma-tiny';
export const GATED_REPO = 'test-org/paligemma-gated';
export const MAIN_COMMIT = '1111111111111111111111111111111111111111';
export const OLD_COMMIT = '2222222222222222222222222222222222222222';
export const GATED_COMMIT = '3333333333333333333333333333333333333333';
export const GRANTED_TOKEN = 'hf_standInGrantedToken0123456789';
export const OTHER_TOKEN = 'hf_standInOtherToken9876543210';

/** Files a pipeline never reads: the README and a weight format we do not load. */
export const UNNEEDED = ['README.md', 'pytorch_model.bin', 'extra/notes.txt'];

export async function tinyRepoFiles(): Promise<StandInFile[]> {
  const dir = await mkdtemp(join(tmpdir(), 'hub-fixture-'));
  try {
    await buildTinyCheckpoint(dir, { ...mqaSpec(), includeLmHead: true, shards: 2 });
    const files: StandInFile[] = [];
    for (const name of (await readdir(dir)).sort()) files.push({ path: name, content: await readFile(join(dir, name)) });
    files.push({ path: 'README.md', content: Buffer.from('# tiny\n') });
    files.push({ path: 'pytorch_model.bin', content: Buffer.alloc(64, 7) });
    files.push({ path: 'extra/notes.txt', content: Buffer.from('not needed\n') });
    return files;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export async function fixtureRepos(): Promise<StandInRepo[]> {
  const files = await tinyRepoFiles();
  // An older commit whose config differs, reachable by the tag v0.
  const old = files.map((f) => f.path === 'README.md' ? { ...f, content: Buffer.from('# tiny, first version\n') } : f);
  return [
    { id: OPEN_REPO, refs: { main: MAIN_COMMIT, v0: OLD_COMMIT }, commits: { [MAIN_COMMIT]: files, [OLD_COMMIT]: old } },
    { id: GATED_REPO, refs: { main: GATED_COMMIT }, commits: { [GATED_COMMIT]: files }, grantedTokens: [GRANTED_TOKEN] },
  ];
}
