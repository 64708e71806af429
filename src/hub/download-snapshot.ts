/**
 * A model revision into the shared hub cache, in the layout Python's `huggingface_hub` writes:
 * ask the hub which commit the revision names, list that commit's top-level files, fetch the
 * ones a pipeline needs into `blobs/` (skipping blobs already there, whoever fetched them), link
 * them from `snapshots/<commit>/` and record `refs/<revision>`.
 */
import { stat } from 'node:fs/promises';
import { listFiles, modelInfo } from '@huggingface/hub';
import { PaliGemmaError } from '../interfaces/errors.js';
import { blobPath, linkSnapshotFile, snapshotFolder, writeRef } from './cache-layout.js';
import { fetchBlob, type RemoteFile } from './fetch-blob.js';
import { hubError, hubFetch, HubUnreachableError } from './hub-fetch.js';
import type { HubSettings } from './hub-settings.js';
import { isNeededFile } from './model-files.js';
import { COMMIT_HASH } from './model-reference.js';

export interface DownloadProgress {
  repo: string;
  commit: string;
  /** The file being fetched. */
  file: string;
  /** Bytes of the files still to fetch that are on disk (including resumed partial files). */
  loadedBytes: number;
  /** Bytes of all the files still to fetch when this run started. */
  totalBytes: number;
  /** Bytes received over the network by this run. */
  receivedBytes: number;
  /** True on the last event: every file is verified and linked into the snapshot. */
  finished: boolean;
}

export interface DownloadPlan {
  repo: string;
  commit: string;
  /** The files to fetch this run (the others are in the cache already). */
  files: RemoteFile[];
  totalBytes: number;
}

export interface DownloadSnapshotParams {
  repo: string;
  revision: string;
  settings: HubSettings;
  onProgress?: (p: DownloadProgress) => void;
  /** Called once the files to fetch are known, before the first byte. */
  onPlan?: (plan: DownloadPlan) => void;
}

async function isFile(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isFile() ?? false;
}

function remoteFileOf(entry: { path: string; size: number; oid?: string; lfs?: { oid: string; size: number } }): RemoteFile {
  if (entry.lfs) return { path: entry.path, size: entry.lfs.size, etag: entry.lfs.oid, lfs: true };
  if (!entry.oid) throw new PaliGemmaError(`file ${entry.path}: the hub listed it without an id`, 'hub_error');
  return { path: entry.path, size: entry.size, etag: entry.oid, lfs: false };
}

/** The snapshot folder of `repo@revision`, downloading what the cache lacks. */
export async function downloadSnapshot(p: DownloadSnapshotParams): Promise<string> {
  const { repo, revision, settings } = p;
  const { cacheDir, endpoint } = settings;
  const hub = hubFetch(settings);
  const call = async <T>(what: () => Promise<T>): Promise<T> => {
    try {
      return await what();
    } catch (e) {
      if (e instanceof TypeError && /fetch failed/.test(e.message)) {
        const cause = (e.cause as { code?: string } | undefined)?.code ?? 'no answer';
        throw new HubUnreachableError(`cannot reach the hub at ${endpoint} (${cause}) for model ${repo}: check the network or HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the cache only`);
      }
      throw hubError(e, repo, revision, settings, hub.lastErrorCode());
    }
  };

  const commit = COMMIT_HASH.test(revision)
    ? revision
    : (await call(() => modelInfo({ name: repo, revision, hubUrl: endpoint, fetch: hub.fetch, additionalFields: ['sha'] }))).sha;
  if (!COMMIT_HASH.test(commit ?? '')) throw new PaliGemmaError(`the hub at ${endpoint} gave no commit for ${repo}@${revision}`, 'hub_error');

  const listed: RemoteFile[] = [];
  await call(async () => {
    for await (const entry of listFiles({ repo, revision: commit, hubUrl: endpoint, fetch: hub.fetch })) {
      if (entry.type === 'file' && isNeededFile(entry.path)) listed.push(remoteFileOf(entry));
    }
  });
  const names = new Set(listed.map((f) => f.path));
  if (!names.has('config.json') || !listed.some((f) => f.path.endsWith('.safetensors'))) {
    throw new PaliGemmaError(`model ${repo}@${revision} has no config.json and .safetensors weights at its top level: not a transformers checkpoint this SDK can load`, 'not_a_model');
  }

  const missing: RemoteFile[] = [];
  for (const f of listed) if (!(await isFile(blobPath(cacheDir, repo, f.etag)))) missing.push(f);
  const totalBytes = missing.reduce((n, f) => n + f.size, 0);
  p.onPlan?.({ repo, commit, files: missing, totalBytes });

  let done = 0;
  let received = 0;
  for (const file of missing) {
    let fileOnDisk = 0;
    let resumedAt = -1;
    received += await call(() => fetchBlob({
      repo, commit, file, blob: blobPath(cacheDir, repo, file.etag), endpoint, fetch: hub.fetch,
      onBytes: (bytes) => {
        if (resumedAt < 0) resumedAt = bytes;
        const grew = bytes > fileOnDisk;
        fileOnDisk = bytes;
        if (grew) p.onProgress?.({ repo, commit, file: file.path, loadedBytes: done + bytes, totalBytes, receivedBytes: received + bytes - resumedAt, finished: false });
      },
    }));
    done += file.size;
  }
  // Links last: a snapshot entry only ever points at a whole blob.
  for (const f of listed) await linkSnapshotFile(cacheDir, repo, commit, f.path, f.etag);
  await writeRef(cacheDir, repo, revision, commit);
  if (missing.length > 0) p.onProgress?.({ repo, commit, file: '', loadedBytes: totalBytes, totalBytes, receivedBytes: received, finished: true });
  return snapshotFolder(cacheDir, repo, commit);
}
