/**
 * Imports in src/ only look down the layer order declared in test/support/layering.ts.
 * Run alone: npx mocha test/layering.test.ts
 */
import { expect } from 'chai';
import { fileURLToPath } from 'node:url';
import {
  LAYERS, importSpecifiers, layeringViolations, rankTable, readSrcImports, type ImportEdge,
} from './support/layering.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const edge = (file: string, specifier: string, target: string): ImportEdge => ({ file, specifier, target });

describe('layering', () => {
  describe('the check itself', () => {
    const layers = [['interfaces'], ['tensor', 'image'], ['model'], ['top.ts']];

    it('passes imports that look down or stay in their unit', () => {
      expect(layeringViolations([
        edge('src/model/gemma.ts', '../tensor/dtype.js', 'src/tensor/dtype.js'),
        edge('src/model/gemma.ts', '../interfaces/errors.js', 'src/interfaces/errors.js'),
        edge('src/model/gemma.ts', './siglip.js', 'src/model/siglip.js'),
        edge('src/top.ts', './model/gemma.js', 'src/model/gemma.js'),
        edge('test/x.test.ts', '../src/top.js', 'src/top.js'),
      ], layers)).to.deep.equal([]);
    });

    it('names the file and the import of an upward arrow', () => {
      expect(layeringViolations([
        edge('src/tensor/dtype.ts', '../model/gemma.js', 'src/model/gemma.js'),
      ], layers)).to.deep.equal([
        'src/tensor/dtype.ts imports ../model/gemma.js (tensor → model: rank 1 imports rank 2, up)',
      ]);
    });

    it('refuses siblings on one rank, unknown units and imports out of src/', () => {
      expect(layeringViolations([
        edge('src/image/a.ts', '../tensor/b.js', 'src/tensor/b.js'),
        edge('src/model/a.ts', '../newfolder/b.js', 'src/newfolder/b.js'),
        edge('src/newfolder/b.ts', '../interfaces/errors.js', 'src/interfaces/errors.js'),
        edge('src/model/a.ts', '../../test/support/x.js', 'test/support/x.js'),
      ], layers)).to.deep.equal([
        'src/image/a.ts imports ../tensor/b.js (image → tensor: siblings on rank 1)',
        'src/model/a.ts imports ../newfolder/b.js (newfolder has no place in LAYERS)',
        'src/newfolder/b.ts imports ../interfaces/errors.js (newfolder has no place in LAYERS)',
        'src/model/a.ts imports ../../test/support/x.js (model → test/support/x.js: outside src/)',
      ]);
    });

    it('reads static, dynamic, type-only and re-export specifiers, not comments or packages', () => {
      const text = [
        "import { a } from '../tensor/a.js';",
        "import type { B } from '../model/b.js';",
        "export * from './c.js';",
        "import 'reflect-metadata';",
        "// import { no } from '../cli/no.js';",
        "/* import('../cli/no2.js') */",
        "const accept = 'image/*';",
        "async function f() { return import('../backends/d.js'); }",
      ].join('\n');
      expect(importSpecifiers(text)).to.deep.equal(['../tensor/a.js', '../model/b.js', './c.js', '../backends/d.js']);
    });

    it('a unit listed twice is a broken table', () => {
      expect(() => rankTable([['model'], ['model']])).to.throw(/model twice/);
    });
  });

  it('every import under src/ looks down LAYERS', () => {
    const edges = readSrcImports(ROOT);
    // The reader sees the real graph (hundreds of edges), so an empty pass is not a vacuous one.
    expect(edges.length).to.be.greaterThan(500);
    expect(edges.some((e) => e.file === 'src/model/gemma.ts' && e.target === 'src/tensor/tensor-scope.js')).to.equal(true);
    expect(layeringViolations(edges, LAYERS)).to.deep.equal([]);
  });
});
