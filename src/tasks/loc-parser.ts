/**
 * Parser for PaliGemma's detection / segmentation answers.
 *
 * The mix checkpoints answer `detect cat ; dog` with one entry per object, separated by ` ; `:
 *   `<loc0123><loc0045><loc0678><loc0901> cat`
 * and `segment cat` with four loc tokens, then 16 `<segNNN>` codes, then the label:
 *   `<loc0123><loc0045><loc0678><loc0901><seg012>…<seg099> cat`
 * Loc tokens are (y_min, x_min, y_max, x_max) in 1024 bins over the model's square input.
 *
 * A malformed entry (cut short by the token budget, tokens out of order, an inverted box, no
 * label, too few seg codes) is skipped with a reason; parsing never throws.
 *
 * ```ts
 * const { objects, skipped } = parseLocOutput('<loc0100><loc0200><loc0300><loc0400> cat', 'detect');
 * // objects[0] = { label: 'cat', loc: [100, 200, 300, 400] }
 * ```
 */

export const LOC_BINS = 1024;
export const SEG_CODES = 128;
/** Seg codes per object: a 4×4 grid of VQ-VAE codebook indices. */
export const SEG_TOKENS_PER_MASK = 16;

export type LocTask = 'detect' | 'segment';

/** (y_min, x_min, y_max, x_max), each an integer bin in 0..1023. */
export type LocQuad = [yMin: number, xMin: number, yMax: number, xMax: number];

export interface ParsedObject {
  label: string;
  loc: LocQuad;
  /** The 16 codebook indices (segment only), row-major over the 4×4 grid. */
  seg?: number[];
}

export interface SkippedEntry {
  /** The entry's text as generated. */
  text: string;
  reason: string;
}

export interface ParsedLocOutput {
  objects: ParsedObject[];
  skipped: SkippedEntry[];
}

type Piece = { kind: 'loc' | 'seg'; value: number; raw: string } | { kind: 'text'; raw: string };

const TOKEN_RE = /<(loc|seg)(\d+)>/g;

function pieces(entry: string): Piece[] {
  const out: Piece[] = [];
  let at = 0;
  for (const m of entry.matchAll(TOKEN_RE)) {
    if (m.index > at) out.push({ kind: 'text', raw: entry.slice(at, m.index) });
    out.push({ kind: m[1] as 'loc' | 'seg', value: Number(m[2]), raw: m[0] });
    at = m.index + m[0].length;
  }
  if (at < entry.length) out.push({ kind: 'text', raw: entry.slice(at) });
  return out;
}

/** One entry → an object, or the reason it is unusable. */
function parseEntry(entry: string, task: LocTask): ParsedObject | string {
  const ps = pieces(entry);
  const locs: number[] = [];
  const segs: number[] = [];
  let label = '';
  let stage: 'loc' | 'seg' | 'label' = 'loc';
  for (const p of ps) {
    if (p.kind === 'text') {
      if (p.raw.trim() === '') continue;
      if (stage !== 'label' && locs.length === 0) return `no <loc> tokens before the text ${JSON.stringify(p.raw.trim())}`;
      stage = 'label';
      label = p.raw.trim();
      continue;
    }
    if (p.kind === 'loc') {
      if (p.raw.length !== 9) return `malformed loc token ${p.raw}: expected <locNNNN> with 4 digits`;
      if (p.value >= LOC_BINS) return `loc token ${p.raw} out of range 0..${LOC_BINS - 1}`;
      if (stage !== 'loc') return `loc token ${p.raw} out of order: after the ${stage === 'seg' ? 'seg codes' : 'label'}`;
      if (locs.length === 4) return 'more than 4 <loc> tokens';
      locs.push(p.value);
    } else {
      if (p.raw.length !== 8) return `malformed seg token ${p.raw}: expected <segNNN> with 3 digits`;
      if (p.value >= SEG_CODES) return `seg token ${p.raw} out of range 0..${SEG_CODES - 1}`;
      if (task === 'detect') return `unexpected seg token ${p.raw} in a detection answer`;
      if (stage === 'label') return `seg token ${p.raw} out of order: after the label`;
      if (locs.length < 4) return `seg token ${p.raw} out of order: after only ${locs.length} of 4 <loc> tokens`;
      stage = 'seg';
      segs.push(p.value);
    }
  }
  if (locs.length < 4) return `cut short: ${locs.length} of 4 <loc> tokens`;
  const [y0, x0, y1, x1] = locs;
  if (y1 < y0) return `y_max < y_min (${y1} < ${y0})`;
  if (x1 < x0) return `x_max < x_min (${x1} < ${x0})`;
  if (task === 'segment') {
    if (segs.length < SEG_TOKENS_PER_MASK) return `cut short: ${segs.length} of ${SEG_TOKENS_PER_MASK} <seg> tokens`;
    if (segs.length > SEG_TOKENS_PER_MASK) return `${segs.length} <seg> tokens, expected ${SEG_TOKENS_PER_MASK}`;
    // The mask is pasted into the box, which must have an inside (big_vision counts these as invalid).
    if (y1 === y0 || x1 === x0) return `empty box (${y0},${x0})-(${y1},${x1}): no room for a mask`;
  }
  if (label === '') return 'missing label';
  const obj: ParsedObject = { label, loc: [y0, x0, y1, x1] };
  if (task === 'segment') obj.seg = segs;
  return obj;
}

/** Parses a whole answer: entries separated by `;`; blank entries (e.g. a trailing `;`) are ignored. */
export function parseLocOutput(text: string, task: LocTask): ParsedLocOutput {
  const objects: ParsedObject[] = [];
  const skipped: SkippedEntry[] = [];
  for (const raw of text.split(';')) {
    const entry = raw.trim();
    if (entry === '') continue;
    const r = parseEntry(entry, task);
    if (typeof r === 'string') skipped.push({ text: entry, reason: r });
    else objects.push(r);
  }
  return { objects, skipped };
}
