/**
 * Test plugin: image processor `slow-siglip`, the SigLIP processor after an async pause, so a
 * worker is surely in the middle of a job when a test kills it. The pixels are SigLIP's own, so
 * results still equal a direct generate.
 */
import { ImageProcessorContribution } from '../../src/interfaces/contributions.js';
import { definePlugin } from '../../src/plugin/define-plugin.js';
import { SiglipImageProcessor } from '../../src/image/siglip-image-processor.js';

export const SLOW_IMAGE_MS = 250;

export default definePlugin('slow-image-test', ({ bind }) => {
  bind(ImageProcessorContribution).toConstantValue({
    name: 'slow-siglip',
    description: `SigLIP after a ${SLOW_IMAGE_MS} ms pause (tests)`,
    async load(dir, imageSize) {
      const inner = await SiglipImageProcessor.fromDir(dir, imageSize);
      return {
        async process(image) {
          await new Promise((r) => setTimeout(r, SLOW_IMAGE_MS));
          return inner.process(image);
        },
      };
    },
  });
});
