// Moved to src/tiny-models: the builders ship with the package (demo model, conformance).
export * from '../../src/tiny-models/tiny-tokenizer.js';
