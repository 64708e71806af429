import { SingleBar, Presets } from 'cli-progress';
import type { LoadProgress } from '../checkpoint/load-checkpoint.js';

/** A terminal progress bar for checkpoint loading; silent when stderr is not a terminal. */
export function loadProgressBar(): { onProgress: (p: LoadProgress) => void; stop: () => void } {
  if (!process.stderr.isTTY) return { onProgress: () => {}, stop: () => {} };
  const bar = new SingleBar({
    stream: process.stderr,
    format: 'loading weights [{bar}] {percentage}% {loadedMb}/{totalMb} MB',
    hideCursor: true,
    clearOnComplete: true,
  }, Presets.shades_classic);
  let started = false;
  return {
    onProgress(p) {
      const mb = (x: number) => (x / 1e6).toFixed(0);
      if (!started) { bar.start(p.totalBytes, 0, { loadedMb: 0, totalMb: mb(p.totalBytes) }); started = true; }
      bar.update(p.loadedBytes, { loadedMb: mb(p.loadedBytes), totalMb: mb(p.totalBytes) });
    },
    stop() { if (started) bar.stop(); },
  };
}
