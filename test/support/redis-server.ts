/**
 * A throwaway redis-server for tests: its own loopback port and temp folder, nothing saved to
 * disk, stopped by `stop()` (and killed if the test process exits first).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { makeTempDir } from './tiny-checkpoint.js';

export interface TestRedis {
  url: string;
  port: number;
  stop(): Promise<void>;
}

/** Whether a redis-server binary is on PATH (tests skip with a message when it is not). */
export function hasRedisServer(): boolean {
  return spawnSync('redis-server', ['--version'], { encoding: 'utf8' }).status === 0;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export async function startRedis(timeoutMs = 10_000): Promise<TestRedis> {
  const dir = await makeTempDir('pg-redis-');
  const port = await freePort();
  const child: ChildProcess = spawn('redis-server', [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir,
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  const kill = () => { child.kill('SIGKILL'); };
  process.once('exit', kill);
  let log = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis-server did not start within ${timeoutMs} ms:\n${log}`)), timeoutMs);
    const onData = (b: Buffer) => {
      log += b.toString();
      if (log.includes('Ready to accept connections')) { clearTimeout(timer); resolve(); }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`redis-server exited with ${code}:\n${log}`)); });
  });
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    async stop() {
      process.off('exit', kill);
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}
