/**
 * The Sequence API and the batched decode step: several sequences stepped together give each
 * one the tokens (and logits) it gets alone, on the reference and onnx backends, with sequences
 * joining and leaving mid-way; fork continues from the same KV state. The alone path is the
 * ModelSession one that test/pipeline.test.ts pins against the float64 oracle; on reference the
 * batched logits are also checked against that oracle directly.
 */
import { expect } from 'chai';
import { createPipeline } from '../src/create-pipeline.js';
import type { PixelValues } from '../src/interfaces/image-processor.js';
import type { PaliGemmaPipeline } from '../src/paligemma-pipeline.js';
import type { Sequence } from '../src/model/model-sequence.js';
import { promptIds } from '../src/generation/prompt-format.js';
import { argmax, greedyRun, relMaxDiff } from './support/model-compare.js';
import { referenceForward } from './support/reference-forward.js';
import { referenceGemma2Forward } from './support/reference-gemma2.js';
import { buildTinyCheckpoint, gemma2Spec, gqaSpec, makeTempDir, makeTestImage, mqaSpec, type TinyCheckpoint } from './support/tiny-checkpoint.js';

const PROMPTS = ['caption en', 'describe the picture in detail', 'a', 'what is in the image?'];
const STEPS = [9, 5, 7, 6];          // each sequence's own length: they leave at different steps
const JOIN = [0, 0, 2, 3];           // the step at which each one joins the running batch

// PaliGemma 2 (window 5, shorter than the prompts) runs with the final logit soft-cap on, so the
// batched path must apply the window, the attention soft-cap, the four norms and the final cap.
const MODELS = [['MQA', mqaSpec(), undefined], ['GQA', gqaSpec(), undefined], ['Gemma 2', gemma2Spec(), 3.5]] as const;

for (const backend of ['reference', 'onnx'] as const) {
  for (const [label, spec, finalCap] of MODELS) {
    describe(`Sequence API, batched decode (${backend}, ${label})`, function () {
      this.timeout(60_000);
      let pipe: PaliGemmaPipeline;
      let ckpt: TinyCheckpoint;
      let pixels: PixelValues[];

      before(async function () {
        const dir = await makeTempDir('pg-seq-');
        ckpt = await buildTinyCheckpoint(dir, spec);
        pipe = await createPipeline({ model: dir, backend, ...(finalCap ? { gemma2: { finalLogitSoftcap: finalCap } } : {}) });
        pixels = await Promise.all([1, 2].map((seed) => {
          const { data, width, height } = makeTestImage(32, 32, seed);
          return pipe.imageProcessor.process({ data, width, height, channels: 3 });
        }));
      });
      after(async () => pipe?.close());

      const idsOf = (p: string) => Int32Array.from(promptIds(pipe.tokenizer, p, pipe.model.config.numImageTokens));

      it('each sequence stepped in a batch (joining and leaving mid-way) gets its alone tokens and logits', async function () {
        const sm = pipe.model;
        const alone: Array<Awaited<ReturnType<typeof greedyRun>>> = [];
        for (let i = 0; i < PROMPTS.length; i++) alone.push(await greedyRun(pipe.model, pixels[i % 2], idsOf(PROMPTS[i]), STEPS[i]));

        const seqs: Array<Sequence | undefined> = [];
        const tokens: number[][] = PROMPTS.map(() => []);
        const logits: Float32Array[][] = PROMPTS.map(() => []);
        let batchSizes = 0;
        for (let step = 0; tokens.some((t, i) => t.length < STEPS[i]); step++) {
          for (let i = 0; i < PROMPTS.length; i++) {
            if (JOIN[i] !== step) continue;
            const ids = idsOf(PROMPTS[i]);
            const s = await sm.begin(pixels[i % 2], ids, { capacity: ids.length + STEPS[i] });
            seqs[i] = s;
            logits[i].push(s.logits);
            tokens[i].push(argmax(s.logits));
          }
          const live = [...seqs.keys()].filter((i) => seqs[i] && tokens[i].length < STEPS[i]);
          for (let i = 0; i < seqs.length; i++) if (seqs[i] && tokens[i].length >= STEPS[i]) { seqs[i]!.dispose(); seqs[i] = undefined; }
          if (live.length === 0) continue;
          batchSizes = Math.max(batchSizes, live.length);
          const out = await sm.stepBatch(live.map((i) => seqs[i]!), Int32Array.from(live, (i) => tokens[i].at(-1)!));
          live.forEach((i, j) => { logits[i].push(out[j]); tokens[i].push(argmax(out[j])); });
        }
        seqs.forEach((s) => s?.dispose());
        expect(batchSizes).to.equal(4);
        for (let i = 0; i < PROMPTS.length; i++) {
          expect(tokens[i], `sequence ${i}`).to.deep.equal(alone[i].tokens);
          logits[i].forEach((l, j) => expect(relMaxDiff(l, alone[i].logits[j]), `sequence ${i} step ${j}`).to.be.below(1e-5));
        }
        if (backend === 'reference') {
          // The last batched logits of sequence 0 against the float64 forward over prompt + tokens.
          const prompt = [...idsOf(PROMPTS[0])];
          const seq = [...prompt, ...tokens[0].slice(0, -1)];
          const ref = spec.gemma2
            ? referenceGemma2Forward(ckpt.weights, ckpt.configJson, pixels[0].data, seq, prompt.length, { finalSoftcap: finalCap })
            : referenceForward(ckpt.weights, ckpt.configJson, pixels[0].data, seq, prompt.length).logits;
          const v = ref.length / seq.length;
          expect(relMaxDiff(logits[0].at(-1)!, ref.subarray((seq.length - 1) * v))).to.be.below(1e-4);
        }
      });

      it('image rows passed again skip the vision tower and give the same logits', async function () {
        const sm = pipe.model;
        const ids = idsOf(PROMPTS[1]);
        const rows = pipe.model.imageRows(pixels[0]);
        const a = await sm.begin(pixels[0], ids, { capacity: ids.length + 1 });
        const b = await sm.begin(rows, ids, { capacity: ids.length + 1 });
        const c = await sm.begin(rows, ids, { capacity: ids.length + 1 });
        expect(relMaxDiff(b.logits, a.logits)).to.be.below(1e-6);
        expect(relMaxDiff(c.logits, a.logits)).to.be.below(1e-6);
        pipe.backend.dispose(rows);
        [a, b, c].forEach((s) => s.dispose());
      });

      it('fork continues from the same KV state, independently of its parent', async function () {
        const sm = pipe.model;
        const ids = idsOf(PROMPTS[0]);
        const alone = await greedyRun(pipe.model, pixels[1], ids, 6);
        const parent = await sm.begin(pixels[1], ids, { capacity: ids.length + 6 });
        await parent.step(alone.tokens[0]);
        const child = parent.fork();
        expect(child.length).to.equal(parent.length);
        // The parent goes elsewhere; the child must not see it.
        await parent.step(3);
        const [l] = await sm.stepBatch([child], Int32Array.of(alone.tokens[1]));
        expect(argmax(l)).to.equal(alone.tokens[2]);
        let t = alone.tokens[2];
        for (let i = 3; i < 6; i++) {
          const [lc, lp] = await sm.stepBatch([child, parent], Int32Array.of(t, 4));
          expect(lp.length).to.equal(lc.length);
          expect(relMaxDiff(lc, alone.logits[i])).to.be.below(1e-5);
          t = argmax(lc);
          expect(t).to.equal(alone.tokens[i]);
        }
        await child.step(t);
        expect(child.length).to.equal(child.capacity);
        expect(() => child.checkStep()).to.throw(/full/);
        parent.dispose(); child.dispose(); child.dispose();
        expect(() => child.fork()).to.throw(/disposed/);
      });
    });
  }
}
