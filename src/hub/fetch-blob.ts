/**
 * One file of a snapshot into `blobs/<etag>`: bytes go to `blobs/<etag>.incomplete` (appended to
 * where an interrupted run stopped, as Python's client does), are checked against the size and
 * etag the hub listed (sha256 for LFS files, the git blob sha1 otherwise) and only then renamed
 * to the blob's final name, so no later run can take a partial file for a whole one.
 */
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, rename, rm, stat, truncate } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { downloadFile, fileDownloadInfo } from '@huggingface/hub';
import { PaliGemmaError } from '../interfaces/errors.js';

export interface RemoteFile {
  path: string;
  size: number;
  /** The blob's name in the cache: sha256 for LFS files, git blob sha1 otherwise. */
  etag: string;
  lfs: boolean;
}

export interface FetchBlobParams {
  repo: string;
  commit: string;
  file: RemoteFile;
  /** Final blob path; the partial file is this plus `.incomplete`. */
  blob: string;
  endpoint: string;
  fetch: typeof fetch;
  /** Bytes of this file on disk so far (called as chunks arrive, first with the resumed offset). */
  onBytes?: (bytesOnDisk: number) => void;
}

/** An etag header as a bare hash: no weak marker, no quotes. */
export function bareEtag(header: string): string {
  return header.replace(/^W\//, '').replace(/^"|"$/g, '');
}

function hasherFor(file: RemoteFile): Hash {
  if (file.lfs) return createHash('sha256');
  // A git blob id hashes a header before the bytes.
  return createHash('sha1').update(`blob ${file.size}\0`);
}

async function sizeOf(path: string): Promise<number> {
  return (await stat(path).catch(() => undefined))?.size ?? 0;
}

/** Downloads (or finishes downloading) one file; returns the number of bytes fetched. */
export async function fetchBlob(p: FetchBlobParams): Promise<number> {
  const { file } = p;
  const incomplete = `${p.blob}.incomplete`;
  await mkdir(dirname(p.blob), { recursive: true });
  let have = await sizeOf(incomplete);
  if (have > file.size) { await truncate(incomplete, 0); have = 0; }

  const info = await fileDownloadInfo({ repo: p.repo, path: file.path, revision: p.commit, hubUrl: p.endpoint, fetch: p.fetch });
  if (!info) throw new PaliGemmaError(`file ${file.path} of ${p.repo}@${p.commit} is listed but the hub does not serve it`, 'hub_error');
  // After a redirect the etag is the storage host's own (an md5 or multipart tag), not a content
  // id: only a hub id (40 or 64 hex) is compared; the bytes are hashed against the listing anyway.
  const served = bareEtag(info.etag);
  if ((/^([0-9a-f]{40}|[0-9a-f]{64})$/.test(served) && served !== file.etag) || info.size !== file.size) {
    throw new PaliGemmaError(`file ${file.path} of ${p.repo}@${p.commit}: the hub serves etag ${served} (${info.size} bytes) but listed ${file.etag} (${file.size} bytes)`, 'hub_error');
  }

  const hash = hasherFor(file);
  if (have > 0) await pipeline(createReadStream(incomplete), new Transform({ transform(chunk, _e, done) { hash.update(chunk); done(); } }));
  p.onBytes?.(have);
  let onDisk = have;
  if (have < file.size) {
    const blob = await downloadFile({ repo: p.repo, path: file.path, revision: p.commit, hubUrl: p.endpoint, fetch: p.fetch, downloadInfo: info, xet: false });
    if (!blob) throw new PaliGemmaError(`file ${file.path} of ${p.repo}@${p.commit} vanished from the hub`, 'hub_error');
    const body = blob.slice(have).stream() as unknown as Parameters<typeof Readable.fromWeb>[0];
    // Each chunk is on disk before the next is read, so whatever arrived before a cut is kept
    // for the next run to resume from (a stream torn down on error may drop buffered writes).
    const out = await open(incomplete, 'a');
    try {
      for await (const chunk of Readable.fromWeb(body) as AsyncIterable<Buffer>) {
        // A server that ignored the Range header would send too much: stop before it lands.
        if (onDisk + chunk.length > file.size) throw new PaliGemmaError(`file ${file.path}: the hub sent more than its ${file.size} bytes`, 'hub_error');
        await out.write(chunk);
        onDisk += chunk.length;
        hash.update(chunk);
        p.onBytes?.(onDisk);
      }
    } catch (e) {
      if (e instanceof PaliGemmaError) throw e;
      const reason = e instanceof Error ? e.message : String(e);
      await out.close();
      // The partial file stays: the next run asks only for the rest.
      throw new PaliGemmaError(`download of ${file.path} from ${p.repo}@${p.commit} was interrupted (${reason}) at ${await sizeOf(incomplete)} of ${file.size} bytes; run again to resume`, 'network');
    } finally {
      await out.close().catch(() => {});
    }
  }
  const size = await sizeOf(incomplete);
  const digest = hash.digest('hex');
  if (size < file.size) {
    // Kept: the next run resumes from here.
    throw new PaliGemmaError(`download of ${file.path} from ${p.repo}@${p.commit} stopped at ${size} of ${file.size} bytes; run again to resume`, 'network');
  }
  if (size !== file.size || digest !== file.etag) {
    await rm(incomplete, { force: true });
    throw new PaliGemmaError(`download of ${file.path} from ${p.repo}@${p.commit} is corrupt (${size} of ${file.size} bytes, hash ${digest}, expected ${file.etag}); run again to fetch it anew`, 'hub_error');
  }
  await rename(incomplete, p.blob);
  return onDisk - have;
}
