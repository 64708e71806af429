/**
 * Runs the hub stand-in with the fixture repos until stdin closes; prints one JSON line
 * {url, storageUrl} first. A stdin line `cut PATH BYTES` makes the next download of PATH stop
 * after BYTES (answered `ok`). On close, prints the request log as one JSON line on stderr.
 * Used by test/fixtures/hub/make-hub-cache.py.
 */
import { createInterface } from 'node:readline';
import { fixtureRepos } from './hub-fixture-repo.js';
import { startHubStandIn } from './hub-stand-in.js';

const standIn = await startHubStandIn(await fixtureRepos());
process.stdout.write(`${JSON.stringify({ url: standIn.url, storageUrl: standIn.storageUrl })}\n`);
const lines = createInterface({ input: process.stdin });
lines.on('line', (line) => {
  const [command, path, bytes] = line.trim().split(/\s+/);
  if (command === 'cut' && path && Number.isInteger(Number(bytes))) {
    standIn.cutNextDownload(path, Number(bytes));
    process.stdout.write('ok\n');
  } else {
    process.stdout.write(`unknown command: ${line}\n`);
  }
});
lines.on('close', () => {
  const log = standIn.requests.map((r) =>
    `${r.host} ${r.method} ${r.url} ${r.status ?? '-'}${r.range ? ` range=${r.range}` : ''}${r.authorized ? ' (token)' : ''}`);
  process.stderr.write(`${JSON.stringify(log)}\n`);
  void standIn.close().then(() => process.exit(0));
});
