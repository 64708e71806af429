/**
 * Runs the hub stand-in with the fixture repos until stdin closes; prints one JSON line
 * {url, storageUrl} first. Used by test/fixtures/hub/make-hub-cache.py.
 */
import { fixtureRepos } from './hub-fixture-repo.js';
import { startHubStandIn } from './hub-stand-in.js';

const standIn = await startHubStandIn(await fixtureRepos());
process.stdout.write(`${JSON.stringify({ url: standIn.url, storageUrl: standIn.storageUrl })}\n`);
process.stdin.resume();
process.stdin.on('end', () => {
  process.stderr.write(`${JSON.stringify(standIn.requests.map((r) => `${r.host} ${r.method} ${r.url} ${r.status ?? '-'}${r.authorized ? ' (token)' : ''}`))}\n`);
  void standIn.close().then(() => process.exit(0));
});
