/**
 * The tfjs backend's attention: a few TensorFlow.js ops per layer (grouped-query heads batched
 * by kv head, an additive mask only when some key is hidden). Tensors of another backend go
 * to the plain kernel built from backend ops.
 */
import { BackendAttentionKernel } from '../../attention/backend-attention-kernel.js';
import { PlainAttentionKernel } from '../../attention/plain-attention-kernel.js';
import { TfjsBackend } from './tfjs-backend.js';

export class TfjsAttentionKernel extends BackendAttentionKernel<TfjsBackend> {
  constructor() {
    super('tfjs', (b): b is TfjsBackend => b instanceof TfjsBackend, new PlainAttentionKernel());
  }
}
