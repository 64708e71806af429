#!/usr/bin/env node
// In a source checkout (src/ present) runs the TypeScript through tsx, so edits apply at once;
// the published package ships only dist/ and runs the built CLI.
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const source = `${root}src/cli/main.ts`;
if (existsSync(source) && !process.env.PALIGEMMA_USE_DIST) {
  const { register } = await import('tsx/esm/api');
  register({ tsconfig: `${root}tsconfig.json` });   // decorators need our compiler options
  await import(pathToFileURL(source).href);
} else {
  await import(pathToFileURL(`${root}dist/cli.js`).href);
}
