/**
 * The pipeline createPipeline returns: generate / stream / score (GenerationPipeline, in
 * src/generation) plus PaliGemma's task shortcuts (detect, segment, caption, ocr, answer),
 * which delegate to src/tasks. They are attached here, above both, so that the generation
 * layer never imports the tasks that are built on it.
 */
import 'reflect-metadata';
import { injectable, injectFromBase } from 'inversify';
import type { GenerateOptions } from './generation/generation-types.js';
import { GenerationPipeline } from './generation/generation-pipeline.js';
import type { ImageInput } from './interfaces/image-processor.js';
import { PaliGemmaTasks, type SegmentOptions } from './tasks/paligemma-tasks.js';

export { ModelCheckpointToken, type LoadedModel } from './generation/generation-pipeline.js';

@injectable()
@injectFromBase()
export class PaliGemmaPipeline extends GenerationPipeline {
  private taskHelpers?: PaliGemmaTasks;
  /** The task helpers bound to this pipeline. */
  get tasks(): PaliGemmaTasks { return this.taskHelpers ??= new PaliGemmaTasks(this, { modelDir: this.modelDir }); }
  async detect(image: ImageInput, labels: string | readonly string[], opts?: GenerateOptions) { this.checkOpen('detect'); return this.tasks.detect(image, labels, opts); }
  async segment(image: ImageInput, label: string, opts?: SegmentOptions) { this.checkOpen('segment'); return this.tasks.segment(image, label, opts); }
  async caption(image: ImageInput, opts?: GenerateOptions & { lang?: string }) { this.checkOpen('caption'); return this.tasks.caption(image, opts); }
  async ocr(image: ImageInput, opts?: GenerateOptions) { this.checkOpen('ocr'); return this.tasks.ocr(image, opts); }
  async answer(image: ImageInput, question: string, opts?: GenerateOptions & { lang?: string }) { this.checkOpen('answer'); return this.tasks.answer(image, question, opts); }

  protected override async releaseAttached(): Promise<void> {
    await this.taskHelpers?.dispose();
  }
}
