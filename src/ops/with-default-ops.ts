/**
 * The complete op set the model code calls: a backend's own methods where it declares them, the
 * defaults of default-ops.ts for the composites it leaves out. A backend that declares every
 * composite is returned as it is.
 *
 * ```ts
 * const ops = withDefaultOps(backend);        // TensorOps
 * const h = ops.rmsNorm(x, w, 1e-6);          // fused when backend.rmsNorm exists
 * ```
 */
import type { CoreOpName, FusedOpName, Tensor, TensorBackend, TensorOps } from '../interfaces/tensor-backend.js';
import {
  defaultGelu, defaultLayerNorm, defaultPatchEmbed, defaultRmsNorm, defaultRope, defaultSoftmax,
} from './default-ops.js';
import { wrapBackend } from './wrap-backend.js';

/** The composites that have defaults here (attention's is `attend` in src/attention). */
export const COMPOSITE_OPS = ['gelu', 'layerNorm', 'rmsNorm', 'softmax', 'rope', 'patchEmbed'] as const;
export type CompositeOp = (typeof COMPOSITE_OPS)[number];

/** Core ops each default is built from (what a backend must support to run it). */
export const DEFAULT_USES: Readonly<Record<FusedOpName, readonly CoreOpName[]>> = {
  gelu: ['mul', 'add', 'scale', 'unary'],
  layerNorm: ['reduce', 'scale', 'add', 'mul', 'unary', 'upload'],
  rmsNorm: ['reduce', 'scale', 'add', 'mul', 'unary', 'upload'],
  softmax: ['reduce', 'scale', 'add', 'mul', 'unary'],
  rope: ['upload', 'slice', 'mul', 'add', 'scale', 'concat'],
  patchEmbed: ['reshape', 'transpose', 'matmul'],
  attention: ['slice', 'transpose', 'reshape', 'matmul', 'scale', 'unary', 'upload', 'add', 'reduce', 'mul', 'concat'],
};

/** Whether `backend` declares its own version of a composite (else the default runs). */
export function declaresOp(backend: TensorBackend, op: FusedOpName): boolean {
  return typeof backend[op] === 'function';
}

export function withDefaultOps(backend: TensorBackend): TensorOps {
  const missing = COMPOSITE_OPS.filter((op) => !declaresOp(backend, op));
  if (missing.length === 0) return backend as TensorOps;
  const all = {
    gelu: (x: Tensor) => defaultGelu(backend, x),
    layerNorm: (x: Tensor, w: Tensor, b: Tensor, eps: number) => defaultLayerNorm(backend, x, w, b, eps),
    rmsNorm: (x: Tensor, w: Tensor, eps: number) => defaultRmsNorm(backend, x, w, eps),
    softmax: (x: Tensor) => defaultSoftmax(backend, x),
    rope: (x: Tensor, positions: Int32Array, theta: number) => defaultRope(backend, x, positions, theta),
    patchEmbed: (px: Tensor, w: Tensor, b: Tensor, patch: number) => defaultPatchEmbed(backend, px, w, b, patch),
  };
  const shell = Object.fromEntries(missing.map((op) => [op, all[op]]));
  return wrapBackend(backend, shell) as TensorOps;
}
