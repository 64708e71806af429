/**
 * Loc bins → pixels of the original image.
 *
 * PaliGemma's image processor resizes the image to its square input (e.g. 224×224) without
 * keeping the aspect ratio, so a position that is a fraction f of the square's height is the
 * same fraction of the original image's height: y scales by H, x by W, independently.
 *
 * Bins follow big_vision (google-research/big_vision), the code PaliGemma was trained with:
 * its preprocessing writes a normalised coordinate c ∈ [0, 1] as bin round(c · 1023) (clipped
 * to 0..1023), and its evaluators read bin b back as b / 1023. So bin 0 is the top/left edge and
 * bin 1023 the bottom/right edge of the image. See docs/tasks.md.
 */
import type { LocQuad } from './loc-parser.js';

/** Largest bin: coordinates are written as round(c · LOC_MAX). */
export const LOC_MAX = 1023;

/** A box in pixels of the original image; x0 ≤ x1, y0 ≤ y1; x to the right, y down. */
export interface PixelBox { x0: number; y0: number; x1: number; y1: number }

/** (y_min, x_min, y_max, x_max) bins → a box in original-image pixels (floats, not rounded). */
export function locToBox(loc: LocQuad, width: number, height: number): PixelBox {
  const [y0, x0, y1, x1] = loc;
  return {
    x0: (x0 / LOC_MAX) * width,
    y0: (y0 / LOC_MAX) * height,
    x1: (x1 / LOC_MAX) * width,
    y1: (y1 / LOC_MAX) * height,
  };
}

/** The inverse, as big_vision's preprocessing bins a box: round(c · 1023), clipped. */
export function boxToLoc(box: PixelBox, width: number, height: number): LocQuad {
  const bin = (v: number, size: number) => Math.min(LOC_MAX, Math.max(0, Math.round((v / size) * LOC_MAX)));
  return [bin(box.y0, height), bin(box.x0, width), bin(box.y1, height), bin(box.x1, width)];
}

/** Integer pixel rectangle [x0, x1) × [y0, y1) a mask is pasted into. */
export interface PixelRect { x0: number; y0: number; x1: number; y1: number }

/**
 * The rectangle big_vision's segmentation evaluator pastes a mask into: each coordinate
 * truncated to an integer (`int(y1 * h)`, …), so x1 - x0 and y1 - y0 are the mask's size.
 */
export function maskRect(loc: LocQuad, width: number, height: number): PixelRect {
  const [y0, x0, y1, x1] = loc;
  // Same operation order as the evaluator: (b / 1023) * size, then truncate.
  const t = (b: number, size: number) => Math.trunc((b / LOC_MAX) * size);
  return { x0: t(x0, width), y0: t(y0, height), x1: t(x1, width), y1: t(y1, height) };
}
