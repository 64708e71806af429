/**
 * Plugins: the contribution contract, loading by object, path and package name, one-line
 * failures with exit code 2, the examples in plugins/ loaded the way a user loads them, and the
 * tutorial docs/writing-a-backend.md run command by command.
 *
 * The example plugins import 'paligemma-sdk', which resolves to this package's build (dist/), as
 * it does for a user; the build is made once here when it is missing or older than src/.
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import sharp from 'sharp';
import {
  AttentionKernelContribution, BackendContribution, BUILTIN_PLUGINS, CONTRIBUTION_KINDS, ContiguousKvCacheStore,
  HfTokenizer, ImageProcessorContribution, KVCacheStoreContribution, PaliGemmaError, PlainAttentionKernel,
  ReferenceBackend, SamplerContribution, SiglipImageProcessor, TokenizerContribution,
  createPipeline, createRegistry, definePlugin, greedy, isPlugin, keptSet, loadPluginModule, promptIds,
  seededRng, startBackend, temperature, type PaliGemmaPipeline, type PaliGemmaPlugin,
} from '../src/index.js';
import { buildTinyCheckpoint, gqaSpec, makeTempDir, makeTestImage, mhaSpec, mqaSpec, type TinySpec } from '../src/tiny-models/tiny-checkpoint.js';
import { expectUserError, runCli, type CliRun } from './support/run-cli.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PROFILING = './plugins/profiling-backend/index.js';
const MIN_P = './plugins/min-p-sampler/index.js';
const INT8 = './plugins/int8-kv-cache/index.js';

// ── helpers ─────────────────────────────────────────────────────────────────

/** Builds dist/ when it is missing or older than any file under src/ (plugins import the build). */
function ensureBuiltPackage(): void {
  const built = join(ROOT, 'dist', 'index.js');
  const newest = (dir: string): number => Math.max(0, ...readdirSync(dir, { withFileTypes: true }).map((e) => (
    e.isDirectory() ? newest(join(dir, e.name)) : statSync(join(dir, e.name)).mtimeMs)));
  const fresh = existsSync(built) && existsSync(join(ROOT, 'dist', 'cli.js'))
    && statSync(built).mtimeMs >= newest(join(ROOT, 'src'));
  if (fresh) return;
  const r = spawnSync('npm', ['run', 'build'], { cwd: ROOT, encoding: 'utf8', timeout: 300_000 });
  // The type declarations may fail on someone's half-written file; the JavaScript is what runs.
  if (!existsSync(built) || !existsSync(join(ROOT, 'dist', 'cli.js'))) {
    throw new Error(`npm run build failed:\n${r.stdout}\n${r.stderr}`);
  }
}

/** The command, from `cwd` (default: the repo root, where ./plugins/... paths start). */
function cli(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): CliRun {
  // From a folder outside the repo, tsx must still find this repo's tsconfig (decorators).
  return runCli(args, { cwd: opts.cwd ?? ROOT, env: { TSX_TSCONFIG_PATH: join(ROOT, 'tsconfig.json'), ...opts.env } });
}


async function expectRejects(p: Promise<unknown>, pattern: RegExp): Promise<PaliGemmaError> {
  try {
    await p;
  } catch (e) {
    expect(e, String(e)).to.be.instanceOf(PaliGemmaError);
    expect((e as Error).message).to.match(pattern);
    expect((e as Error).message).not.to.contain('\n');
    return e as PaliGemmaError;
  }
  throw new Error(`expected a rejection matching ${pattern}`);
}

// The example modules are plain JavaScript; they are used here through a thin typed view.
type MinPModule = {
  minPIds(logits: ArrayLike<number>, minP: number): number[];
  minP(p: number): { name: string; apply(l: Float32Array): Float32Array };
  minPSampler(o?: { minP?: number; temperature?: number }): { sample(l: Float32Array, ctx: { rng: { next(): number } }): number };
};
type ProfileRow = { op: string; count: number; totalMs: number; meanUs: number; shapes: { shapes: string; count: number }[] };
type Int8Module = {
  Int8KvCache: new (b: ReferenceBackend, spec: { layers: number; kvHeads: number; headDim: number; capacity: number }) => Int8Cache;
  quantizeRows(src: Float32Array, dst: { q: Int8Array; scale: Float32Array }, start: number, d: number): void;
};
type Int8Cache = import('../src/index.js').KVCache & { bytes: number; pending: unknown[][]; quantizedLength: Int32Array };
const importExample = (rel: string): Promise<any> => import(pathToFileURL(resolve(ROOT, rel)).href);

/** A user's project folder with the SDK "installed" as a link to this checkout (npm link style). */
async function userProject(prefix: string): Promise<string> {
  const dir = await makeTempDir(prefix);
  await mkdir(join(dir, 'node_modules', '.bin'), { recursive: true });
  await symlink(ROOT, join(dir, 'node_modules', 'paligemma-sdk'), 'dir');
  await symlink('../paligemma-sdk/bin/paligemma.js', join(dir, 'node_modules', '.bin', 'paligemma'));
  await symlink(join(ROOT, 'node_modules', 'inversify'), join(dir, 'node_modules', 'inversify'), 'dir');   // hoisted dependency
  await writeFile(join(dir, 'package.json'), JSON.stringify({ name: 'user-project', private: true, type: 'module' }));
  return dir;
}

async function writeFiles(dir: string, files: Record<string, string>): Promise<void> {
  for (const [name, text] of Object.entries(files)) {
    await mkdir(dirname(join(dir, name)), { recursive: true });
    await writeFile(join(dir, name), text);
  }
}

/** A plugin source whose module body is `body` (it may use every contribution token). */
const pluginSource = (name: string, body: string): string => `
import { definePlugin, BackendContribution, SamplerContribution, KVCacheStoreContribution, greedy, ReferenceBackend } from 'paligemma-sdk';
export default definePlugin(${JSON.stringify(name)}, ({ bind }) => {
${body}
});
`;

/** Greedy-decodes the same tokens through two pipelines and compares every step's logits. */
async function compareLogits(a: PaliGemmaPipeline, b: PaliGemmaPipeline, image: Uint8Array | object, steps: number) {
  const reference = await a.generate(image as never, 'caption en', { maxNewTokens: steps });
  const run = async (pipe: PaliGemmaPipeline): Promise<Float32Array[]> => {
    const pixels = await pipe.imageProcessor.process(image as never);
    const ids = Int32Array.from(promptIds(pipe.tokenizer, 'caption en', pipe.model.config.numImageTokens));
    const rows = pipe.model.imageRows(pixels);
    const embeds = pipe.model.embedPrompt(ids, rows);
    pipe.backend.dispose(rows);
    const session = pipe.model.session(ids.length + reference.tokens.length + 1);
    try {
      const out = [await session.prefill(embeds, ids.length)];                  // prefill, then one per token
      for (const t of reference.tokens) out.push(await session.step(t));
      return out;
    } finally {
      pipe.backend.dispose(embeds);
      session.dispose();
    }
  };
  const [la, lb] = [await run(a), await run(b)];
  const argmax = (x: Float32Array) => x.reduce((best, v, i) => (v > x[best] ? i : best), 0);
  let prefillDiff = 0, decodeDiff = 0, maxLogit = 0, agree = 0;
  la.forEach((x, s) => {
    for (let i = 0; i < x.length; i++) {
      const d = Math.abs(x[i] - lb[s][i]);
      if (s === 0) prefillDiff = Math.max(prefillDiff, d); else decodeDiff = Math.max(decodeDiff, d);
      maxLogit = Math.max(maxLogit, Math.abs(x[i]));
    }
    if (argmax(x) === argmax(lb[s])) agree++;
  });
  const free = await b.generate(image as never, 'caption en', { maxNewTokens: steps });
  const sameFreeRun = reference.tokens.every((t, i) => free.tokens[i] === t) && free.tokens.length === reference.tokens.length;
  return { steps: la.length, prefillDiff, decodeDiff, maxLogit, agreement: agree / la.length, sameFreeRun };
}

// ── tests ───────────────────────────────────────────────────────────────────

describe('plugins', function () {
  this.timeout(300_000);
  let dir: string;
  let model: string;
  let imagePath: string;
  const image = makeTestImage(40, 30, 7);

  before(async function () {
    ensureBuiltPackage();
    dir = await makeTempDir('pg-plugins-');
    model = join(dir, 'model');
    await mkdir(model);
    await buildTinyCheckpoint(model, { ...mqaSpec(), includeLmHead: true });
    imagePath = join(dir, 'image.png');
    await sharp(Buffer.from(image.data), { raw: { width: image.width, height: image.height, channels: 3 } }).png().toFile(imagePath);
  });

  describe('the contribution contract', function () {
    const manyParts = definePlugin('many-parts', ({ bind }) => {
      for (const s of ['a', 'b']) {
        bind(BackendContribution).toConstantValue({ name: `ref-${s}`, description: 'reference, renamed', create: () => new ReferenceBackend() });
        bind(AttentionKernelContribution).toConstantValue({ name: `plain-${s}`, description: '', create: () => new PlainAttentionKernel() });
        bind(KVCacheStoreContribution).toConstantValue({ name: `contiguous-${s}`, description: '', create: () => new ContiguousKvCacheStore() });
        bind(SamplerContribution).toConstantValue({ name: `greedy-${s}`, description: '', create: () => greedy() });
        bind(TokenizerContribution).toConstantValue({ name: `hf-${s}`, description: '', load: (d) => HfTokenizer.fromDir(d) });
        bind(ImageProcessorContribution).toConstantValue({ name: `siglip-${s}`, description: '', load: (d, size) => SiglipImageProcessor.fromDir(d, size) });
      }
    });

    it('one plugin contributes any number of named parts of every kind', async function () {
      const registry = await createRegistry([manyParts]);
      for (const kind of Object.keys(CONTRIBUTION_KINDS) as (keyof typeof CONTRIBUTION_KINDS)[]) {
        const mine = registry.list().filter((p) => p.kind === kind && p.plugin === 'many-parts');
        expect(mine.map((p) => p.name), kind).to.have.length(2);
      }
      expect(registry.list().filter((p) => p.plugin === 'many-parts').every((p) => p.source === 'built-in')).to.equal(true);
      const tok = await registry.get('tokenizer', 'hf-b').load(model);
      expect(tok.encode('caption en')).to.deep.equal((await HfTokenizer.fromDir(model)).encode('caption en'));
      const proc = await registry.get('imageProcessor', 'siglip-a').load(model, 16);
      expect((await proc.process(image)).shape).to.deep.equal([3, 16, 16]);
    });

    it('a pipeline runs on parts picked by name from a plugin, with the built-in result', async function () {
      const ours = await createPipeline({
        model, plugins: [manyParts], backend: 'ref-b', attention: 'plain-a', kvCache: 'contiguous-b', sampler: 'greedy-a',
      });
      const builtIn = await createPipeline({ model, attention: 'plain' });
      try {
        const [a, b] = [await ours.generate(image, 'caption en', { maxNewTokens: 5 }), await builtIn.generate(image, 'caption en', { maxNewTokens: 5 })];
        expect(a.tokens).to.deep.equal(b.tokens);
      } finally {
        await ours.close();
        await builtIn.close();
      }
    });

    it('built-in parts arrive through the same contract', async function () {
      for (const p of BUILTIN_PLUGINS) expect(isPlugin(p), p.name).to.equal(true);
      const registry = await createRegistry();
      const builtinNames = BUILTIN_PLUGINS.map((p) => p.name);
      expect(registry.list().every((p) => builtinNames.includes(p.plugin) && p.source === 'built-in')).to.equal(true);
      expect(registry.names('backend')).to.include('reference');
      const r = cli(['plugins', '--json']);
      expect(r.code, r.stderr).to.equal(0);
      const parts = JSON.parse(r.stdout) as { kind: string; name: string; source: string }[];
      expect(parts.find((p) => p.kind === 'backend' && p.name === 'reference')?.source).to.equal('built-in');
    });

    it('contribution tokens and PaliGemmaError are shared by every copy of the SDK', async function () {
      const dist = await import(pathToFileURL(join(ROOT, 'dist', 'index.js')).href);
      for (const [kind, token] of Object.entries(CONTRIBUTION_KINDS)) {
        expect(dist.CONTRIBUTION_KINDS[kind], kind).to.equal(token);
        expect(token.toString(), kind).to.match(/^Symbol\(paligemma-sdk\./);
      }
      expect(new dist.PaliGemmaError('from another copy')).to.be.instanceOf(PaliGemmaError);
      expect(new Error('plain')).not.to.be.instanceOf(PaliGemmaError);
    });

    it('definePlugin refuses an empty name; the registry a part without its factory', async function () {
      expect(() => definePlugin('', () => {})).to.throw(TypeError, /non-empty name/);
      const noCreate = definePlugin('no-create', ({ bind }) => {
        bind(BackendContribution).toConstantValue({ name: 'hollow', description: '' } as unknown as BackendContribution);
      });
      await expectRejects(createRegistry([noCreate]), /^plugin no-create \(built-in\): backend 'hollow' has no create\(\) function$/);
    });
  });

  describe('loading', function () {
    let project: string;

    before(async function () {
      project = await userProject('pg-plugin-user-');
      const sampler = (name: string) => pluginSource(name, `  bind(SamplerContribution).toConstantValue({ name: '${name}-greedy', description: '${name}', create: () => greedy() });`);
      await writeFiles(project, {
        // ESM only: "exports" with just an import condition.
        'node_modules/esm-plugin/package.json': JSON.stringify({ name: 'esm-plugin', type: 'module', exports: { '.': { import: './index.js' } } }),
        'node_modules/esm-plugin/index.js': sampler('esm-plugin'),
        // Dual: the require entry is not a plugin; import must pick the ESM one.
        'node_modules/dual-plugin/package.json': JSON.stringify({ name: 'dual-plugin', exports: { '.': { require: './index.cjs', import: './index.mjs' } } }),
        'node_modules/dual-plugin/index.cjs': 'module.exports = { wrong: "entry" };\n',
        'node_modules/dual-plugin/index.mjs': sampler('dual-plugin'),
        // Scoped, "main" only.
        'node_modules/@me/scoped-plugin/package.json': JSON.stringify({ name: '@me/scoped-plugin', type: 'module', main: 'lib/plugin.js' }),
        'node_modules/@me/scoped-plugin/lib/plugin.js': sampler('scoped-plugin'),
        // A CommonJS build of `export default`, using only inversify and the global contribution tokens.
        'node_modules/cjs-plugin/package.json': JSON.stringify({ name: 'cjs-plugin', main: 'index.js' }),
        'node_modules/cjs-plugin/index.js': `const { ContainerModule } = require('inversify');
const SamplerContribution = Symbol.for('paligemma-sdk.SamplerContribution');
Object.defineProperty(exports, '__esModule', { value: true });
exports.default = {
  name: 'cjs-plugin',
  module: new ContainerModule(({ bind }) => {
    bind(SamplerContribution).toConstantValue({ name: 'cjs-plugin-greedy', description: '', create: () => ({ name: 'first', sample: () => 0 }) });
  }),
};
`,
        'local/my-sampler.js': sampler('local'),
      });
    });

    it('by object, by path (relative, absolute, folder, without ./) and by package name', async function () {
      const object = definePlugin('inline', ({ bind }) => {
        bind(SamplerContribution).toConstantValue({ name: 'inline-greedy', description: '', create: () => greedy() });
      });
      const registry = await createRegistry([
        object, MIN_P, resolve(ROOT, PROFILING), './plugins/int8-kv-cache', join(project, 'local', 'my-sampler.js'),
      ]);
      const names = registry.list().map((p) => `${p.kind}:${p.name}`);
      expect(names).to.include.members(['sampler:inline-greedy', 'sampler:min-p', 'backend:profiling', 'kvCache:int8', 'sampler:local-greedy']);
      expect(registry.list().find((p) => p.name === 'min-p')?.source).to.equal(MIN_P);
      expect((await loadPluginModule('plugins/min-p-sampler/index.js')).name).to.equal('min-p-sampler');

      for (const [spec, part] of [['esm-plugin', 'esm-plugin-greedy'], ['dual-plugin', 'dual-plugin-greedy'],
        ['@me/scoped-plugin', 'scoped-plugin-greedy'], ['cjs-plugin', 'cjs-plugin-greedy']]) {
        const plugin = await loadPluginModule(spec, project);
        expect(plugin.source, spec).to.equal(spec);
        const reg = await createRegistry([plugin]);
        expect(reg.names('sampler'), spec).to.include(part);
      }
    });

    it('createPipeline takes package names, looked up from the working folder', async function () {
      const cwd = process.cwd();
      process.chdir(project);
      try {
        const pipe = await createPipeline({ model, plugins: ['esm-plugin', './local/my-sampler.js'], sampler: 'esm-plugin-greedy' });
        const r = await pipe.generate(image, 'caption en', { maxNewTokens: 3 });
        expect(r.tokens).to.have.length.above(0);
        await pipe.close();
      } finally {
        process.chdir(cwd);
      }
    });

    it('the command takes --plugin repeatedly, paths and package names alike', function () {
      const r = cli(['plugins', '--json', '--plugin', 'esm-plugin', '--plugin', '@me/scoped-plugin', '--plugin', './local/my-sampler.js',
        '--plugin', join(ROOT, 'plugins/min-p-sampler/index.js')], { cwd: project });
      expect(r.code, r.stderr).to.equal(0);
      const parts = JSON.parse(r.stdout) as { kind: string; name: string; plugin: string; source: string }[];
      expect(parts.filter((p) => p.source !== 'built-in').map((p) => [p.name, p.plugin, p.source])).to.deep.equal([
        ['esm-plugin-greedy', 'esm-plugin', 'esm-plugin'],
        ['scoped-plugin-greedy', 'scoped-plugin', '@me/scoped-plugin'],
        ['local-greedy', 'local', './local/my-sampler.js'],
        ['min-p', 'min-p-sampler', join(ROOT, 'plugins/min-p-sampler/index.js')],
      ]);
      const table = cli(['plugins', '--plugin', './plugins/int8-kv-cache/index.js']);
      expect(table.code, table.stderr).to.equal(0);
      expect(table.stdout).to.match(/^kvCache\s+int8\s+int8-kv-cache\s+\.\/plugins\/int8-kv-cache\/index\.js\s+int8 keys/m);
    });
  });

  describe('failures: one line naming the plugin, exit code 2', function () {
    let project: string;

    before(async function () {
      project = await userProject('pg-plugin-bad-');
      await writeFiles(project, {
        'not-a-plugin.js': 'export default { hello: "world" };\n',
        'no-default.js': 'export const plugin = 1;\n',
        'syntax-error.js': 'export default definePlugin(\n',
        'clash.js': pluginSource('clash', "  bind(BackendContribution).toConstantValue({ name: 'reference', description: '', create: () => new ReferenceBackend() });"),
        'sampler-one.js': pluginSource('sampler-one', "  bind(SamplerContribution).toConstantValue({ name: 'same', description: '', create: () => greedy() });"),
        'sampler-two.js': pluginSource('sampler-two', "  bind(SamplerContribution).toConstantValue({ name: 'same', description: '', create: () => greedy() });"),
        'throws-in-body.js': pluginSource('throws-in-body', "  throw new Error('cannot bind today');"),
        'exploding.js': pluginSource('exploding-backend', [
          "  bind(BackendContribution).toConstantValue({ name: 'exploding', description: '', create: () => { throw new Error('no device here'); } });",
          "  bind(BackendContribution).toConstantValue({ name: 'late', description: '', create: () => Object.assign(new ReferenceBackend(), { init: async () => { throw new Error('driver too old\\nsecond line'); } }) });",
        ].join('\n')),
      });
    });

    const cases: { name: string; args: (p: string) => string[]; api: (p: string) => Promise<unknown>; pattern: RegExp }[] = [
      {
        name: 'a path that does not exist',
        args: () => ['plugins', '--plugin', './no-such-plugin.js'],
        api: (p) => loadPluginModule('./no-such-plugin.js', p),
        pattern: /^plugin \.\/no-such-plugin\.js: file not found \(.*no-such-plugin\.js\)$/,
      },
      {
        name: 'a package that is not installed',
        args: () => ['plugins', '--plugin', 'no-such-package'],
        api: (p) => loadPluginModule('no-such-package', p),
        pattern: /^plugin no-such-package: no such file, and no installed package of that name/,
      },
      {
        name: 'a default export that is not a plugin',
        args: () => ['plugins', '--plugin', './not-a-plugin.js'],
        api: (p) => loadPluginModule('./not-a-plugin.js', p),
        pattern: /^plugin \.\/not-a-plugin\.js: its default export is not a plugin \(got an object with hello; expected export default definePlugin/,
      },
      {
        name: 'no default export',
        args: () => ['plugins', '--plugin', './no-default.js'],
        api: (p) => loadPluginModule('./no-default.js', p),
        pattern: /^plugin \.\/no-default\.js: its default export is not a plugin \(got no default export/,
      },
      {
        name: 'a file that does not parse',
        args: () => ['plugins', '--plugin', './syntax-error.js'],
        api: (p) => loadPluginModule('./syntax-error.js', p),
        pattern: /^plugin \.\/syntax-error\.js: failed to import: /,
      },
      {
        name: 'a name already registered by a built-in',
        args: () => ['plugins', '--plugin', './clash.js'],
        api: (p) => createRegistry([join(p, 'clash.js')]),
        pattern: /^plugin clash \(.*clash\.js\): backend 'reference' is already registered by plugin reference-backend$/,
      },
      {
        name: 'a name already registered by another plugin',
        args: () => ['plugins', '--plugin', './sampler-one.js', '--plugin', './sampler-two.js'],
        api: (p) => createRegistry([join(p, 'sampler-one.js'), join(p, 'sampler-two.js')]),
        pattern: /^plugin sampler-two \(.*sampler-two\.js\): sampler 'same' is already registered by plugin sampler-one$/,
      },
      {
        name: 'the same plugin twice',
        args: () => ['plugins', '--plugin', './sampler-one.js', '--plugin', './sampler-one.js'],
        api: (p) => createRegistry([join(p, 'sampler-one.js'), join(p, 'sampler-one.js')]),
        pattern: /^plugin sampler-one \(.*sampler-one\.js\): a plugin of that name is already loaded$/,
      },
      {
        name: 'a module body that throws',
        args: () => ['plugins', '--plugin', './throws-in-body.js'],
        api: (p) => createRegistry([join(p, 'throws-in-body.js')]),
        pattern: /^plugin throws-in-body \(.*throws-in-body\.js\): its module failed to load: cannot bind today$/,
      },
    ];

    for (const c of cases) {
      it(`${c.name}: command and API`, async function () {
        expectUserError(cli(c.args(project), { cwd: project }), new RegExp(`^error: ${c.pattern.source.replace(/^\^/, '')}`), { allowNotes: true });
        await expectRejects(c.api(project), c.pattern);
      });
    }

    it('a refused plugin leaves the registry as it was', async function () {
      const registry = await createRegistry();
      const before = registry.list().length;
      const clash = await loadPluginModule(join(project, 'clash.js'));
      expect(() => registry.load(clash)).to.throw(PaliGemmaError);
      expect(registry.list()).to.have.length(before);
      expect(registry.get('backend', 'reference').description).to.match(/oracle/);
      const one = await loadPluginModule(join(project, 'sampler-one.js'));
      registry.load(one);
      expect(registry.names('sampler')).to.include('same');
      expect(() => registry.load({ ...one, name: 'renamed' })).to.throw(PaliGemmaError, /^plugin renamed \(.*\): its module is already loaded, as plugin sampler-one$/);
      expect(registry.names('sampler').filter((n) => n === 'same')).to.have.length(1);
    });

    it('a backend that throws while starting (create or init): command and API', async function () {
      const gen = (backend: string) => cli(['generate', '--model', model, '--image', imagePath, '--prompt', 'caption en',
        '--backend', backend, '--plugin', './exploding.js'], { cwd: project });
      expectUserError(gen('exploding'), /^error: backend exploding \(plugin exploding-backend\) failed to start: no device here$/, { allowNotes: true });
      expectUserError(gen('late'), /^error: backend late \(plugin exploding-backend\) failed to start: driver too old$/, { allowNotes: true });
      const registry = await createRegistry([join(project, 'exploding.js')]);
      await expectRejects(startBackend(registry, 'exploding'), /^backend exploding \(plugin exploding-backend\) failed to start: no device here$/);
      await expectRejects(createPipeline({ model, backend: 'late', plugins: [join(project, 'exploding.js')] }),
        /^backend late \(plugin exploding-backend\) failed to start: driver too old$/);
    });
  });

  describe('example: profiling-backend', function () {
    it('wraps reference by default, changes no result, and reports time and shapes per op', async function () {
      const profiled = await createPipeline({ model, backend: 'profiling', plugins: [PROFILING] });
      const plain = await createPipeline({ model, attention: 'plain' });
      let printed = '';
      (profiled.backend as unknown as { print: (t: string) => void }).print = (t) => { printed += t; };
      try {
        const a = await profiled.generate(image, 'caption en', { maxNewTokens: 4 });
        const b = await plain.generate(image, 'caption en', { maxNewTokens: 4 });
        expect(a.tokens).to.deep.equal(b.tokens);
        expect(a.backend).to.match(/^profiling\(reference/);
        const rows = (profiled.backend as unknown as { report(): ProfileRow[] }).report();
        const ops = rows.map((r) => r.op);
        expect(ops).to.include.members(['matmul', 'rmsNorm', 'rope', 'softmax', 'gelu', 'patchEmbed', 'read', 'writeRows']);
        const matmul = rows.find((r) => r.op === 'matmul')!;
        expect(matmul.count).to.be.above(10);
        expect(matmul.meanUs).to.be.closeTo((matmul.totalMs / matmul.count) * 1000, 1e-9);
        expect(matmul.shapes.reduce((s, x) => s + x.count, 0)).to.equal(matmul.count);
        expect(matmul.shapes.some((s) => /^\[\d+,\d+\] \[\d+,\d+\]ᵀ$/.test(s.shapes))).to.equal(true);
        expect(rows.find((r) => r.op === 'read')!.count).to.equal(4);             // one logits read per token
      } finally {
        await profiled.close();
        await plain.close();
      }
      expect(printed).to.match(/^── profiling\(reference.*\): [\d.]+ ms in \d+ calls ──$/m);
      expect(printed).to.match(/^op\s+count\s+total ms\s+mean µs\s+%\s+shapes/m);
      expect(printed).to.match(/^matmul\s+\d+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+\[/m);
    });

    it('through the command: the table goes to stderr at close, the JSON to stdout', function () {
      const r = cli(['generate', '--model', model, '--image', imagePath, '--prompt', 'caption en', '--max-new-tokens', '3',
        '--backend', 'profiling', '--plugin', PROFILING, '--json']);
      expect(r.code, r.stderr).to.equal(0);
      expect(JSON.parse(r.stdout).backend).to.match(/^profiling\(reference/);
      expect(r.stderr).to.match(/^op\s+count\s+total ms\s+mean µs/m);
      expect(r.stderr).to.match(/^rmsNorm\s+\d+/m);
    });

    it('passes conformance itself: the wrapper changes nothing', function () {
      if (cli(['conformance', '--help']).code !== 0) this.skip();
      const r = cli(['conformance', '--backend', 'profiling', '--plugin', PROFILING, '--json']);
      expect(r.code, r.stderr).to.equal(0);
      const report = JSON.parse(r.stdout) as { ok: boolean; counts: { pass: number; fail: number } };
      expect(report.ok).to.equal(true);
      expect(report.counts.fail).to.equal(0);
      expect(report.counts.pass).to.be.above(50);
      expect(r.stderr).to.match(/^op\s+count\s+total ms/m);                     // the table, printed at close
    });

    it('names an unknown inner backend in one line', async function () {
      expectUserError(cli(['generate', '--model', model, '--image', imagePath, '--prompt', 'x', '--backend', 'profiling', '--plugin', PROFILING],
        { env: { PALIGEMMA_PROFILE_INNER: 'nope' } }),
      /^error: backend profiling: unknown inner backend 'nope' \(available: .*reference.*\); set options\.inner or PALIGEMMA_PROFILE_INNER$/, { allowNotes: true });
      await expectRejects(createPipeline({ model, backend: 'profiling', backendOptions: { inner: 'nope' }, plugins: [PROFILING] }),
        /unknown inner backend 'nope'/);
    });
  });

  describe('example: min-p-sampler', function () {
    let m: MinPModule;
    before(async function () { m = await importExample(MIN_P); });

    const logitsOf = (probs: number[]) => Float32Array.from(probs, (p) => Math.log(p));

    it('keeps exactly the tokens with p ≥ minP · p_max', function () {
      const l = logitsOf([0.5, 0.25, 0.15, 0.1]);
      expect(m.minPIds(l, 0)).to.deep.equal([0, 1, 2, 3]);
      expect(m.minPIds(l, 0.1)).to.deep.equal([0, 1, 2, 3]);                     // cut 0.05
      expect(m.minPIds(l, 0.25)).to.deep.equal([0, 1, 2]);                       // cut 0.125
      expect(m.minPIds(l, 0.4)).to.deep.equal([0, 1]);                           // cut 0.2
      expect(m.minPIds(l, 0.9)).to.deep.equal([0]);                              // cut 0.45
      expect(m.minPIds(l, 1)).to.deep.equal([0]);
      expect(m.minPIds(Float32Array.of(3, 1, 3, -Infinity, NaN), 1)).to.deep.equal([0, 2]);   // ties stay together
      expect(m.minPIds(Float32Array.of(-Infinity, 2, NaN, -Infinity), 0)).to.deep.equal([1]);
      expect(m.minPIds(Float32Array.of(-Infinity, -Infinity), 0.5)).to.deep.equal([]);
    });

    it('matches the definition on random logits, and cuts after temperature', function () {
      const rng = seededRng(11);
      for (let trial = 0; trial < 50; trial++) {
        const l = Float32Array.from({ length: 257 }, () => (rng.next() - 0.5) * 12);
        const p = 0.02 + rng.next() * 0.5;
        const max = Math.max(...l);
        const z = l.reduce((s, x) => s + Math.exp(x - max), 0);
        const probs = Array.from(l, (x) => Math.exp(x - max) / z);
        const cut = p * Math.max(...probs);
        const expected = probs.flatMap((q, i) => (q >= cut ? [i] : []));
        const nearCut = probs.some((q) => Math.abs(q - cut) < 1e-9 * cut);
        if (!nearCut) expect(m.minPIds(l, p), `trial ${trial}`).to.deep.equal(expected);
      }
      // Temperature 2 takes square roots of the ratios: 0.707, 0.548, 0.447 ≥ 0.5 keeps three.
      const l = logitsOf([0.5, 0.25, 0.15, 0.1]);
      expect(keptSet(l, [temperature(2), m.minP(0.5)])).to.deep.equal([0, 1, 2]);
      expect(keptSet(l, [m.minP(0.5)])).to.deep.equal([0]);
    });

    it('draws only kept tokens, in proportion to their probability', function () {
      const probs = [0.4, 0.3, 0.2, 0.06, 0.04];
      const sampler = m.minPSampler({ minP: 0.3 });                              // cut 0.12: keeps 0, 1, 2
      const rng = seededRng(5);
      const counts = new Array(probs.length).fill(0);
      const n = 20000;
      for (let i = 0; i < n; i++) counts[sampler.sample(logitsOf(probs), { rng })]++;
      expect(counts.slice(3)).to.deep.equal([0, 0]);
      [0.4, 0.3, 0.2].forEach((p, i) => expect(counts[i] / n).to.be.closeTo(p / 0.9, 0.015));
      expect(() => m.minPSampler({ minP: 1.5 })).to.throw(PaliGemmaError, /invalid minP 1\.5: expected a number in \[0, 1\]/);
    });

    it('in a pipeline: minP = 1 decodes greedily; a seed repeats its tokens', async function () {
      const greedyPipe = await createPipeline({ model });
      const strict = await createPipeline({ model, sampler: 'min-p', samplerOptions: { minP: 1, temperature: 1.5 }, plugins: [MIN_P] });
      const loose = await createPipeline({ model, sampler: 'min-p', samplerOptions: { minP: 0.01, temperature: 2 }, plugins: [MIN_P] });
      try {
        const g = await greedyPipe.generate(image, 'caption en', { maxNewTokens: 6 });
        expect((await strict.generate(image, 'caption en', { maxNewTokens: 6, seed: 3 })).tokens).to.deep.equal(g.tokens);
        const [x, y] = [await loose.generate(image, 'caption en', { maxNewTokens: 6, seed: 3 }), await loose.generate(image, 'caption en', { maxNewTokens: 6, seed: 3 })];
        expect(x.tokens).to.deep.equal(y.tokens);
        expect(loose.sampler.name).to.equal('min-p');
      } finally {
        await Promise.all([greedyPipe.close(), strict.close(), loose.close()]);
      }
    });

    it('through the command: --sampler min-p, PALIGEMMA_MIN_P, and a bad value as a one-line error', function () {
      const args = ['generate', '--model', model, '--image', imagePath, '--prompt', 'caption en', '--max-new-tokens', '4', '--json'];
      const greedyRun = cli(args);
      const strict = cli([...args, '--sampler', 'min-p', '--temperature', '0.8', '--seed', '9', '--plugin', MIN_P], { env: { PALIGEMMA_MIN_P: '1' } });
      expect(strict.code, strict.stderr).to.equal(0);
      expect(JSON.parse(strict.stdout).tokens).to.deep.equal(JSON.parse(greedyRun.stdout).tokens);
      const loose = cli([...args, '--sampler', 'min-p', '--temperature', '1.5', '--seed', '9', '--plugin', MIN_P]);
      expect(loose.code, loose.stderr).to.equal(0);
      expectUserError(cli([...args, '--sampler', 'min-p', '--plugin', MIN_P], { env: { PALIGEMMA_MIN_P: '2' } }),
        /^error: invalid minP 2: expected a number in \[0, 1\]$/, { allowNotes: true });
    });
  });

  describe('example: int8-kv-cache', function () {
    let m: Int8Module;
    before(async function () { m = await importExample(INT8); });

    it('quantizes each row with its own scale: zero rows stay zero, the extreme hits ±127', function () {
      const dst = { q: new Int8Array(12), scale: new Float32Array(3) };
      m.quantizeRows(Float32Array.of(0, 0, 0, 0, 1, -2, 0.5, 0.25, 1000, 1, -1, 0), dst, 0, 4);
      expect(Array.from(dst.scale)).to.deep.equal([0, Math.fround(2 / 127), Math.fround(1000 / 127)]);
      expect(Array.from(dst.q)).to.deep.equal([0, 0, 0, 0, 64, -127, 32, 16, 127, 0, 0, 0]);
    });

    it('serves new rows exactly, then from int8 once they are read back, within half a step', async function () {
      const backend = new ReferenceBackend();
      const spec = { layers: 2, kvHeads: 2, headDim: 8, capacity: 10 };
      const cache = new m.Int8KvCache(backend, spec);
      const rng = seededRng(2);
      const rows = (t: number) => Float32Array.from({ length: t * 16 }, () => (rng.next() - 0.5) * 6);
      const k = rows(3), v = rows(3);
      for (const layer of [0, 1]) {
        cache.write(layer, backend.upload(k, [3, 2, 8]), backend.upload(v, [3, 2, 8]));
        expect(Array.from((await backend.read(cache.keys(layer))).subarray(0, 48))).to.deep.equal(Array.from(k));
      }
      cache.advance(3);
      await new Promise((r) => setImmediate(r));                                 // the read-back lands
      expect(cache.pending.every((p) => p.length === 0)).to.equal(true);
      expect(Array.from(cache.quantizedLength)).to.deep.equal([3, 3]);
      const back = await backend.read(cache.values(1));                         // [10, 2, 8]
      for (let r = 0; r < 6; r++) {
        const row = v.subarray(r * 8, r * 8 + 8);
        const step = Math.max(...Array.from(row, Math.abs)) / 127;
        for (let x = 0; x < 8; x++) expect(Math.abs(back[r * 8 + x] - row[x])).to.be.at.most(step / 2 + 1e-6);
      }
      expect(Array.from(back.subarray(48)).every((x) => x === 0)).to.equal(true);
      expect(cache.bytes).to.equal(2 * 2 * 10 * 2 * (8 + 4));                    // vs 2·2·10·2·8·4 in float32
      cache.reset();
      expect(cache.length).to.equal(0);
      cache.dispose();
    });

    it('accuracy on the tiny checkpoints: prefill exact, decode within 0.1 of the contiguous cache, same greedy tokens', async function () {
      const specs: [string, TinySpec][] = [['mqa', mqaSpec()], ['mha', mhaSpec()], ['gqa', gqaSpec()]];
      const summary: string[] = [];
      for (const [name, spec] of specs) {
        const folder = join(dir, `int8-${name}`);
        await mkdir(folder, { recursive: true });
        await buildTinyCheckpoint(folder, { ...spec, includeLmHead: true });
        for (const attention of ['reference', 'plain']) {
          const contiguous = await createPipeline({ model: folder, attention });
          const int8 = await createPipeline({ model: folder, attention, kvCache: 'int8', plugins: [INT8] });
          try {
            const r = await compareLogits(contiguous, int8, image, 24);
            summary.push(`${name}/${attention}: ${r.steps} steps, prefill diff ${r.prefillDiff}, decode max |Δlogit| ${r.decodeDiff.toExponential(2)} `
              + `(max |logit| ${r.maxLogit.toFixed(1)}), greedy agreement ${(100 * r.agreement).toFixed(0)}%, free run ${r.sameFreeRun ? 'identical' : 'differs'}`);
            expect(r.prefillDiff, name).to.equal(0);
            expect(r.decodeDiff, name).to.be.above(0).and.below(0.1);             // int8 is used, and costs little
            expect(r.agreement, name).to.equal(1);
            expect(r.sameFreeRun, name).to.equal(true);
          } finally {
            await contiguous.close();
            await int8.close();
          }
        }
      }
      console.log(`      int8 KV cache vs contiguous:\n${summary.map((s) => `        ${s}`).join('\n')}`);
    });
  });

  describe('tutorial: docs/writing-a-backend.md', function () {
    it('every command in it runs, in order, with the output it shows', async function () {
      const help = cli(['conformance', '--help']);
      if (help.code !== 0) this.skip();                                          // the command is not there yet
      const markdown = await readFile(join(ROOT, 'docs', 'writing-a-backend.md'), 'utf8');
      const blocks = [...markdown.matchAll(/(?:<!--\s*exit (\d+)\s*-->\s*\n)?```(\w+)\n([\s\S]*?)```/g)]
        .map((x) => ({ exit: Number(x[1] ?? 0), lang: x[2], body: x[3] }));
      expect(blocks.filter((b) => b.lang === 'sh').length).to.be.at.least(5);

      let cwd = await makeTempDir('pg-tutorial-');
      const files = new Map<string, string>();
      let last: ReturnType<typeof runShell> | undefined;
      for (const block of blocks) {
        if (block.lang === 'js') {
          const file = /^\/\/ ([\w.-]+\.m?js)\n/.exec(block.body)?.[1];
          expect(file, `a js block must open with its file name:\n${block.body.slice(0, 80)}`).to.be.a('string');
          files.set(file!, (files.get(file!) ?? '') + block.body);
          await writeFile(join(cwd, file!), files.get(file!)!);
        } else if (block.lang === 'sh') {
          last = runShell(block.body, cwd);
          expect(last.code, `${last.command}\n${last.out}`).to.equal(block.exit);
          cwd = last.cwd;
        } else if (block.lang === 'text') {
          expect(last, 'an output block follows a command').to.not.equal(undefined);
          for (const line of block.body.split('\n').map((l) => l.trim()).filter((l) => l !== '' && l !== '…')) {
            const pattern = new RegExp(`^\\s*${line.split('…').map((part) => part.trim().split(/\s+/).map(escapeRegExp).join('\\s+')).join('.*')}\\s*$`, 'm');
            expect(last!.out, `output of: ${last!.command}\nshould have a line like: ${line}`).to.match(pattern);
          }
        }
      }
      expect([...files.keys()]).to.deep.equal(['mine.js', 'broken.js', 'run.js']);
    });
  });
});

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Runs one shell block from the tutorial in `cwd` and returns where it left off. `npm install
 * paligemma-sdk` is the one line not run verbatim: it becomes a link to this checkout (tests reach
 * no registry), made the way npm lays out an install.
 */
function runShell(body: string, cwd: string): { code: number; out: string; command: string; cwd: string } {
  const script = body.split('\n').map((line) => (line.trim() === 'npm install paligemma-sdk'
    ? `mkdir -p node_modules/.bin && ln -s ${JSON.stringify(ROOT)} node_modules/paligemma-sdk`
      + ' && ln -s ../paligemma-sdk/bin/paligemma.js node_modules/.bin/paligemma'
    : line)).join('\n');
  const r = spawnSync('bash', ['-e', '-c', `${script}\npwd > "$PG_TUTORIAL_PWD"`], {
    cwd,
    encoding: 'utf8',
    timeout: 240_000,
    env: {
      ...process.env,
      PG_TUTORIAL_PWD: join(cwd, '.pwd'),
      // An installed package has no src/, so its command runs the build; so does this one.
      PALIGEMMA_USE_DIST: '1',
      npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false',
    },
  });
  const pwdFile = join(cwd, '.pwd');
  const next = r.status === 0 && existsSync(pwdFile) ? readFileSync(pwdFile, 'utf8').trim() : cwd;
  if (existsSync(pwdFile)) rmSync(pwdFile);
  return { code: r.status ?? -1, out: `${r.stdout}\n${r.stderr}`, command: body.trim(), cwd: next };
}
