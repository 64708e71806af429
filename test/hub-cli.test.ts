/**
 * `paligemma download` / `models` and the download feedback as a user meets them: the login
 * `hf auth login` leaves ($HF_HOME/token), gated and unknown ids as one line with exit 2, the
 * token in no output, one bar on a terminal and one summary line otherwise.
 */
import { expect } from 'chai';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { downloadReporter } from '../src/cli/download-progress.js';
import type { DownloadPlan } from '../src/hub/download-snapshot.js';
import { fixtureRepos, GATED_COMMIT, GATED_REPO, GRANTED_TOKEN, MAIN_COMMIT, OPEN_REPO, OTHER_TOKEN } from './support/hub-fixture-repo.js';
import { startHubStandIn, type HubStandIn } from './support/hub-stand-in.js';
import { expectUserError } from './support/run-cli.js';
import { runCliAsync } from './support/run-cli-async.js';

/** A stand-in for stderr: a terminal or not, recording what is written. */
function fakeStream(isTTY: boolean): NodeJS.WriteStream & { text: () => string } {
  const chunks: string[] = [];
  return {
    isTTY, columns: 160,
    write(chunk: string | Uint8Array) { chunks.push(chunk.toString()); return true; },
    text: () => chunks.join(''),
  } as unknown as NodeJS.WriteStream & { text: () => string };
}

const plan: DownloadPlan = {
  repo: OPEN_REPO, commit: MAIN_COMMIT, totalBytes: 3_000_000,
  files: [{ path: 'a.safetensors', size: 2_000_000, etag: 'e1', lfs: true }, { path: 'config.json', size: 1_000_000, etag: 'e2', lfs: false }],
};
const event = (loaded: number, finished = false) =>
  ({ repo: OPEN_REPO, commit: MAIN_COMMIT, file: finished ? '' : 'a.safetensors', loadedBytes: loaded, totalBytes: 3_000_000, receivedBytes: loaded, finished });

describe('download feedback on stderr', () => {
  it('a terminal gets one bar with bytes, rate and ETA, and no summary line', () => {
    const tty = fakeStream(true);
    const r = downloadReporter(tty);
    r.onPlan(plan);
    r.onProgress(event(1_500_000));
    r.onProgress(event(3_000_000, true));
    r.stop();
    const text = tty.text();
    expect(text).to.match(/downloading test-org\/paligemma-tiny \[[^\]]+\] \d+% [\d.]+\/3\.0 MB [\d.]+ MB\/s ETA/);
    expect(text).to.not.match(/downloaded 2 files/);
  });

  it('anything else gets exactly one summary line, once the download has finished', () => {
    const pipe = fakeStream(false);
    const r = downloadReporter(pipe);
    r.onPlan(plan);
    r.onProgress(event(1_500_000));
    expect(pipe.text()).to.equal('');
    r.onProgress(event(3_000_000, true));
    r.stop();
    expect(pipe.text()).to.match(/^downloaded 2 files \(3\.0 MB\) of test-org\/paligemma-tiny@1111111 in \d+\.\d s\n$/);
  });

  it('nothing at all when everything is in the cache', () => {
    for (const isTTY of [true, false]) {
      const s = fakeStream(isTTY);
      const r = downloadReporter(s);
      r.onPlan({ ...plan, files: [], totalBytes: 0 });
      r.stop();
      expect(s.text(), `isTTY ${isTTY}`).to.equal('');
    }
  });
});

describe('paligemma download and models (stand-in hub on 127.0.0.1)', function () {
  let hub: HubStandIn;
  let dir: string;
  before(async () => {
    hub = await startHubStandIn(await fixtureRepos());
    dir = await mkdtemp(join(tmpdir(), 'hub-cli-'));
  });
  after(async () => {
    await hub.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('gated: the token file from hf auth login is used; without it or with a wrong HF_TOKEN one line, exit 2; the token is in no output', async () => {
    const home = join(dir, 'home-granted');
    await mkdir(home, { recursive: true });
    await writeFile(join(home, 'token'), `${GRANTED_TOKEN}\n`);
    const cache = join(dir, 'cache-gated');
    const env = (extra: NodeJS.ProcessEnv) => ({ HF_ENDPOINT: hub.url, HF_HUB_CACHE: cache, ...extra });
    const [granted, none, wrong, wrongVerbose] = await Promise.all([
      runCliAsync(['download', GATED_REPO, '--json'], env({ HF_HOME: home })),
      runCliAsync(['download', GATED_REPO], env({ HF_HOME: join(dir, 'home-empty') })),
      runCliAsync(['download', GATED_REPO, '--json'], env({ HF_HOME: home, HF_TOKEN: OTHER_TOKEN })),
      runCliAsync(['download', GATED_REPO, '--verbose'], env({ HF_HOME: home, HF_TOKEN: OTHER_TOKEN })),
    ]);
    expect(granted.code, granted.stderr).to.equal(0);
    expect(JSON.parse(granted.stdout)).to.deep.equal({ repo: GATED_REPO, revision: 'main', path: join(cache, 'models--test-org--paligemma-gated', 'snapshots', GATED_COMMIT) });
    expect(granted.stderr).to.match(/^downloaded \d+ files \([\d.]+ MB\) of test-org\/paligemma-gated@3333333 in [\d.]+ s\n$/);
    expectUserError(none, /^error: model test-org\/paligemma-gated is gated and no HF_TOKEN is set \(nor a token file from hf auth login\): accept the licence on http:\/\/127\.0\.0\.1:\d+\/test-org\/paligemma-gated and set HF_TOKEN/);
    expectUserError(wrong, /model test-org\/paligemma-gated is gated and your HF_TOKEN has no access to it/);
    expect(JSON.parse(wrong.stderr).error.code).to.equal('gated');
    expect(wrongVerbose.code).to.equal(2);
    for (const r of [granted, none, wrong, wrongVerbose]) {
      for (const token of [GRANTED_TOKEN, OTHER_TOKEN]) expect(r.stdout + r.stderr).to.not.include(token);
    }
    // The token went to the hub, never to the storage host the large files redirect to.
    expect(hub.requests.filter((r) => r.host === 'storage').length).to.be.greaterThan(0);
    expect(hub.requests.filter((r) => r.host === 'storage').every((r) => !r.authorized)).to.equal(true);
  });

  it('unknown id or revision: one line, exit 2; models --json lists what download fetched, with refs and size', async () => {
    const cache = join(dir, 'cache-open');
    const env = { HF_ENDPOINT: hub.url, HF_HUB_CACHE: cache, HF_HOME: join(dir, 'home-empty') };
    const [unknown, badRev, fetched, notAnId] = await Promise.all([
      runCliAsync(['download', 'test-org/no-such-model'], env),
      runCliAsync(['download', OPEN_REPO, '--revision', 'no-such-branch'], env),
      runCliAsync(['download', `${OPEN_REPO}@v0`], env),
      runCliAsync(['download', './some/folder'], env),
    ]);
    expectUserError(unknown, /^error: model test-org\/no-such-model not found on http:\/\/127\.0\.0\.1:\d+ \(if it is private or gated, set HF_TOKEN\)$/);
    expectUserError(badRev, /^error: revision no-such-branch not found in model test-org\/paligemma-tiny$/);
    expectUserError(notAnId, /invalid hub id \.\/some\/folder: expected ORG\/NAME/);
    expect(fetched.code, fetched.stderr).to.equal(0);
    const snapshot = fetched.stdout.trim();

    const [json, table] = await Promise.all([
      runCliAsync(['models', '--json'], env),
      runCliAsync(['models'], env),
    ]);
    expect(json.code, json.stderr).to.equal(0);
    const listed = JSON.parse(json.stdout) as { cacheDir: string; models: { repo: string; refs: string[]; path: string; complete: boolean; sizeOnDisk: number }[] };
    expect(listed.cacheDir).to.equal(cache);
    expect(listed.models.map((m) => [m.repo, m.refs, m.path, m.complete])).to.deep.equal([[OPEN_REPO, ['v0'], snapshot, true]]);
    expect(listed.models[0].sizeOnDisk).to.be.greaterThan(1_000_000);
    expect(table.stdout.split('\n')[1]).to.match(/^test-org\/paligemma-tiny +v0 +222222222222 +1\.\d MB +\//);
  });
});
