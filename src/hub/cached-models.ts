/**
 * The PaliGemma snapshots in the hub cache, whoever downloaded them: read with the maintained
 * cache scanner, kept when the snapshot's config.json says `model_type: paligemma` (or, without a
 * readable config, when the repo name says so).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { scanCacheDir } from '@huggingface/hub';
import { missingModelFiles } from './model-files.js';

export interface CachedModel {
  /** `ORG/NAME`. */
  repo: string;
  /** The snapshot's commit. */
  commit: string;
  /** Branches and tags pointing at it. */
  refs: string[];
  /** Bytes of the snapshot's files on disk (blobs shared between snapshots count in each). */
  sizeOnDisk: number;
  /** The snapshot folder, usable as `--model`. */
  path: string;
  /** Holds every file a pipeline needs. */
  complete: boolean;
}

async function modelType(snapshot: string): Promise<string | undefined> {
  try {
    return (JSON.parse(await readFile(join(snapshot, 'config.json'), 'utf8')) as { model_type?: string }).model_type;
  } catch {
    return undefined;
  }
}

export async function cachedPaliGemmaModels(cacheDir: string): Promise<CachedModel[]> {
  const scan = await scanCacheDir(cacheDir).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return { repos: [] };
    throw e;
  });
  const found: CachedModel[] = [];
  for (const repo of scan.repos) {
    if (repo.id.type !== 'model') continue;
    for (const rev of repo.revisions) {
      const type = await modelType(rev.path);
      if (type !== 'paligemma' && !(type === undefined && /paligemma/i.test(repo.id.name))) continue;
      found.push({
        repo: repo.id.name, commit: rev.commitOid, refs: [...rev.refs].sort(), sizeOnDisk: rev.size, path: rev.path,
        complete: (await missingModelFiles(rev.path)).length === 0,
      });
    }
  }
  return found.sort((a, b) => a.repo.localeCompare(b.repo) || a.commit.localeCompare(b.commit));
}
