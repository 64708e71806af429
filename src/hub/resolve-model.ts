/**
 * `--model` / `model:` to a local folder, in the order Python's `from_pretrained` uses: an
 * existing folder of that path; else a hub id `ORG/NAME[@REV]` looked up in the shared hub
 * cache (used in place); else downloaded into that cache.
 */
import { statSync } from 'node:fs';
import { basename } from 'node:path';
import { PaliGemmaError } from '../interfaces/errors.js';
import { cachedCommit, repoFolder, snapshotFolder } from './cache-layout.js';
import { downloadSnapshot, type DownloadPlan, type DownloadProgress } from './download-snapshot.js';
import { HubUnreachableError } from './hub-fetch.js';
import { hubSettings, type HubSettings } from './hub-settings.js';
import { missingModelFiles } from './model-files.js';
import { COMMIT_HASH, parseModelReference, revisionOf } from './model-reference.js';

export interface ResolveModelOptions {
  /** Branch, tag or commit (also accepted as `ORG/NAME@REV`). Default: `main`. */
  revision?: string;
  /** Download events, one per chunk received. */
  onProgress?: (p: DownloadProgress) => void;
  /** Called once the files to fetch are known (an empty list: all in the cache). */
  onPlan?: (plan: DownloadPlan) => void;
  /** Cache, endpoint, token, offline mode: default from the environment (HF_HUB_CACHE, HF_HOME, HF_TOKEN, …). */
  settings?: HubSettings;
}

function isFolder(path: string): boolean {
  return statSync(path, { throwIfNoEntry: false })?.isDirectory() ?? false;
}

/** The snapshot folder of a cached revision when it holds every file a pipeline needs. */
export async function cachedSnapshot(settings: HubSettings, repo: string, revision: string): Promise<string | undefined> {
  const commit = await cachedCommit(settings.cacheDir, repo, revision);
  if (!commit) return undefined;
  const folder = snapshotFolder(settings.cacheDir, repo, commit);
  return (await missingModelFiles(folder)).length === 0 ? folder : undefined;
}

/** A local folder holding the model named by `model` (a folder path or a hub id). */
export async function resolveModel(model: string, options: ResolveModelOptions = {}): Promise<string> {
  if (isFolder(model)) {
    if (options.revision !== undefined) {
      throw new PaliGemmaError(`revision ${options.revision} given with the local folder ${model}: a revision applies to hub ids (ORG/NAME) only`);
    }
    return model;
  }
  const ref = parseModelReference(model);
  if (!ref) throw new PaliGemmaError(`model folder not found: ${model} (expected a folder or a hub id ORG/NAME[@REVISION])`);
  const revision = revisionOf(ref, options.revision);
  const settings = options.settings ?? hubSettings();
  const cached = await cachedSnapshot(settings, ref.repo, revision);
  // A commit never changes, so its complete snapshot needs no request; a branch is asked about.
  if (cached && (settings.offline || COMMIT_HASH.test(revision))) return cached;
  if (settings.offline) {
    const commit = await cachedCommit(settings.cacheDir, ref.repo, revision);
    const where = commit ? snapshotFolder(settings.cacheDir, ref.repo, commit) : repoFolder(settings.cacheDir, ref.repo);
    const missing = commit ? (await missingModelFiles(where)).join(', ') : `refs/${revision}`;
    throw new PaliGemmaError(`model ${ref.repo}@${revision} is not complete in the hub cache (${where} lacks ${missing}) and HF_HUB_OFFLINE is set: unset it to download`, 'offline');
  }
  try {
    return await downloadSnapshot({ repo: ref.repo, revision, settings, onProgress: options.onProgress, onPlan: options.onPlan });
  } catch (e) {
    // No network (or the hub is down) with a complete copy at hand: use it, as Python does.
    if (cached && (e instanceof HubUnreachableError || !(e instanceof PaliGemmaError))) return cached;
    throw e;
  }
}

/**
 * The name a model goes by for clients (the served model id): the hub id `ORG/NAME` as given
 * (without `@REV`), as vLLM names a model served by id; a folder's own name otherwise.
 */
export function modelDisplayName(model: string): string {
  if (!isFolder(model)) {
    const ref = parseModelReference(model);
    if (ref) return ref.repo;
  }
  return basename(model.replace(/[\\/]+$/, ''));
}
