/**
 * Makes the README's detection and segmentation pictures (docs/images/detect.png and
 * segment.png): the built-in tiny checkpoint (random weights) runs the whole pipeline with a
 * forced answer, and the hand-set smooth VQ-VAE of src/testing/tiny-vae.ts decodes the masks.
 * The input is examples/demo.png stretched to 336×224, so the boxes show the non-square mapping.
 *
 *   npx tsx examples/task-pictures.ts
 *
 * test/task-pictures.test.ts makes them again into a temporary folder and checks that the
 * committed pictures are what this script draws.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import sharp from 'sharp';
import { createPipeline, drawObjects, encodeTaskText, forcedSequence } from '../src/index.js';
import { encodeNpz } from '../src/testing/npz-writer.js';
import { smoothVaeTensors } from '../src/testing/tiny-vae.js';

const W = 336, H = 224;
const root = new URL('..', import.meta.url).pathname;
const loc = (...v: number[]) => v.map((n) => `<loc${String(n).padStart(4, '0')}>`).join('');
const seg = (...v: number[]) => v.map((n) => `<seg${String(n).padStart(3, '0')}>`).join('');
/** Bins of a pixel box, as the model writes them: round(c · 1023) of (y0, x0, y1, x1). */
const bins = (x0: number, y0: number, x1: number, y1: number) => loc(...[y0 / H, x0 / W, y1 / H, x1 / W].map((c) => Math.round(c * 1023)));

/** Draws detect.png and segment.png into outDir; `log` receives each task's result as JSON. */
export async function makeTaskPictures(outDir: string, log: (line: string) => void = () => {}): Promise<void> {
  const png = await sharp(join(root, 'examples/demo.png')).resize(W, H, { fit: 'fill' }).png().toBuffer();
  const tmp = await mkdtemp(join(tmpdir(), 'pg-pictures-'));
  const pipe = await createPipeline();
  try {
    const force = (text: string) => forcedSequence([...encodeTaskText(pipe.tokenizer, text), pipe.tokenizer.special.eos]);
    const rgb = { data: new Uint8Array(await sharp(png).raw().toBuffer()), width: W, height: H };

    const detectAnswer = `${bins(195, 30, 285, 90)} sun ; ${bins(0, 150, 336, 224)} grass`;
    const det = await pipe.detect(png, ['sun', 'grass'], { sampler: force(detectAnswer) });
    await writeFile(join(outDir, 'detect.png'), await drawObjects(rgb, det.objects));
    log(JSON.stringify({ text: det.text, objects: det.objects, skipped: det.skipped }));

    const vae = join(tmp, 'vae.npz');
    await writeFile(vae, encodeNpz(smoothVaeTensors({ dim: 4, channels: 16 })));
    const disc = [30, 110, 110, 30, 110, 127, 127, 110, 110, 127, 127, 110, 30, 110, 110, 30];
    const segmentAnswer = `${bins(189, 24, 291, 96)}${seg(...disc)} sun`;
    const sg = await pipe.segment(png, 'sun', { sampler: force(segmentAnswer), vae });
    await writeFile(join(outDir, 'segment.png'), await drawObjects(rgb, sg.objects));
    log(JSON.stringify({ text: sg.text, objects: sg.objects.map((o) => ({ label: o.label, box: o.box, area: o.mask.binary.reduce((a, b) => a + b, 0) })) }));
  } finally {
    await pipe.close();
    await rm(tmp, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await makeTaskPictures(join(root, 'docs/images'), console.log);
}
