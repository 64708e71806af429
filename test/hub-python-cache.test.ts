/**
 * The hub cache shared with Python's `huggingface_hub`, checked against what Python's client did
 * (recorded once by test/fixtures/hub/make-hub-cache.py into python-cache.json; CI has no Python):
 * a cache Python made is used here in place and offline; a cache our code makes has exactly the
 * layout Python read back without a request; the stand-in answers Python's calls as the hub does.
 */
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { cachedPaliGemmaModels } from '../src/hub/cached-models.js';
import type { DownloadPlan } from '../src/hub/download-snapshot.js';
import type { HubSettings } from '../src/hub/hub-settings.js';
import { resolveModel } from '../src/hub/resolve-model.js';
import { PaliGemmaError } from '../src/interfaces/errors.js';
import { fixtureRepos, GATED_REPO, GRANTED_TOKEN, MAIN_COMMIT, OLD_COMMIT, OPEN_REPO, OTHER_TOKEN } from './support/hub-fixture-repo.js';
import { sha256, startHubStandIn, type HubStandIn, type StandInFile } from './support/hub-stand-in.js';

interface TreeEntry { path: string; type: 'dir' | 'file' | 'link'; target?: string; size?: number; sha256?: string; text?: string }
interface ScanRevision { commit_hash: string; refs: string[]; size_on_disk: number; snapshot_path: string; files: { file_name: string; size_on_disk: number; blob_path: string }[] }
interface Scan { warnings: string[]; repos: { repo_id: string; repo_type: string; refs: string[]; nb_files: number; size_on_disk: number; revisions: ScanRevision[] }[] }
type Outcome<T> = { ok: T } | { error: string; message: string };
interface Record {
  huggingface_hub: string;
  python_cache: { snapshots: { main: string; v0: string }; tree: TreeEntry[]; scan: Scan };
  ours_cache: {
    downloads: { repo: string; revision: string; path: string; stderr: string }[];
    tree: TreeEntry[];
    python_read: { scan: Scan; snapshot_download: { [rev: string]: Outcome<string> }; hf_hub_download: { [file: string]: Outcome<{ path: string; sha256: string }> } };
  };
  errors: { [name: string]: Outcome<string> };
  interrupted: {
    python: { result: Outcome<string>; tree: TreeEntry[] };
    ours_then_python: { code: number; stderr: string; tree: TreeEntry[]; python_snapshot_download: Outcome<string>; tree_after_python: TreeEntry[]; python_scan: Scan };
  };
  requests: { [phase: string]: string[] };
}

const RECORD = JSON.parse(await readFile(new URL('./fixtures/hub/python-cache.json', import.meta.url), 'utf8')) as Record;

/** Every entry under `root`, in the form make-hub-cache.py writes. */
async function cacheTree(root: string): Promise<TreeEntry[]> {
  const entries: TreeEntry[] = [];
  const walk = async (folder: string) => {
    for (const name of (await readdir(folder)).sort()) {
      const path = join(folder, name);
      const rel = relative(root, path);
      const st = await lstat(path);
      if (st.isSymbolicLink()) entries.push({ path: rel, type: 'link', target: await readlink(path) });
      else if (st.isDirectory()) { entries.push({ path: rel, type: 'dir' }); await walk(path); }
      else {
        const data = await readFile(path);
        entries.push({
          path: rel, type: 'file', size: data.length, sha256: sha256(data),
          ...(`/${rel}`.includes('/blobs/') ? {} : { text: data.toString('utf8') }),
        });
      }
    }
  };
  await walk(root);
  return entries.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

describe(`the hub cache shared with Python's huggingface_hub (recorded with ${RECORD.huggingface_hub})`, () => {
  let hub: HubStandIn;
  let contents: Map<string, StandInFile>;
  let cache: string;
  const settings = (extra: Partial<HubSettings> = {}): HubSettings => ({ cacheDir: cache, endpoint: hub.url, offline: false, ...extra });

  before(async () => {
    const repos = await fixtureRepos();
    contents = new Map(repos.flatMap((r) => Object.values(r.commits).flat()).map((f) => [sha256(f.content), f]));
    hub = await startHubStandIn(repos);
  });
  after(async () => { await hub.close(); });
  beforeEach(async () => {
    cache = await mkdtemp(join(tmpdir(), 'hub-python-'));
    hub.requests.length = 0;
  });
  afterEach(async () => { await rm(cache, { recursive: true, force: true }); });

  it('uses a cache Python made in place: offline with no request, online without fetching a byte, nothing copied', async () => {
    const { tree, snapshots, scan } = RECORD.python_cache;
    for (const e of tree) {
      const path = join(cache, e.path);
      if (e.type === 'dir') { await mkdir(path, { recursive: true }); continue; }
      await mkdir(dirname(path), { recursive: true });
      if (e.type === 'link') { await symlink(e.target!, path); continue; }
      const bytes = e.text !== undefined ? Buffer.from(e.text) : contents.get(e.sha256!)?.content;
      if (!bytes) throw new Error(`${e.path}: no stand-in file has sha256 ${e.sha256}; the tiny checkpoint changed, re-run make-hub-cache.py`);
      await writeFile(path, bytes);
    }
    expect(await cacheTree(cache)).to.deep.equal(tree);

    const main = await resolveModel(OPEN_REPO, { settings: settings({ offline: true }) });
    expect(main).to.equal(join(cache, snapshots.main));
    expect(await resolveModel(`${OPEN_REPO}@v0`, { settings: settings({ offline: true }) })).to.equal(join(cache, snapshots.v0));
    expect(hub.requests).to.deep.equal([]);

    let plan: DownloadPlan | undefined;
    expect(await resolveModel(OPEN_REPO, { settings: settings(), onPlan: (p) => { plan = p; } })).to.equal(main);
    expect(plan?.files).to.deep.equal([]);
    expect(hub.requests.filter((r) => r.url.includes('/resolve/') || r.host === 'storage')).to.deep.equal([]);
    expect(await cacheTree(cache)).to.deep.equal(tree);

    // `paligemma models` reads the same revisions, refs and sizes as Python's scan_cache_dir.
    const models = await cachedPaliGemmaModels(cache);
    const [repo] = scan.repos;
    expect(models.map((m) => ({ repo: m.repo, commit: m.commit, refs: m.refs, size: m.sizeOnDisk, path: relative(cache, m.path), complete: m.complete })))
      .to.deep.equal(repo.revisions.map((r) => ({ repo: repo.repo_id, commit: r.commit_hash, refs: r.refs, size: r.size_on_disk, path: r.snapshot_path, complete: true })));
  });

  it('downloads into exactly the layout that Python read back offline (scan_cache_dir, snapshot_download and hf_hub_download with local_files_only)', async () => {
    const { tree, downloads, python_read: read } = RECORD.ours_cache;
    const main = await resolveModel(OPEN_REPO, { settings: settings() });
    const v0 = await resolveModel(`${OPEN_REPO}@v0`, { settings: settings() });
    expect(await cacheTree(cache)).to.deep.equal(tree);
    expect(downloads.map((d) => [d.revision, d.path])).to.deep.equal([['main', relative(cache, main)], ['v0', relative(cache, v0)]]);

    expect(read.scan.warnings).to.deep.equal([]);
    expect(read.scan.repos.map((r) => [r.repo_id, r.repo_type, r.refs])).to.deep.equal([[OPEN_REPO, 'model', ['main', 'v0']]]);
    const revisions = read.scan.repos[0].revisions;
    expect(revisions.map((r) => [r.commit_hash, r.refs, r.snapshot_path]))
      .to.deep.equal([[MAIN_COMMIT, ['main'], relative(cache, main)], [OLD_COMMIT, ['v0'], relative(cache, v0)]]);
    for (const r of revisions) {
      expect(r.files.map((f) => f.file_name)).to.deep.equal((await readdir(join(cache, r.snapshot_path))).sort());
    }
    expect(read.snapshot_download).to.deep.equal({
      main: { ok: relative(cache, main) }, v0: { ok: relative(cache, v0) }, [MAIN_COMMIT]: { ok: relative(cache, main) },
    });
    const files = await readdir(main);
    expect(Object.keys(read.hf_hub_download).sort()).to.deep.equal(files.sort());
    for (const name of files) {
      expect(read.hf_hub_download[name], name).to.deep.equal({ ok: { path: relative(cache, join(main, name)), sha256: sha256(await readFile(join(main, name))) } });
    }
    // Python's local reads asked the stand-in nothing.
    expect(RECORD.requests['python-reads-ours']).to.equal(undefined);
  });

  it("the stand-in answers Python's client as the hub does, and both clients classify gated and unknown repos alike", async () => {
    // Python's own download went through the routes the stand-in serves, every answer a success
    // (302 for the large files, whose bytes came from the storage host without the token).
    const python = RECORD.requests['python-download'];
    expect(python.length).to.be.greaterThan(0);
    for (const line of python) expect(line, line).to.match(/ (200|206|302)$/);
    expect(python.some((l) => /^hub HEAD .*\.safetensors 302$/.test(l))).to.equal(true);
    expect(python.filter((l) => l.startsWith('storage ')).length).to.equal(2);

    const ours = async (repo: string, token?: string): Promise<string> => {
      try {
        await resolveModel(repo, { settings: settings({ token }) });
        return 'ok';
      } catch (e) {
        if (!(e instanceof PaliGemmaError)) throw e;
        expect(e.message).to.not.include(GRANTED_TOKEN).and.not.include(OTHER_TOKEN);
        return e.code!;
      }
    };
    const cases: [string, string, string][] = [
      ['gated_without_token', 'GatedRepoError', await ours(GATED_REPO)],
      ['gated_with_other_token', 'GatedRepoError', await ours(GATED_REPO, OTHER_TOKEN)],
      ['gated_with_granted_token', 'ok', await ours(GATED_REPO, GRANTED_TOKEN)],
      ['unknown_repo', 'RepositoryNotFoundError', await ours('test-org/no-such-model')],
      ['unknown_revision', 'RevisionNotFoundError', await ours(`${OPEN_REPO}@no-such-branch`)],
    ];
    const ourCode: { [python: string]: string } = { GatedRepoError: 'gated', ok: 'ok', RepositoryNotFoundError: 'not_found', RevisionNotFoundError: 'not_found' };
    for (const [name, pythonClass, our] of cases) {
      const recorded = RECORD.errors[name];
      expect('ok' in recorded ? 'ok' : recorded.error, name).to.equal(pythonClass);
      expect(our, name).to.equal(ourCode[pythonClass]);
    }
  });
  it("a partial file our download leaves is kept for our resume and never taken for a whole blob by Python's client", async () => {
    const shard = [...contents.values()].find((f) => f.path === 'model-00002-of-00002.safetensors')!;
    const blob = `models--test-org--paligemma-tiny/blobs/${sha256(shard.content)}`;
    const { ours_then_python: ours, python } = RECORD.interrupted;
    expect(ours.code).to.equal(2);
    expect(ours.stderr).to.match(/^error: download of model-00002-of-00002\.safetensors .* at 50000 of \d+ bytes; run again to resume$/);
    const at = (tree: TreeEntry[], path: string) => tree.find((e) => e.path === path);
    expect(at(ours.tree, `${blob}.incomplete`)?.size).to.equal(50000);
    expect(at(ours.tree, blob)).to.equal(undefined);
    // Python fetched the shard whole beside our partial file; its scan of the result is clean.
    expect(ours.python_snapshot_download).to.deep.equal({ ok: `models--test-org--paligemma-tiny/snapshots/${MAIN_COMMIT}` });
    expect(at(ours.tree_after_python, blob)).to.include({ size: shard.content.length, sha256: sha256(shard.content) });
    expect(ours.python_scan.warnings).to.deep.equal([]);
    // The stand-in's cut is what a dropped connection looks like to Python too: it retried and got the file whole.
    expect(python.result).to.deep.equal({ ok: `models--test-org--paligemma-tiny/snapshots/${MAIN_COMMIT}/model-00002-of-00002.safetensors` });
    expect(at(python.tree, blob)).to.include({ size: shard.content.length, sha256: sha256(shard.content) });
    expect(RECORD.requests['python-cut'].filter((l) => l.startsWith('storage GET'))).to.have.length(2);
  });
});
