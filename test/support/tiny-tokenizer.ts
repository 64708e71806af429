// Moved to src/testing: the builders ship with the package (demo model, conformance).
export * from '../../src/testing/tiny-tokenizer.js';
