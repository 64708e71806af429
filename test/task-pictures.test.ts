/**
 * The README's detection and segmentation pictures are what examples/task-pictures.ts draws from
 * the tiny checkpoint with forced answers: made again here and compared pixel by pixel with the
 * committed docs/images/*.png, which must also differ from the bare input where boxes are drawn.
 */
import { expect } from 'chai';
import { join } from 'node:path';
import sharp from 'sharp';
import { makeTaskPictures } from '../examples/task-pictures.js';
import { makeTempDir } from './support/tiny-checkpoint.js';

const docs = new URL('../docs/images/', import.meta.url).pathname;
const raw = async (path: string) => sharp(path).removeAlpha().raw().toBuffer({ resolveWithObject: true });

describe('README task pictures', function () {
  this.timeout(120_000);

  it('docs/images/detect.png and segment.png are what the example draws now', async function () {
    const out = await makeTempDir('pg-pictures-test-');
    const logged: string[] = [];
    await makeTaskPictures(out, (l) => logged.push(l));
    const detect = JSON.parse(logged[0]) as { objects: Array<{ label: string }> };
    expect(detect.objects.map((o) => o.label)).to.deep.equal(['sun', 'grass']);
    for (const name of ['detect.png', 'segment.png']) {
      const made = await raw(join(out, name));
      const committed = await raw(join(docs, name));
      expect(made.info.width, name).to.equal(committed.info.width);
      expect(made.info.height, name).to.equal(committed.info.height);
      let differing = 0;
      for (let i = 0; i < made.data.length; i++) if (made.data[i] !== committed.data[i]) differing++;
      expect(differing, `${name}: bytes that differ from the committed picture`).to.equal(0);
    }
    const input = await sharp(new URL('../examples/demo.png', import.meta.url).pathname).resize(336, 224, { fit: 'fill' }).removeAlpha().raw().toBuffer();
    const det = await raw(join(docs, 'detect.png'));
    let drawn = 0;
    for (let i = 0; i < input.length; i++) if (input[i] !== det.data[i]) drawn++;
    expect(drawn, 'pixels the boxes change').to.be.above(1000);
  });
});
