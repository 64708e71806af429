/**
 * README.md's first command prints what the README shows: the same note, the same text and the
 * same summary line but for the timings (which differ by machine).
 */
import { expect } from 'chai';
import { readFile } from 'node:fs/promises';
import { runCli } from './support/run-cli.js';

const README = new URL('../README.md', import.meta.url);
const TIMINGS = /vision [\d.]+ ms, prefill [\d.]+ ms, [\d.]+ ms\/token/;

describe('README: the first command', function () {
  this.timeout(180_000);

  it('prints the output the README shows', async function () {
    const readme = await readFile(README, 'utf8');
    const command = /```bash\nnpm install && npx paligemma (generate [^\n]+)\n/.exec(readme);
    expect(command, 'the first command').to.not.equal(null);
    const shown = /The first command prints[^\n]*\n\n```\n([\s\S]*?)```/.exec(readme);
    expect(shown, 'the README block with its output').to.not.equal(null);
    const args = command![1].match(/"[^"]*"|\S+/g)!.map((a) => a.replace(/^"|"$/g, ''));
    const r = runCli(args);
    expect(r.code, r.stderr).to.equal(0);
    const printed = (r.stderr + r.stdout).trim().split('\n');
    const want = shown![1].trim().split('\n');
    expect(printed.map((l) => l.replace(TIMINGS, 'TIMINGS'))).to.have.members(want.map((l) => l.replace(TIMINGS, 'TIMINGS')));
  });
});
