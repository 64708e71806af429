/**
 * A stand-in for the model hub on 127.0.0.1, serving the routes both clients call
 * (`@huggingface/hub` and Python's `huggingface_hub`, checked by test/fixtures/hub/make-hub-cache.py):
 *
 *   GET  /api/models/ORG/NAME[/revision/REV]       repo info with the commit `sha` and `siblings`
 *   GET  /api/models/ORG/NAME/tree/REV[/PATH]      file listing (oid, size, lfs {oid, size})
 *   POST /api/models/ORG/NAME/paths-info/REV       the same entries for named paths (JSON or form body)
 *   GET|HEAD /ORG/NAME/resolve/REV/FILE            X-Repo-Commit, ETag, Range; LFS files answer 302 to
 *                                                  a second address (the storage host, on
 *                                                  `localhost`: another host name) with
 *                                                  X-Linked-Etag / X-Linked-Size, as the real hub does
 *
 * Errors carry `X-Error-Code` like the hub's: gated repos answer 401 without a token and 403 with
 * a token that was not granted; unknown repos answer 401 (RepoNotFound) without a token and 404
 * with one; unknown revisions and files answer 404.
 */
import { createHash } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';

export interface StandInFile {
  path: string;
  content: Uint8Array;
}

export interface StandInRepo {
  id: string;
  /** Branch or tag → commit; `main` is required. */
  refs: Record<string, string>;
  /** Commit → files at that commit. */
  commits: Record<string, StandInFile[]>;
  /** Gated: only these tokens may read it. */
  grantedTokens?: string[];
}

export interface RecordedRequest {
  method: string;
  url: string;
  /** Whether an Authorization header came (its value is never kept). */
  authorized: boolean;
  /** The Range header, when one came. */
  range?: string;
  host: 'hub' | 'storage';
  /** The status answered (set once the response is sent). */
  status?: number;
}

export interface HubStandIn {
  url: string;
  storageUrl: string;
  requests: RecordedRequest[];
  /** The next GET of `path`'s bytes sends only `bytes` bytes, then drops the connection. */
  cutNextDownload(path: string, bytes: number): void;
  /** The next GET of `path`'s bytes sends the right length with one byte flipped. */
  corruptNextDownload(path: string): void;
  close(): Promise<void>;
}

/** How the hub names a file's content: sha256 for LFS files, the git blob sha1 for the rest. */
export function isLfs(path: string): boolean {
  return path.endsWith('.safetensors');
}
export function gitBlobSha1(content: Uint8Array): string {
  return createHash('sha1').update(`blob ${content.length}\0`).update(content).digest('hex');
}
export function sha256(content: Uint8Array): string {
  return createHash('sha256').update(content).digest('hex');
}
export function etagOf(file: StandInFile): string {
  return isLfs(file.path) ? sha256(file.content) : gitBlobSha1(file.content);
}

function entryOf(file: StandInFile): Record<string, unknown> {
  const lfs = isLfs(file.path);
  return {
    type: 'file',
    oid: lfs ? createHash('sha1').update(`pointer ${file.path}`).digest('hex') : gitBlobSha1(file.content),
    size: lfs ? 134 : file.content.length,
    path: file.path,
    ...(lfs ? { lfs: { oid: sha256(file.content), size: file.content.length, pointerSize: 134 } } : {}),
  };
}

function parseRange(header: string | undefined, size: number): [number, number] | undefined {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header ?? '');
  if (!m) return undefined;
  const start = m[1] === '' ? size - Number(m[2]) : Number(m[1]);
  const end = m[1] === '' || m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  return [start, end];
}

export async function startHubStandIn(repos: StandInRepo[]): Promise<HubStandIn> {
  const requests: RecordedRequest[] = [];
  const cuts = new Map<string, number>();
  const corrupt = new Set<string>();
  const blobs = new Map<string, StandInFile>();       // storage host: sha256 → file
  const hub: FastifyInstance = Fastify();
  const storage: FastifyInstance = Fastify();
  for (const [app, host] of [[hub, 'hub'], [storage, 'storage']] as const) {
    app.addHook('onRequest', async (req, reply) => {
      const r: RecordedRequest = { method: req.method, url: req.url, authorized: req.headers.authorization !== undefined, range: req.headers.range, host };
      requests.push(r);
      // Hijacked replies (cut downloads) skip onResponse; the raw response's close still comes.
      reply.raw.once('close', () => { r.status = reply.raw.statusCode; });
    });
  }
  hub.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_req, body, done) => {
    const form = new URLSearchParams(body as string);
    done(null, { paths: form.getAll('paths'), expand: form.get('expand') === 'True' || form.get('expand') === 'true' });
  });

  const fail = (reply: FastifyReply, status: number, code: string, message: string) =>
    reply.code(status).header('X-Error-Code', code).header('X-Error-Message', message).send({ error: message });

  /** The repo and commit a request names, or undefined after answering with the hub's error. */
  function lookup(req: FastifyRequest, reply: FastifyReply, rev = 'main'): { repo: StandInRepo; commit: string; files: StandInFile[] } | undefined {
    const { org, name } = req.params as { org: string; name: string };
    const repo = repos.find((r) => r.id === `${org}/${name}`);
    // As the hub: 401 to an anonymous caller (it cannot tell missing from private), 404 otherwise.
    if (!repo) { fail(reply, req.headers.authorization ? 404 : 401, 'RepoNotFound', 'Repository not found'); return undefined; }
    if (repo.grantedTokens) {
      const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
      if (!token) {
        fail(reply, 401, 'GatedRepo', `Access to model ${repo.id} is restricted. You must have access to it and be authenticated to access it. Please log in.`);
        return undefined;
      }
      if (!repo.grantedTokens.includes(token)) {
        fail(reply, 403, 'GatedRepo', `Access to model ${repo.id} is restricted and you are not in the authorized list. Visit the model page to ask for access.`);
        return undefined;
      }
    }
    const commit = rev === 'HEAD' ? repo.refs.main : repo.commits[rev] ? rev : repo.refs[rev];
    if (!commit || !repo.commits[commit]) { fail(reply, 404, 'RevisionNotFound', `Invalid rev id: ${rev}`); return undefined; }
    return { repo, commit, files: repo.commits[commit] };
  }

  const info = (req: FastifyRequest, reply: FastifyReply) => {
    const found = lookup(req, reply, (req.params as { rev?: string }).rev ?? 'main');
    if (!found) return reply;
    return reply.send({
      _id: `id-${found.repo.id}`, id: found.repo.id, modelId: found.repo.id, sha: found.commit,
      private: false, gated: found.repo.grantedTokens ? 'manual' : false, disabled: false,
      lastModified: '2024-05-01T00:00:00.000Z', tags: [], downloads: 0, likes: 0, pipeline_tag: 'image-text-to-text',
      siblings: found.files.map((f) => ({ rfilename: f.path })),
    });
  };
  hub.get('/api/models/:org/:name', info);
  hub.get('/api/models/:org/:name/revision/:rev', info);

  const tree = (req: FastifyRequest, reply: FastifyReply) => {
    const { rev, '*': sub } = req.params as { rev: string; '*'?: string };
    const found = lookup(req, reply, rev);
    if (!found) return reply;
    const prefix = sub ? `${sub.replace(/\/$/, '')}/` : '';
    return reply.send(found.files.filter((f) => f.path.startsWith(prefix)).map(entryOf));
  };
  hub.get('/api/models/:org/:name/tree/:rev', tree);
  hub.get('/api/models/:org/:name/tree/:rev/*', tree);

  hub.post('/api/models/:org/:name/paths-info/:rev', (req, reply) => {
    const found = lookup(req, reply, (req.params as { rev: string }).rev);
    if (!found) return reply;
    const body = (req.body ?? {}) as { paths?: string[] | string };
    const paths = Array.isArray(body.paths) ? body.paths : body.paths ? [body.paths] : [];
    return reply.send(found.files.filter((f) => paths.includes(f.path)).map(entryOf));
  });

  /** Bytes with Range support; `cut` sends that many bytes and then drops the connection. */
  function sendBytes(req: FastifyRequest, reply: FastifyReply, file: StandInFile, headers: Record<string, string>) {
    const size = file.content.length;
    const range = parseRange(req.headers.range, size);
    const [start, end] = range ?? [0, size - 1];
    if (range && (start > end || start >= size)) return reply.code(416).header('Content-Range', `bytes */${size}`).send();
    const body = Buffer.from(file.content.subarray(start, end + 1));
    if (req.method === 'GET' && corrupt.has(file.path) && body.length > 1) {
      corrupt.delete(file.path);
      body[body.length >> 1] ^= 0xff;
    }
    const cut = req.method === 'GET' ? cuts.get(file.path) : undefined;
    if (cut !== undefined && !(range && end - start === 0)) {
      cuts.delete(file.path);
      reply.hijack();
      reply.raw.writeHead(range ? 206 : 200, {
        ...headers, 'Content-Length': String(body.length),
        ...(range ? { 'Content-Range': `bytes ${start}-${end}/${size}` } : {}),
      });
      reply.raw.write(body.subarray(0, cut), () => reply.raw.destroy());
      return reply;
    }
    reply.headers({ ...headers, 'Accept-Ranges': 'bytes' });
    if (range) reply.code(206).header('Content-Range', `bytes ${start}-${end}/${size}`);
    return reply.header('Content-Type', 'application/octet-stream').send(body);
  }

  let storageUrl = '';
  hub.get('/:org/:name/resolve/:rev/*', (req, reply) => {
    const { rev, '*': path } = req.params as { rev: string; '*': string };
    const found = lookup(req, reply, rev);
    if (!found) return reply;
    const file = found.files.find((f) => f.path === path);
    if (!file) return fail(reply, 404, 'EntryNotFound', `${path} does not exist on "${rev}"`);
    const etag = etagOf(file);
    if (isLfs(file.path)) {
      blobs.set(etag, file);
      return reply.code(302)
        .header('X-Repo-Commit', found.commit)
        .header('X-Linked-Etag', `"${etag}"`)
        .header('X-Linked-Size', String(file.content.length))
        .header('ETag', `"${etag}"`)
        .header('Location', `${storageUrl}/lfs/${etag}?X-Signature=stand-in`)
        .send();
    }
    return sendBytes(req, reply, file, { 'X-Repo-Commit': found.commit, ETag: `"${etag}"` });
  });

  storage.get('/lfs/:sha', (req, reply) => {
    const file = blobs.get((req.params as { sha: string }).sha);
    if (!file) return reply.code(404).send();
    // A storage host's own etag (an md5, as object stores use), unlike the hub's.
    return sendBytes(req, reply, file, { ETag: `"${createHash('md5').update(file.content).digest('hex')}"` });
  });

  const url = await hub.listen({ host: '127.0.0.1', port: 0 });
  // The storage host must have another host name than the hub, as on the real hub: Python's client
  // follows a redirect to the same host name (whatever the port) but stops at another host's.
  // Fastify listens on every loopback address `localhost` names.
  const storageAddress = new URL(await storage.listen({ host: 'localhost', port: 0 }));
  storageUrl = `http://localhost:${storageAddress.port}`;
  return {
    url, storageUrl, requests,
    cutNextDownload: (path, bytes) => { cuts.set(path, bytes); },
    corruptNextDownload: (path) => { corrupt.add(path); },
    close: async () => { await hub.close(); await storage.close(); },
  };
}
