/**
 * The hub cache layout shared with Python's `huggingface_hub`:
 *
 *   <cache>/models--ORG--NAME/refs/<branch or tag>      → a commit hash (no newline)
 *   <cache>/models--ORG--NAME/snapshots/<commit>/<file> → ../../blobs/<etag> (relative symlink)
 *   <cache>/models--ORG--NAME/blobs/<etag>              → the bytes; <etag> is the file's sha256
 *                                                          (LFS files) or its git blob sha1
 *
 * A file still being fetched lives at `blobs/<etag>.incomplete`, a name neither client takes for
 * a whole blob; it is renamed into place only after its size and hash check out.
 */
import { mkdir, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { COMMIT_HASH } from './model-reference.js';

export function repoFolder(cacheDir: string, repo: string): string {
  return join(cacheDir, `models--${repo.split('/').join('--')}`);
}

export function snapshotFolder(cacheDir: string, repo: string, commit: string): string {
  return join(repoFolder(cacheDir, repo), 'snapshots', commit);
}

export function blobPath(cacheDir: string, repo: string, etag: string): string {
  return join(repoFolder(cacheDir, repo), 'blobs', etag);
}

export function incompletePath(cacheDir: string, repo: string, etag: string): string {
  return `${blobPath(cacheDir, repo, etag)}.incomplete`;
}

/** The commit a revision names in the cache: itself when it is a hash, else `refs/<revision>`. */
export async function cachedCommit(cacheDir: string, repo: string, revision: string): Promise<string | undefined> {
  if (COMMIT_HASH.test(revision)) return revision;
  try {
    const commit = (await readFile(join(repoFolder(cacheDir, repo), 'refs', revision), 'utf8')).trim();
    return COMMIT_HASH.test(commit) ? commit : undefined;
  } catch {
    return undefined;
  }
}

/** Records that `revision` points at `commit` (written atomically; nothing for a commit hash). */
export async function writeRef(cacheDir: string, repo: string, revision: string, commit: string): Promise<void> {
  if (revision === commit) return;
  const ref = join(repoFolder(cacheDir, repo), 'refs', revision);
  await mkdir(dirname(ref), { recursive: true });
  const tmp = `${ref}.${process.pid}.tmp`;
  await writeFile(tmp, commit);
  await rename(tmp, ref);
}

/** Points `snapshots/<commit>/<file>` at its blob with a relative link, as Python does. */
export async function linkSnapshotFile(cacheDir: string, repo: string, commit: string, file: string, etag: string): Promise<string> {
  const link = join(snapshotFolder(cacheDir, repo, commit), file);
  await mkdir(dirname(link), { recursive: true });
  await rm(link, { force: true });
  await symlink(relative(dirname(link), blobPath(cacheDir, repo, etag)), link);
  return link;
}
