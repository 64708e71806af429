/**
 * Every command that takes --model, and createPipeline({ model, revision }), resolves a hub id
 * through the one resolver: the same folder-or-cache-or-download order, the same --revision,
 * the same offline rule. Run as a user would (child processes) against the stand-in hub.
 */
import { expect } from 'chai';
import type { Command } from 'commander';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { batchCommand } from '../src/cli/batch-command.js';
import { benchCommand } from '../src/cli/bench-command.js';
import { generateCommand } from '../src/cli/generate-command.js';
import { scoreCommand } from '../src/cli/score-command.js';
import { quantizeCommand } from '../src/cli/quantize-command.js';
import { serveCommand } from '../src/cli/serve-command.js';
import { answerCommand, captionCommand, detectCommand, ocrCommand, segmentCommand } from '../src/cli/task-commands.js';
import { createPipeline } from '../src/create-pipeline.js';
import type { DownloadProgress } from '../src/hub/download-snapshot.js';
import { PaliGemmaError } from '../src/interfaces/errors.js';
import { encodeNpz } from '../src/testing/npz-writer.js';
import { smoothVaeTensors } from '../src/testing/tiny-vae.js';
import { fixtureRepos, MAIN_COMMIT, OLD_COMMIT, OPEN_REPO, UNNEEDED } from './support/hub-fixture-repo.js';
import { startHubStandIn, type HubStandIn } from './support/hub-stand-in.js';
import { hasRedisServer, startRedis } from './support/redis-server.js';
import { expectUserError } from './support/run-cli.js';
import { runCliAsync } from './support/run-cli-async.js';

const IMAGE = fileURLToPath(new URL('../examples/demo.png', import.meta.url));
const BIN = fileURLToPath(new URL('../bin/paligemma.js', import.meta.url));
const REPO_DIR = 'models--test-org--paligemma-tiny';
const HF_VARS = ['HF_HUB_CACHE', 'HF_HOME', 'HF_ENDPOINT', 'HF_TOKEN', 'HF_HUB_OFFLINE', 'HF_TOKEN_PATH', 'HUGGINGFACE_HUB_CACHE', 'HUGGING_FACE_HUB_TOKEN', 'TRANSFORMERS_OFFLINE', 'XDG_CACHE_HOME'];

describe('hub ids on every model command and in createPipeline (stand-in hub on 127.0.0.1)', function () {
  let hub: HubStandIn;
  let dir: string, cache: string, folder: string;
  const env = (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv =>
    ({ HF_HUB_CACHE: cache, HF_HOME: join(dir, 'hf-home'), HF_ENDPOINT: hub.url, ...extra });
  const byteRequests = () => hub.requests.filter((r) => r.url.includes('/resolve/') || r.host === 'storage');

  before(async () => {
    const repos = await fixtureRepos();
    hub = await startHubStandIn(repos);
    dir = await mkdtemp(join(tmpdir(), 'hub-commands-'));
    cache = join(dir, 'cache');
    // The same checkpoint as a plain folder: what a hub id must load the same as.
    folder = join(dir, 'folder');
    await mkdir(folder);
    for (const f of repos[0].commits[MAIN_COMMIT]) {
      if (!UNNEEDED.includes(f.path)) await writeFile(join(folder, f.path), f.content);
    }
  });
  after(async () => {
    await hub.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('generate --model ORG/NAME --json: downloads once into the cache, answers as the same folder does, stdout stays one JSON object', async () => {
    const args = ['generate', '--image', IMAGE, '--prompt', 'caption en', '--max-new-tokens', '4', '--json'];
    const [first, local] = await Promise.all([
      runCliAsync([...args, '--model', OPEN_REPO], env()),
      runCliAsync([...args, '--model', folder], env({ HF_HUB_OFFLINE: '1' })),
    ]);
    expect(first.code, first.stderr).to.equal(0);
    expect(local.code, local.stderr).to.equal(0);
    // Exactly one line on stdout, and it parses: no "Downloading …" debug line from the hub client.
    expect(first.stdout.trim().split('\n')).to.have.length(1);
    const got = JSON.parse(first.stdout) as { text: string; tokens: number[] };
    const want = JSON.parse(local.stdout) as { text: string; tokens: number[] };
    expect(got.tokens).to.deep.equal(want.tokens);
    expect(got.text).to.equal(want.text);
    // Not a terminal: one summary line on stderr, naming the repo and commit.
    const summary = first.stderr.split('\n').filter((l) => l.startsWith('downloaded '));
    expect(summary, first.stderr).to.have.length(1);
    expect(summary[0]).to.match(/^downloaded \d+ files \(\d+\.\d MB\) of test-org\/paligemma-tiny@1111111 in \d+\.\d s$/);
    expect(first.stderr).to.not.match(/Downloading/);
    expect(await readFile(join(cache, REPO_DIR, 'refs', 'main'), 'utf8')).to.equal(MAIN_COMMIT);

    hub.requests.length = 0;
    const second = await runCliAsync([...args, '--model', OPEN_REPO], env());
    expect(second.code, second.stderr).to.equal(0);
    expect(byteRequests()).to.deep.equal([]);
    expect(second.stderr).to.not.match(/^downloaded /m);
    expect((JSON.parse(second.stdout) as { tokens: number[] }).tokens).to.deep.equal(want.tokens);
  });

  it('every command that loads a --model also takes --revision (both from the one shared option set)', () => {
    const withModel: string[] = [];
    const walk = (cmd: Command, prefix: string) => {
      for (const sub of cmd.commands) {
        const name = `${prefix}${sub.name()}`;
        const flags = sub.options.map((o) => o.long);
        // bench --model, where present, names a set of shapes (no checkpoint is read): not a model.
        if (sub.options.some((o) => o.long === '--model' && o.flags.includes('<dir|id>'))) {
          withModel.push(name);
          expect(flags, name).to.include('--revision');
        }
        walk(sub, `${name} `);
      }
    };
    // The commands main.ts registers (it runs the CLI when imported, so they are built here).
    const root = { commands: [generateCommand(), scoreCommand(), detectCommand(), segmentCommand(), captionCommand(),
      ocrCommand(), answerCommand(), serveCommand(), batchCommand(), benchCommand(), quantizeCommand()] } as unknown as Command;
    walk(root, '');
    expect(withModel.sort()).to.deep.equal(
      ['answer', 'batch run', 'batch worker', 'caption', 'detect', 'generate', 'ocr', 'quantize', 'score', 'segment', 'serve'].sort());
  });

  it('score, segment (a task command) and batch run take the cached hub id offline, with no request', async () => {
    const vae = join(dir, 'vae.npz');
    await writeFile(vae, encodeNpz(smoothVaeTensors({ dim: 4, channels: 16 })));
    const jobs = join(dir, 'jobs.jsonl');
    await writeFile(jobs, `${JSON.stringify({ id: 'j1', image: IMAGE, task: 'caption' })}\n`);
    const results = join(dir, 'results.jsonl');
    hub.requests.length = 0;
    const offline = env({ HF_HUB_OFFLINE: '1' });
    const runs = await Promise.all([
      runCliAsync(['score', '--image', IMAGE, '--prompt', 'caption en', '--suffix', 'a cat', '--model', OPEN_REPO, '--json'], offline),
      runCliAsync(['segment', 'cat', '--image', IMAGE, '--model', OPEN_REPO, '--max-new-tokens', '2', '--vae', vae, '--json'], offline),
      runCliAsync(['batch', 'run', '--input', jobs, '--out', results, '--model', OPEN_REPO], offline),
    ]);
    runs.forEach((r, i) => expect(r.code, `run ${i}: ${r.stderr}`).to.equal(0));
    for (const r of runs.slice(0, 2)) expect(() => JSON.parse(r.stdout), r.stdout).to.not.throw();
    const outcome = JSON.parse((await readFile(results, 'utf8')).trim()) as { id: string; status: string };
    expect(outcome).to.include({ id: 'j1', status: 'completed' });
    expect(hub.requests).to.deep.equal([]);
  });

  it('batch worker --model ORG/NAME (Redis queue) takes the cached hub id offline, with no request', async function () {
    if (!hasRedisServer()) this.skip();   // redis-server is not on PATH: this one needs a real Redis
    const redis = await startRedis();
    try {
      const jobs = join(dir, 'worker-jobs.jsonl');
      await writeFile(jobs, `${JSON.stringify({ id: 'w1', image: IMAGE, prompt: 'caption en', options: { maxNewTokens: 2 } })}\n`);
      const q = ['--redis', redis.url, '--queue', 'hubq'];
      const submitted = await runCliAsync(['batch', 'submit', ...q, '--input', jobs], env());
      expect(submitted.code, submitted.stderr).to.equal(0);
      hub.requests.length = 0;
      const worker = await runCliAsync(['batch', 'worker', ...q, '--model', OPEN_REPO, '--until-idle'], env({ HF_HUB_OFFLINE: '1' }));
      expect(worker.code, worker.stderr).to.equal(0);
      expect(worker.stderr).to.match(/job w1 completed/);
      expect(hub.requests).to.deep.equal([]);
    } finally {
      await redis.stop();
    }
  });

  it('--revision and @REV reach the resolver on every command; offline, a revision not in the cache is one line naming the cache path', async () => {
    const offline = env({ HF_HUB_OFFLINE: '1' });
    const [byFlag, byAt, clash, byCommit] = await Promise.all([
      runCliAsync(['caption', '--image', IMAGE, '--model', OPEN_REPO, '--revision', 'v0'], offline),
      runCliAsync(['score', '--image', IMAGE, '--prompt', 'x', '--suffix', 'y', '--model', `${OPEN_REPO}@v0`], offline),
      runCliAsync(['generate', '--image', IMAGE, '--prompt', 'x', '--model', `${OPEN_REPO}@v0`, '--revision', 'main'], offline),
      // A commit already in the cache needs no ref.
      runCliAsync(['caption', '--image', IMAGE, '--model', `${OPEN_REPO}@${MAIN_COMMIT}`, '--max-new-tokens', '1'], offline),
    ]);
    const notCached = new RegExp(`model test-org/paligemma-tiny@v0 is not complete in the hub cache \\(${join(cache, REPO_DIR).replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} lacks refs/v0\\) and HF_HUB_OFFLINE is set`);
    expectUserError(byFlag, notCached);
    expectUserError(byAt, notCached);
    expectUserError(clash, /model test-org\/paligemma-tiny@v0 and revision main disagree/);
    expect(byCommit.code, byCommit.stderr).to.equal(0);
  });

  it('serve --model ORG/NAME serves the cached model under its hub id', async () => {
    const child = spawn(process.execPath, [BIN, 'serve', '--model', OPEN_REPO, '--port', '0'], {
      env: { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !HF_VARS.includes(k))), ...env({ HF_HUB_OFFLINE: '1' }) },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    try {
      const address = await new Promise<string>((resolve, reject) => {
        let err = '';
        const timer = setTimeout(() => reject(new Error(`serve did not start: ${err}`)), 120_000);
        child.stderr!.on('data', (d: Buffer) => {
          err += d.toString();
          const m = /listening on (http:\/\/\S+)/.exec(err);
          if (m) { clearTimeout(timer); resolve(m[1]); }
        });
        child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`serve exited ${code}: ${err}`)); });
      });
      const models = await (await fetch(`${address}/v1/models`)).json() as { data: { id: string }[] };
      expect(models.data.map((m) => m.id)).to.deep.equal([OPEN_REPO]);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('createPipeline({ model: ORG/NAME, revision }) reads HF_* from the environment, reports onDownloadProgress, loads what the folder loads', async () => {
    const saved = Object.fromEntries(HF_VARS.map((k) => [k, process.env[k]]));
    const apiCache = join(dir, 'api-cache');
    Object.assign(process.env, { HF_HUB_CACHE: apiCache, HF_ENDPOINT: hub.url, HF_HOME: join(dir, 'hf-home') });
    for (const k of ['HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', 'HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HF_TOKEN_PATH']) delete process.env[k];
    try {
      const events: DownloadProgress[] = [];
      const pipe = await createPipeline({ model: OPEN_REPO, revision: 'v0', onDownloadProgress: (p) => events.push(p) });
      const local = await createPipeline({ model: folder });
      try {
        expect(pipe.modelDir).to.equal(join(apiCache, REPO_DIR, 'snapshots', OLD_COMMIT));
        expect(events.length).to.be.greaterThan(1);
        expect(events.at(-1)).to.include({ finished: true, commit: OLD_COMMIT, repo: OPEN_REPO });
        const a = await pipe.generate(IMAGE, 'caption en', { maxNewTokens: 3 });
        const b = await local.generate(IMAGE, 'caption en', { maxNewTokens: 3 });
        expect(a.tokens).to.deep.equal(b.tokens);
      } finally {
        await pipe.close();
        await local.close();
      }
      let err: unknown;
      try {
        await createPipeline({ model: OPEN_REPO, revision: '' });
      } catch (e) { err = e; }
      expect(err).to.be.instanceOf(PaliGemmaError);
      expect((err as PaliGemmaError).message).to.match(/revision/);
    } finally {
      for (const [k, v] of Object.entries(saved)) { if (v === undefined) delete process.env[k]; else process.env[k] = v; }
    }
  });
});
