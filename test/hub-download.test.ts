import { expect } from 'chai';
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DownloadPlan, DownloadProgress } from '../src/hub/download-snapshot.js';
import type { HubSettings } from '../src/hub/hub-settings.js';
import { resolveModel } from '../src/hub/resolve-model.js';
import { PaliGemmaError } from '../src/interfaces/errors.js';
import {
  fixtureRepos, GATED_REPO, GRANTED_TOKEN, MAIN_COMMIT, OLD_COMMIT, OPEN_REPO, OTHER_TOKEN, UNNEEDED,
} from './support/hub-fixture-repo.js';
import { etagOf, startHubStandIn, type HubStandIn, type StandInFile } from './support/hub-stand-in.js';

const REPO_DIR = 'models--test-org--paligemma-tiny';

/** An address on 127.0.0.1 where nothing listens (a port just released). */
async function closedEndpoint(): Promise<string> {
  const server = createServer();
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const { port } = server.address() as AddressInfo;
  await new Promise((done) => server.close(done));
  return `http://127.0.0.1:${port}`;
}

async function rejection(p: Promise<unknown>): Promise<PaliGemmaError> {
  try {
    await p;
  } catch (e) {
    expect(e).to.be.instanceOf(PaliGemmaError);
    return e as PaliGemmaError;
  }
  throw new Error('expected a rejection');
}

describe('hub downloads into the shared cache (stand-in hub on 127.0.0.1)', () => {
  let hub: HubStandIn;
  let files: StandInFile[];
  let cache: string;
  const settings = (extra: Partial<HubSettings> = {}): HubSettings => ({ cacheDir: cache, endpoint: hub.url, offline: false, ...extra });
  const needed = () => files.filter((f) => !UNNEEDED.includes(f.path));

  before(async () => {
    const repos = await fixtureRepos();
    files = repos[0].commits[MAIN_COMMIT];
    hub = await startHubStandIn(repos);
  });
  after(async () => { await hub.close(); });
  beforeEach(async () => {
    cache = await mkdtemp(join(tmpdir(), 'hub-cache-'));
    hub.requests.length = 0;
  });
  afterEach(async () => { await rm(cache, { recursive: true, force: true }); });

  it('fetches only the needed files into blobs/, links them from the snapshot and records refs/main', async () => {
    const events: DownloadProgress[] = [];
    let plan: DownloadPlan | undefined;
    const dir = await resolveModel(OPEN_REPO, { settings: settings(), onProgress: (p) => events.push(p), onPlan: (p) => { plan = p; } });
    expect(dir).to.equal(join(cache, REPO_DIR, 'snapshots', MAIN_COMMIT));
    expect(await readFile(join(cache, REPO_DIR, 'refs', 'main'), 'utf8')).to.equal(MAIN_COMMIT);
    expect((await readdir(dir)).sort()).to.deep.equal(needed().map((f) => f.path).sort());
    for (const f of needed()) {
      const link = join(dir, f.path);
      expect((await lstat(link)).isSymbolicLink(), f.path).to.equal(true);
      expect(await readlink(link)).to.equal(`../../blobs/${etagOf(f)}`);
      expect(Buffer.compare(await readFile(link), Buffer.from(f.content)), f.path).to.equal(0);
    }
    const blobs = await readdir(join(cache, REPO_DIR, 'blobs'));
    expect(blobs.sort()).to.deep.equal(needed().map(etagOf).sort());
    const total = needed().reduce((n, f) => n + f.content.length, 0);
    expect(plan?.totalBytes).to.equal(total);
    expect(events.at(-1)).to.include({ finished: true, loadedBytes: total, totalBytes: total, receivedBytes: total });
    for (let i = 1; i < events.length; i++) expect(events[i].loadedBytes).to.be.at.least(events[i - 1].loadedBytes);
    // Large files come from the storage host, which never sees the token.
    const fromStorage = hub.requests.filter((r) => r.host === 'storage');
    expect(fromStorage.map((r) => r.url).join()).to.include('/lfs/');
    expect(hub.requests.some((r) => UNNEEDED.some((u) => r.url.endsWith(u)))).to.equal(false);
  });

  it('downloads nothing on a second run, and makes no request at all for a complete commit', async () => {
    await resolveModel(OPEN_REPO, { settings: settings() });
    hub.requests.length = 0;
    let plan: DownloadPlan | undefined;
    await resolveModel(OPEN_REPO, { settings: settings(), onPlan: (p) => { plan = p; } });
    expect(plan?.files).to.deep.equal([]);
    expect(hub.requests.filter((r) => r.url.includes('/resolve/') || r.host === 'storage')).to.deep.equal([]);
    hub.requests.length = 0;
    expect(await resolveModel(`${OPEN_REPO}@${MAIN_COMMIT}`, { settings: settings() })).to.equal(join(cache, REPO_DIR, 'snapshots', MAIN_COMMIT));
    expect(hub.requests).to.deep.equal([]);
  });

  it('takes a tag from @REV or --revision and shares blobs between snapshots', async () => {
    await resolveModel(OPEN_REPO, { settings: settings() });
    hub.requests.length = 0;
    const dir = await resolveModel(OPEN_REPO, { revision: 'v0', settings: settings() });
    expect(dir).to.equal(join(cache, REPO_DIR, 'snapshots', OLD_COMMIT));
    expect(await readFile(join(cache, REPO_DIR, 'refs', 'v0'), 'utf8')).to.equal(OLD_COMMIT);
    // README differs between the commits but is never fetched: every needed blob is shared.
    expect(hub.requests.filter((r) => r.url.includes('/resolve/'))).to.deep.equal([]);
    expect(await resolveModel(`${OPEN_REPO}@v0`, { settings: settings() })).to.equal(dir);
    await rejection(resolveModel(`${OPEN_REPO}@v0`, { revision: 'main', settings: settings() }));
  });

  it('gated repo: one line naming the licence page and HF_TOKEN without a token or with a wrong one; works with a granted one', async () => {
    const none = await rejection(resolveModel(GATED_REPO, { settings: settings() }));
    expect(none.code).to.equal('gated');
    expect(none.message).to.match(/accept the licence on http:\/\/127\.0\.0\.1:\d+\/test-org\/paligemma-gated and set HF_TOKEN/);
    expect(none.message).to.match(/no HF_TOKEN is set/);
    const wrong = await rejection(resolveModel(GATED_REPO, { settings: settings({ token: OTHER_TOKEN }) }));
    expect(wrong.code).to.equal('gated');
    expect(wrong.message).to.match(/your HF_TOKEN has no access/);
    expect(wrong.message).to.not.include(OTHER_TOKEN);
    expect(wrong.message.split('\n')).to.have.length(1);
    const dir = await resolveModel(GATED_REPO, { settings: settings({ token: GRANTED_TOKEN }) });
    expect((await stat(join(dir, 'config.json'))).isFile()).to.equal(true);
    expect(hub.requests.filter((r) => r.host === 'storage').every((r) => !r.authorized)).to.equal(true);
    expect(hub.requests.filter((r) => r.host === 'hub').at(-1)?.authorized).to.equal(true);
  });

  it('unknown repo or revision: one line, code not_found', async () => {
    const repo = await rejection(resolveModel('test-org/no-such-model', { settings: settings() }));
    expect(repo.code).to.equal('not_found');
    expect(repo.message).to.match(/^model test-org\/no-such-model not found on http:\/\/127\.0\.0\.1/);
    // The hub answers an anonymous caller 401 RepoNotFound (missing and private look alike): not "gated".
    expect(hub.requests.at(-1)?.status).to.equal(401);
    expect(repo.message).to.include('(if it is private or gated, set HF_TOKEN)');
    const withToken = await rejection(resolveModel('test-org/no-such-model', { settings: settings({ token: OTHER_TOKEN }) }));
    expect(withToken.code).to.equal('not_found');
    expect(hub.requests.at(-1)?.status).to.equal(404);
    expect(withToken.message).to.equal(`model test-org/no-such-model not found on ${hub.url}`);
    const rev = await rejection(resolveModel(`${OPEN_REPO}@no-such-branch`, { settings: settings() }));
    expect(rev.code).to.equal('not_found');
    expect(rev.message).to.match(/revision no-such-branch not found in model test-org\/paligemma-tiny/);
  });

  it('resumes an interrupted file from where it stopped and never names a partial file as whole', async () => {
    const shard = files.find((f) => f.path === 'model-00002-of-00002.safetensors')!;
    const cut = 50_000;
    hub.cutNextDownload(shard.path, cut);
    const stopped = await rejection(resolveModel(OPEN_REPO, { settings: settings() }));
    expect(stopped.code).to.equal('network');
    expect(stopped.message).to.match(/at 50000 of \d+ bytes; run again to resume/);
    const blobs = join(cache, REPO_DIR, 'blobs');
    const partial = join(blobs, `${etagOf(shard)}.incomplete`);
    expect((await stat(partial)).size).to.equal(cut);
    expect(await stat(join(blobs, etagOf(shard))).catch(() => undefined)).to.equal(undefined);
    expect(await readFile(join(cache, REPO_DIR, 'refs', 'main'), 'utf8').catch(() => undefined)).to.equal(undefined);

    hub.requests.length = 0;
    const events: DownloadProgress[] = [];
    const dir = await resolveModel(OPEN_REPO, { settings: settings(), onProgress: (p) => events.push(p) });
    const ranges = hub.requests.filter((r) => r.host === 'storage' && r.method === 'GET').map((r) => r.range);
    expect(ranges).to.include(`bytes=${cut}-${shard.content.length - 1}`);
    expect(Buffer.compare(await readFile(join(dir, shard.path)), Buffer.from(shard.content))).to.equal(0);
    // Only the bytes after the cut crossed the network the second time.
    const left = needed().filter((f) => f.path !== shard.path && f.path > shard.path);
    const resumedBytes = shard.content.length - cut + left.reduce((n, f) => n + f.content.length, 0);
    expect(events.at(-1)?.receivedBytes).to.equal(resumedBytes);
    expect(await stat(partial).catch(() => undefined)).to.equal(undefined);
  });
  it('a file whose bytes do not hash to its etag is refused, removed, and never linked; the next run fetches it anew', async () => {
    const shard = files.find((f) => f.path === 'model-00001-of-00002.safetensors')!;
    hub.corruptNextDownload(shard.path);
    const bad = await rejection(resolveModel(OPEN_REPO, { settings: settings() }));
    expect(bad.code).to.equal('hub_error');
    expect(bad.message).to.match(new RegExp(`download of ${shard.path} from test-org/paligemma-tiny@1{40} is corrupt \\(\\d+ of \\d+ bytes, hash [0-9a-f]{64}, expected ${etagOf(shard)}\\); run again`));
    const blobs = join(cache, REPO_DIR, 'blobs');
    expect(await stat(join(blobs, etagOf(shard))).catch(() => undefined)).to.equal(undefined);
    expect(await stat(join(blobs, `${etagOf(shard)}.incomplete`)).catch(() => undefined)).to.equal(undefined);
    expect(await stat(join(cache, REPO_DIR, 'snapshots', MAIN_COMMIT, shard.path)).catch(() => undefined)).to.equal(undefined);
    const dir = await resolveModel(OPEN_REPO, { settings: settings() });
    expect(Buffer.compare(await readFile(join(dir, shard.path)), Buffer.from(shard.content))).to.equal(0);
  });

  it('hub unreachable: a complete cached branch is used, as Python does; without one, one line naming HF_ENDPOINT and HF_HUB_OFFLINE', async () => {
    const dir = await resolveModel(OPEN_REPO, { settings: settings() });
    const closed = await closedEndpoint();
    expect(await resolveModel(OPEN_REPO, { settings: settings({ endpoint: closed }) })).to.equal(dir);
    const down = await rejection(resolveModel(`${OPEN_REPO}@v0`, { settings: settings({ endpoint: closed }) }));
    expect(down.code).to.equal('network');
    expect(down.message).to.match(/^cannot reach the hub at http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\) for model test-org\/paligemma-tiny: check the network or HF_ENDPOINT, or set HF_HUB_OFFLINE=1/);
    // A hub that is down (5xx) counts as unreachable too.
    const failing = createHttpServer((_req, res) => { res.writeHead(503).end(); });
    await new Promise<void>((done) => failing.listen(0, '127.0.0.1', done));
    try {
      const endpoint = `http://127.0.0.1:${(failing.address() as AddressInfo).port}`;
      expect(await resolveModel(OPEN_REPO, { settings: settings({ endpoint }) })).to.equal(dir);
      const err = await rejection(resolveModel(`${OPEN_REPO}@v0`, { settings: settings({ endpoint }) }));
      expect(err.message).to.match(/answered 503 for model test-org\/paligemma-tiny: try again later/);
    } finally {
      await new Promise((done) => failing.close(done));
    }
  });

  it('an existing folder named like ORG/NAME wins over the hub id, and takes no revision', async () => {
    const cwd = process.cwd();
    process.chdir(cache);
    try {
      await mkdir(join('test-org', 'paligemma-tiny'), { recursive: true });
      expect(await resolveModel(OPEN_REPO, { settings: settings() })).to.equal(OPEN_REPO);
      expect(hub.requests).to.deep.equal([]);
      const err = await rejection(resolveModel(OPEN_REPO, { revision: 'v0', settings: settings() }));
      expect(err.message).to.match(/revision v0 given with the local folder test-org\/paligemma-tiny/);
    } finally {
      process.chdir(cwd);
    }
  });
});
