/**
 * Draws task results onto the image with sharp: translucent masks are composited as RGBA
 * layers, boxes and labels as one SVG overlay (rendered by libvips / librsvg). Label text uses
 * the system's sans-serif font; without fonts the boxes still draw.
 *
 * ```ts
 * const png = await drawObjects(rgb, result.objects);   // Buffer with the PNG
 * ```
 */
import sharp, { type OverlayOptions } from 'sharp';
import type { PixelBox } from './box-geometry.js';

export interface DrawableObject {
  label: string;
  box: PixelBox;
  /** Binary mask at the image's size (1 inside), drawn translucent in the box's colour. */
  mask?: { binary: Uint8Array };
}

/** Distinct, readable colours; object i takes PALETTE[i % length]. */
export const PALETTE: ReadonlyArray<readonly [number, number, number]> = [
  [230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
  [70, 240, 240], [240, 50, 230], [210, 245, 60], [0, 128, 128], [170, 110, 40],
];

export interface DrawOptions {
  /** Mask opacity, 0..1 (default 0.45). */
  maskOpacity?: number;
  /** Box line width in pixels (default: scales with the image, at least 2). */
  lineWidth?: number;
}

const escapeXml = (s: string): string => s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c]!);

/** The image (8-bit RGB, HWC) with the objects drawn, as PNG bytes. */
export async function drawObjects(
  image: { data: Uint8Array; width: number; height: number },
  objects: readonly DrawableObject[],
  opts: DrawOptions = {},
): Promise<Buffer> {
  const { width, height } = image;
  const alpha = Math.round(255 * Math.min(1, Math.max(0, opts.maskOpacity ?? 0.45)));
  const line = opts.lineWidth ?? Math.max(2, Math.round(Math.min(width, height) / 150));
  const font = Math.max(10, Math.round(Math.min(width, height) / 28));
  const layers: OverlayOptions[] = [];
  objects.forEach((o, i) => {
    if (!o.mask) return;
    const [r, g, b] = PALETTE[i % PALETTE.length];
    const rgba = Buffer.alloc(width * height * 4);
    const m = o.mask.binary;
    for (let p = 0; p < m.length; p++) {
      if (!m[p]) continue;
      rgba[4 * p] = r; rgba[4 * p + 1] = g; rgba[4 * p + 2] = b; rgba[4 * p + 3] = alpha;
    }
    layers.push({ input: rgba, raw: { width, height, channels: 4 }, left: 0, top: 0 });
  });
  const shapes = objects.map((o, i) => {
    const [r, g, b] = PALETTE[i % PALETTE.length];
    const colour = `rgb(${r},${g},${b})`;
    const x = o.box.x0, y = o.box.y0, w = Math.max(0, o.box.x1 - o.box.x0), h = Math.max(0, o.box.y1 - o.box.y0);
    // The label sits above the box, or inside its top when the box touches the top edge.
    const ty = y - font * 1.3 >= 0 ? y - font * 1.3 : y;
    const tw = Math.ceil(font * 0.62 * o.label.length + font * 0.6);
    return `<rect x="${x}" y="${y}" width="${w}" height="${h}" fill="none" stroke="${colour}" stroke-width="${line}"/>`
      + `<rect x="${x}" y="${ty}" width="${tw}" height="${font * 1.3}" fill="${colour}"/>`
      + `<text x="${x + font * 0.3}" y="${ty + font}" font-family="sans-serif" font-size="${font}" fill="white">${escapeXml(o.label)}</text>`;
  }).join('');
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">${shapes}</svg>`;
  layers.push({ input: Buffer.from(svg), left: 0, top: 0 });
  return sharp(Buffer.from(image.data.buffer, image.data.byteOffset, image.data.byteLength), { raw: { width, height, channels: 3 } })
    .composite(layers)
    .png()
    .toBuffer();
}
