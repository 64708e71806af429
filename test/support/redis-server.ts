/**
 * Redis for tests: a throwaway redis-server (its own loopback port and temp folder, nothing saved
 * to disk, stopped by `stop()` and killed if the test process exits first), or the one CI names
 * in PALIGEMMA_TEST_REDIS_URL.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
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

/** Set by CI to a Redis it started (e.g. redis://127.0.0.1:6390): the tests use it instead of their own. */
export const TEST_REDIS_ENV = 'PALIGEMMA_TEST_REDIS_URL';

/**
 * The Redis for a test file: the one PALIGEMMA_TEST_REDIS_URL names (never stopped here; tests
 * on it use queue names of their own and remove only those), else a throwaway redis-server on
 * a free loopback port, else undefined (the caller skips). A URL that is set but not loopback is
 * refused: nothing in the tests leaves this machine.
 */
export async function testRedis(): Promise<(TestRedis & { shared: boolean }) | undefined> {
  const fromEnv = process.env[TEST_REDIS_ENV];
  if (fromEnv) {
    const url = new URL(fromEnv);
    if (url.protocol !== 'redis:' || !['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname)) {
      throw new Error(`${TEST_REDIS_ENV}=${fromEnv}: expected a redis:// URL on a loopback address`);
    }
    return { url: fromEnv, port: Number(url.port || 6379), shared: true, async stop() {} };
  }
  if (!hasRedisServer()) return undefined;
  return { ...(await startRedis()), shared: false };
}

/** A queue name no other test run uses, so that runs sharing one Redis never meet. */
export function uniqueQueueName(what: string): string {
  return `pg-test-${what}-${process.pid}-${randomBytes(4).toString('hex')}`;
}

/** Removes every key of the named BullMQ queues (and nothing else) from the Redis at `url`. */
export async function removeQueues(url: string, names: readonly string[]): Promise<void> {
  const { Queue } = await import('bullmq');
  const { Redis } = await import('ioredis');
  const connection = new Redis(url, { maxRetriesPerRequest: null });
  try {
    for (const name of names) {
      const q = new Queue(name, { connection });
      try { await q.obliterate({ force: true }); } finally { await q.close(); }
    }
  } finally {
    connection.disconnect();
  }
}
