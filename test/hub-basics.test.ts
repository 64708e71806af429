import { expect } from 'chai';
import { mkdtemp, readlink, rm, writeFile, mkdir, readFile } from 'node:fs/promises';
import { tmpdir, homedir } from 'node:os';
import { join } from 'node:path';
import { blobPath, cachedCommit, linkSnapshotFile, snapshotFolder, writeRef } from '../src/hub/cache-layout.js';
import { hubSettings } from '../src/hub/hub-settings.js';
import { isNeededFile } from '../src/hub/model-files.js';
import { parseModelReference, revisionOf } from '../src/hub/model-reference.js';

describe('hub ids, settings and cache layout', () => {
  it('parses ORG/NAME[@REV] and leaves paths alone', () => {
    expect(parseModelReference('google/paligemma2-3b-mix-224')).to.deep.equal({ repo: 'google/paligemma2-3b-mix-224', revision: undefined });
    expect(parseModelReference('google/paligemma-3b-pt-224@v1.0')).to.deep.equal({ repo: 'google/paligemma-3b-pt-224', revision: 'v1.0' });
    for (const path of ['/abs/folder', './org/name', 'a/b/c', 'single', '../x/y', 'org/-bad']) {
      expect(parseModelReference(path), path).to.equal(undefined);
    }
    expect(() => parseModelReference('org/name@')).to.throw(/non-empty revision/);
    expect(revisionOf({ repo: 'a/b' }, undefined)).to.equal('main');
    expect(revisionOf({ repo: 'a/b', revision: 'dev' }, 'dev')).to.equal('dev');
    expect(() => revisionOf({ repo: 'a/b', revision: 'dev' }, 'main')).to.throw(/disagree/);
  });

  it('reads the environment variables Python reads, with its defaults', async () => {
    const home = await mkdtemp(join(tmpdir(), 'hf-home-'));
    try {
      expect(hubSettings({}).cacheDir).to.equal(join(homedir(), '.cache', 'huggingface', 'hub'));
      expect(hubSettings({ HF_HOME: home }).cacheDir).to.equal(join(home, 'hub'));
      expect(hubSettings({ HF_HOME: home, HF_HUB_CACHE: '/x/cache' }).cacheDir).to.equal('/x/cache');
      expect(hubSettings({ HF_HOME: home }).token).to.equal(undefined);
      await writeFile(join(home, 'token'), 'hf_fromfile\n');
      expect(hubSettings({ HF_HOME: home }).token).to.equal('hf_fromfile');
      expect(hubSettings({ HF_HOME: home, HF_TOKEN: 'hf_fromenv' }).token).to.equal('hf_fromenv');
      expect(hubSettings({ HF_ENDPOINT: 'http://127.0.0.1:9/' }).endpoint).to.equal('http://127.0.0.1:9');
      expect(hubSettings({ HF_HUB_OFFLINE: '1' }).offline).to.equal(true);
      expect(hubSettings({ HF_HUB_OFFLINE: '0' }).offline).to.equal(false);
      expect(hubSettings({ HF_HUB_OFFLINE: 'yes' }).offline).to.equal(true);
      expect(hubSettings({ TRANSFORMERS_OFFLINE: '1' }).offline).to.equal(true);
      expect(hubSettings({ HF_HOME: home, HUGGING_FACE_HUB_TOKEN: 'hf_oldname' }).token).to.equal('hf_oldname');
      expect(hubSettings({ HF_HOME: home, HF_TOKEN: 'hf_new', HUGGING_FACE_HUB_TOKEN: 'hf_oldname' }).token).to.equal('hf_new');
      expect(hubSettings({ HF_HOME: home, HF_TOKEN_PATH: join(home, 'missing') }).token).to.equal(undefined);
      expect(hubSettings({ XDG_CACHE_HOME: '/x/xdg' }).cacheDir).to.equal('/x/xdg/huggingface/hub');
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });

  it('picks the files a pipeline needs', () => {
    for (const f of ['config.json', 'model-00001-of-00002.safetensors', 'model.safetensors.index.json', 'tokenizer.json', 'preprocessor_config.json']) {
      expect(isNeededFile(f), f).to.equal(true);
    }
    for (const f of ['README.md', 'pytorch_model.bin', 'sub/model.safetensors', '.gitattributes', 'model.gguf']) {
      expect(isNeededFile(f), f).to.equal(false);
    }
  });

  it('writes refs and relative snapshot links as Python does', async () => {
    const cache = await mkdtemp(join(tmpdir(), 'hf-cache-'));
    try {
      const commit = 'a'.repeat(40);
      await writeRef(cache, 'org/name', 'main', commit);
      expect(await readFile(join(cache, 'models--org--name', 'refs', 'main'), 'utf8')).to.equal(commit);
      expect(await cachedCommit(cache, 'org/name', 'main')).to.equal(commit);
      expect(await cachedCommit(cache, 'org/name', 'dev')).to.equal(undefined);
      await mkdir(join(cache, 'models--org--name', 'blobs'), { recursive: true });
      await writeFile(blobPath(cache, 'org/name', 'e1'), '{}');
      const link = await linkSnapshotFile(cache, 'org/name', commit, 'config.json', 'e1');
      expect(link).to.equal(join(snapshotFolder(cache, 'org/name', commit), 'config.json'));
      expect(await readlink(link)).to.equal('../../blobs/e1');
      expect(await readFile(link, 'utf8')).to.equal('{}');
    } finally {
      await rm(cache, { recursive: true, force: true });
    }
  });
});
