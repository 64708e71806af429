import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../../bin/paligemma.js', import.meta.url));

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `paligemma ...args` in a child process, as a user would. */
export function runCli(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): CliRun {
  const r = spawnSync(process.execPath, [BIN, ...args], {
    cwd: opts.cwd, env: { ...process.env, ...opts.env }, encoding: 'utf8', timeout: 180_000,
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/**
 * A user error as the CLI must report it: exit 2 and one `error:` line matching `pattern` on
 * stderr (with `allowNotes`, `note:` lines printed before it are let through).
 */
export function expectUserError(r: Pick<CliRun, 'code' | 'stderr'>, pattern: RegExp, opts: { allowNotes?: boolean } = {}): void {
  expect(r.code, r.stderr).to.equal(2);
  const lines = r.stderr.trim().split('\n').filter((l) => !(opts.allowNotes && l.startsWith('note: ')));
  expect(lines, r.stderr).to.have.length(1);
  // A command run with --json reports {"error":{"code","message"}} instead of the prose line.
  if (lines[0].startsWith('{')) {
    const { error } = JSON.parse(lines[0]) as { error: { code: string; message: string } };
    expect(error.code).to.be.a('string').and.not.equal('internal');
    expect(`error: ${error.message}`).to.match(pattern);
    return;
  }
  expect(lines[0]).to.match(/^error: /);
  expect(lines[0]).to.match(pattern);
}
