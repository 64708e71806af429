/**
 * The layer order of src/, as data, and the check that imports only look down.
 *
 * A unit is a folder directly under src/ (src/model) or a file there (src/create-pipeline.ts).
 * LAYERS lists the units bottom first; a unit may import only units of a lower rank (and itself).
 * Two units on the same rank are siblings and may not import each other. A unit missing from
 * the table fails the check too, so a new folder has to be given its place here.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative, sep } from 'node:path';
import ts from 'typescript';

/** Bottom first; each row is one rank. */
export const LAYERS: readonly (readonly string[])[] = [
  ['interfaces'],
  ['tensor'],
  ['ops'],
  ['attention', 'kv-cache', 'samplers', 'tokenizer', 'image', 'plugin', 'hub'],
  ['backends'],
  ['model'],
  ['checkpoint'],
  ['generation'],
  ['tiny-models'],
  ['tasks'],
  ['serving'],
  ['batch'],
  ['paligemma-pipeline.ts'],
  ['core-parts-plugin.ts'],
  ['builtin-plugins.ts'],
  ['create-pipeline.ts'],
  ['conformance'],
  ['bench'],
  ['cli'],
  ['index.ts'],
  ['testing'],
];

export interface ImportEdge {
  /** Importing file, relative to the repository root, e.g. src/model/gemma.ts. */
  file: string;
  /** The specifier as written, e.g. ../generation/api-arguments.js. */
  specifier: string;
  /** The imported file, relative to the repository root. */
  target: string;
}

export function rankTable(layers: readonly (readonly string[])[]): Map<string, number> {
  const rank = new Map<string, number>();
  layers.forEach((row, r) => row.forEach((unit) => {
    if (rank.has(unit)) throw new Error(`layer table names ${unit} twice`);
    rank.set(unit, r);
  }));
  return rank;
}

/** The unit of a repository-relative path under src/, or undefined outside src/. */
export function unitOf(path: string): string | undefined {
  const parts = path.split('/');
  if (parts[0] !== 'src' || parts.length < 2) return undefined;
  // A file directly under src/ is its own unit; an import names it `.js`.
  return parts.length === 2 ? parts[1].replace(/\.js$/, '.ts') : parts[1];
}

/** One line per import that does not look down: `file imports specifier (a → b: why)`. */
export function layeringViolations(edges: readonly ImportEdge[], layers: readonly (readonly string[])[] = LAYERS): string[] {
  const rank = rankTable(layers);
  const out: string[] = [];
  for (const e of edges) {
    const from = unitOf(e.file);
    if (from === undefined) continue;
    const to = unitOf(e.target);
    const where = `${e.file} imports ${e.specifier}`;
    if (to === undefined) { out.push(`${where} (${from} → ${e.target}: outside src/)`); continue; }
    if (from === to) continue;
    const rf = rank.get(from), rt = rank.get(to);
    if (rf === undefined) { out.push(`${where} (${from} has no place in LAYERS)`); continue; }
    if (rt === undefined) { out.push(`${where} (${to} has no place in LAYERS)`); continue; }
    if (rt === rf) out.push(`${where} (${from} → ${to}: siblings on rank ${rf})`);
    else if (rt > rf) out.push(`${where} (${from} → ${to}: rank ${rf} imports rank ${rt}, up)`);
  }
  return out;
}

/**
 * Relative specifiers in one file's text (package imports are not layering): static and dynamic
 * imports and re-exports, type-only ones too, read by TypeScript's own pre-processor so that
 * comments and strings are not mistaken for imports.
 */
export function importSpecifiers(text: string): string[] {
  return ts.preProcessFile(text, true, true).importedFiles.map((f) => f.fileName).filter((s) => s.startsWith('.'));
}

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    return e.isDirectory() ? tsFiles(p) : e.name.endsWith('.ts') ? [p] : [];
  });
}

/** Every relative import of every src/**\/*.ts file under `root` (the repository). */
export function readSrcImports(root: string): ImportEdge[] {
  const edges: ImportEdge[] = [];
  for (const abs of tsFiles(join(root, 'src'))) {
    const file = relative(root, abs).split(sep).join('/');
    for (const specifier of importSpecifiers(readFileSync(abs, 'utf8'))) {
      const target = normalize(join(dirname(file), specifier)).split(sep).join('/');
      edges.push({ file, specifier, target });
    }
  }
  return edges;
}
