/**
 * Folders as Hugging Face writes them load unchanged, and give what transformers computes:
 * test/fixtures/hf-saved-5 is a tiny random PaliGemma saved by transformers 5's save_pretrained
 * (see make-hf-saved.py). The other key-name schemes and file layouts (transformers 4.x: classic
 * names before 4.52, `model.*` names from 4.52, preprocessor_config.json, `torch_dtype`) are made
 * from it here by renaming, and must give the same logits. Tokenizers with part of the
 * <locNNNN>/<segNNN> families (or none) load; the tasks that need them say what is missing.
 */
import { expect } from 'chai';
import { cp, readFile, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { createPipeline } from '../src/create-pipeline.js';
import { PaliGemmaError } from '../src/interfaces/errors.js';
import { SafetensorsFile } from '../src/checkpoint/safetensors.js';
import { HfTokenizer } from '../src/tokenizer/hf-tokenizer.js';
import type { PaliGemmaPipeline } from '../src/paligemma-pipeline.js';
import { promptIds } from '../src/generation/prompt-format.js';
import { requireFamily } from '../src/tokenizer/token-families.js';
import { rawSafetensors } from './support/safetensors-writer.js';
import { makeTempDir } from './support/tiny-checkpoint.js';

const FIXTURE = resolve(import.meta.dirname, 'fixtures/hf-saved-5');

interface Expected {
  transformers: string;
  prompt: string;
  input_ids: number[];
  last_logits: number[];
  greedy_tokens: number[];
  files: string[];
}

async function expected(): Promise<Expected> {
  return JSON.parse(await readFile(join(FIXTURE, 'expected.json'), 'utf8'));
}

/** Last-position logits of the prompt, through the pipeline's own parts. */
async function lastLogits(pipe: PaliGemmaPipeline, dir: string, prompt: string): Promise<{ ids: number[]; logits: Float32Array }> {
  const m = pipe.model;
  const pixels = await pipe.imageProcessor.process(join(dir, 'image.png'));
  const ids = Int32Array.from(promptIds(pipe.tokenizer, prompt, m.config.numImageTokens));
  const rows = m.imageRows(pixels);
  const embeds = m.embedPrompt(ids, rows);
  pipe.backend.dispose(rows);
  const s = m.session(ids.length);
  try {
    return { ids: [...ids], logits: await s.prefill(embeds, ids.length) };
  } finally {
    pipe.backend.dispose(embeds);
    s.dispose();
  }
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).to.equal(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Rewrites a folder's model.safetensors with every tensor renamed by `rename`, bytes unchanged. */
async function renameTensors(dir: string, rename: (name: string) => string): Promise<void> {
  const path = join(dir, 'model.safetensors');
  const f = await SafetensorsFile.open(path);
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  const parts: Uint8Array[] = [];
  let at = 0;
  try {
    for (const e of [...f.entries.values()].sort((a, b) => a.begin - b.begin)) {
      const data = await f.readStored(e.name);
      const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      header[rename(e.name)] = { dtype: e.dtype, shape: e.shape, data_offsets: [at, at + bytes.length] };
      parts.push(bytes.slice());
      at += bytes.length;
    }
  } finally {
    await f.close();
  }
  const data = new Uint8Array(at);
  let o = 0;
  for (const p of parts) { data.set(p, o); o += p.length; }
  await writeFile(path, rawSafetensors(header, data));
}

async function editJson(path: string, edit: (j: Record<string, any>) => void): Promise<void> {
  const j = JSON.parse(await readFile(path, 'utf8'));
  edit(j);
  await writeFile(path, JSON.stringify(j, null, 2));
}

describe('folders written by Hugging Face save_pretrained', function () {
  this.timeout(60000);

  it('the transformers 5 folder is as transformers writes it (dtype, processor_config.json, chat template, vision_tower.* names)', async () => {
    const e = await expected();
    expect(e.transformers).to.match(/^5\./);
    expect(e.files).to.include.members(['config.json', 'processor_config.json', 'chat_template.jinja', 'model.safetensors', 'tokenizer.json']);
    expect(e.files).not.to.include('preprocessor_config.json');
    const config = JSON.parse(await readFile(join(FIXTURE, 'config.json'), 'utf8'));
    expect(config).to.have.property('dtype');
    expect(config).not.to.have.property('torch_dtype');
    expect(config.text_config).to.have.property('rope_parameters');
    const f = await SafetensorsFile.open(join(FIXTURE, 'model.safetensors'));
    try {
      expect(f.entries.has('vision_tower.embeddings.patch_embedding.weight')).to.equal(true);
      expect(f.entries.has('vision_tower.head.probe')).to.equal(true);
    } finally {
      await f.close();
    }
  });

  it('loads unchanged and gives transformers\' prompt ids, last-position logits and greedy tokens', async () => {
    const e = await expected();
    const pipe = await createPipeline({ model: FIXTURE });
    try {
      const { ids, logits } = await lastLogits(pipe, FIXTURE, e.prompt);
      expect(ids).to.deep.equal(e.input_ids);
      const diff = maxAbsDiff(logits, e.last_logits);
      expect(diff, `max |Δlogit| ${diff}`).to.be.below(2e-4);
      const r = await pipe.generate(join(FIXTURE, 'image.png'), e.prompt, { maxNewTokens: e.greedy_tokens.length });
      expect(r.tokens).to.deep.equal(e.greedy_tokens);
    } finally {
      await pipe.close();
    }
  });

  const layouts: { label: string; rename: (n: string) => string; files: (dir: string) => Promise<void> }[] = [
    {
      label: 'transformers 4.x before 4.52 (vision_tower.vision_model.*, language_model.model.*, preprocessor_config.json, torch_dtype)',
      rename: (n) => n.replace(/^vision_tower\./, 'vision_tower.vision_model.'),
      files: async (dir) => {
        const proc = JSON.parse(await readFile(join(dir, 'processor_config.json'), 'utf8'));
        await writeFile(join(dir, 'preprocessor_config.json'), JSON.stringify({ ...proc.image_processor, processor_class: 'PaliGemmaProcessor' }));
        await writeFile(join(dir, 'processor_config.json'), JSON.stringify({ image_seq_length: 4, processor_class: 'PaliGemmaProcessor' }));
        await rm(join(dir, 'chat_template.jinja'));
        await writeFile(join(dir, 'chat_template.json'), JSON.stringify({ chat_template: '{{ messages }}' }));
        await editJson(join(dir, 'config.json'), (j) => {
          j.torch_dtype = j.dtype; delete j.dtype;
          j.text_config.rope_theta = j.text_config.rope_parameters.rope_theta; delete j.text_config.rope_parameters;
          j.transformers_version = '4.45.0';
        });
      },
    },
    {
      label: 'transformers 4.52–4.x (model.vision_tower.vision_model.*, model.language_model.*, model.multi_modal_projector.*)',
      rename: (n) => n
        .replace(/^vision_tower\./, 'model.vision_tower.vision_model.')
        .replace(/^language_model\.model\./, 'model.language_model.')
        .replace(/^multi_modal_projector\./, 'model.multi_modal_projector.'),
      files: async (dir) => {
        await editJson(join(dir, 'config.json'), (j) => { j.torch_dtype = j.dtype; j.transformers_version = '4.57.1'; });
      },
    },
  ];

  for (const layout of layouts) {
    it(`the same model in the layout of ${layout.label} gives the same logits`, async () => {
      const e = await expected();
      const dir = join(await makeTempDir('pg-hf4-'), 'm');
      await cp(FIXTURE, dir, { recursive: true });
      await renameTensors(dir, layout.rename);
      await layout.files(dir);
      const pipe = await createPipeline({ model: dir });
      try {
        const { logits } = await lastLogits(pipe, dir, e.prompt);
        expect(maxAbsDiff(logits, e.last_logits)).to.be.below(2e-4);
      } finally {
        await pipe.close();
      }
    });
  }

  it('a folder holding both the 5.x and the 4.x name of a tensor is refused as a duplicate', async () => {
    const dir = join(await makeTempDir('pg-hfdup-'), 'm');
    await cp(FIXTURE, dir, { recursive: true });
    const f = await SafetensorsFile.open(join(dir, 'model.safetensors'));
    const header: Record<string, unknown> = {};
    let data: Uint8Array;
    try {
      const e = f.entries.get('vision_tower.post_layernorm.bias')!;
      const bytes = new Uint8Array((await f.readStored(e.name)).buffer);
      header['vision_tower.post_layernorm.bias'] = { dtype: e.dtype, shape: e.shape, data_offsets: [0, bytes.length] };
      header['vision_tower.vision_model.post_layernorm.bias'] = { dtype: e.dtype, shape: e.shape, data_offsets: [bytes.length, 2 * bytes.length] };
      data = new Uint8Array(2 * bytes.length);
      data.set(bytes); data.set(bytes, bytes.length);
    } finally {
      await f.close();
    }
    await writeFile(join(dir, 'model.safetensors'), rawSafetensors(header, data));
    const err = await createPipeline({ model: dir }).then(() => undefined, (x: unknown) => x);
    expect(err).to.be.instanceOf(PaliGemmaError);
    expect((err as Error).message).to.contain('duplicate tensor vision_tower.vision_model.post_layernorm.bias');
  });

  it('refuses RoPE scaling, a non-tanh GELU and a foreign image processor by name', async () => {
    const cases: [string, (dir: string) => Promise<void>, string][] = [
      ['rope', (d) => editJson(join(d, 'config.json'), (j) => { j.text_config.rope_parameters = { rope_type: 'linear', factor: 2, rope_theta: 10000 }; }), '"linear"'],
      ['act', (d) => editJson(join(d, 'config.json'), (j) => { j.text_config.hidden_activation = 'gelu'; }), 'text_config.hidden_activation "gelu"'],
      ['vact', (d) => editJson(join(d, 'config.json'), (j) => { j.vision_config.hidden_act = 'quick_gelu'; }), 'vision_config.hidden_act "quick_gelu"'],
      ['proc', (d) => editJson(join(d, 'processor_config.json'), (j) => { j.image_processor.image_processor_type = 'CLIPImageProcessor'; }), 'CLIPImageProcessor'],
    ];
    for (const [label, edit, part] of cases) {
      const dir = join(await makeTempDir(`pg-hf-${label}-`), 'm');
      await cp(FIXTURE, dir, { recursive: true });
      await edit(dir);
      const err = await createPipeline({ model: dir }).then(() => undefined, (x: unknown) => x);
      expect(err, label).to.be.instanceOf(PaliGemmaError);
      expect((err as PaliGemmaError).code, label).to.equal('unsupported_model');
      expect((err as Error).message, label).to.contain(part);
    }
  });
});

describe('tokenizers with part of the <locNNNN>/<segNNN> families, or none', function () {
  this.timeout(60000);

  /** The fixture's tokenizer.json keeping only the loc/seg tokens `keep` accepts (vocab and added_tokens). */
  async function partialTokenizer(dir: string, keep: (token: string) => boolean): Promise<void> {
    await editJson(join(dir, 'tokenizer.json'), (j) => {
      const special = (t: string) => /^<(loc\d{4}|seg\d{3})>$/.test(t);
      j.added_tokens = j.added_tokens.filter((a: { content: string }) => !special(a.content) || keep(a.content));
      // Ids stay where they are: a tokenizer missing some tokens still numbers the rest as before.
      j.model.vocab = Object.fromEntries(Object.entries(j.model.vocab as Record<string, number>).filter(([t]) => !special(t) || keep(t)));
    });
  }

  it('loads with only 4 <locNNNN> tokens and 5 <segNNN>: the ids that exist, and a task that needs all says what is missing', async () => {
    const dir = join(await makeTempDir('pg-partial-'), 'm');
    await cp(FIXTURE, dir, { recursive: true });
    const full = await HfTokenizer.fromDir(FIXTURE);
    await partialTokenizer(dir, (t) => ['<loc0000>', '<loc0001>', '<loc0512>', '<loc1023>', '<seg000>', '<seg001>', '<seg002>', '<seg003>', '<seg127>'].includes(t));
    const tok = await HfTokenizer.fromDir(dir);
    expect(tok.specialFamilies.loc.present).to.equal(4);
    expect(tok.specialFamilies.seg.present).to.equal(5);
    expect(tok.locTokenId(512)).to.equal(full.locTokenId(512));
    expect(tok.locTokenId(2)).to.equal(undefined);
    expect(tok.locTokenId(1024)).to.equal(undefined);
    expect(tok.segTokenId(127)).to.equal(full.segTokenId(127));
    expect(tok.segTokenId(4)).to.equal(undefined);
    expect(tok.special.loc).to.deep.equal([]);                       // complete families only
    expect(full.special.loc).to.have.length(1024);
    expect(tok.specialFamilies.loc.missing().slice(0, 3)).to.deep.equal([2, 3, 4]);
    expect(() => requireFamily(tok.special.families?.loc, 'detection', 'tokenizer.json'))
      .to.throw(PaliGemmaError, /detection needs all 1024 <locNNNN> tokens, but tokenizer\.json has 4 \(missing <loc0002>, <loc0003>, <loc0004> and 1017 more\)/);
    expect(() => requireFamily(tok.special.families?.seg, 'segmentation')).to.throw(PaliGemmaError, /<seg004>, <seg005>, <seg006> and 120 more/);
    expect(() => requireFamily(full.special.families?.loc, 'detection')).not.to.throw();

    // And the model runs on it: captions need no loc tokens.
    const pipe = await createPipeline({ model: dir });
    try {
      const r = await pipe.generate(join(dir, 'image.png'), (await expected()).prompt, { maxNewTokens: 2 });
      expect(r.tokens).to.deep.equal((await expected()).greedy_tokens.slice(0, 2));
    } finally {
      await pipe.close();
    }
  });

  it('loads with no loc/seg tokens at all', async () => {
    const dir = join(await makeTempDir('pg-noloc-'), 'm');
    await cp(FIXTURE, dir, { recursive: true });
    await partialTokenizer(dir, () => false);
    const tok = await HfTokenizer.fromDir(dir);
    expect(tok.specialFamilies.loc.present).to.equal(0);
    expect(tok.specialFamilies.seg.present).to.equal(0);
    expect(tok.special.seg).to.deep.equal([]);
    expect(() => requireFamily(tok.special.families?.loc, 'detection')).to.throw(PaliGemmaError, /has 0 \(missing <loc0000>/);
  });
});
