import { Presets, SingleBar } from 'cli-progress';
import type { DownloadPlan, DownloadProgress } from '../hub/download-snapshot.js';

export interface DownloadReporter {
  onPlan: (plan: DownloadPlan) => void;
  onProgress: (p: DownloadProgress) => void;
  /** Ends the bar (after a failure: the error line follows). */
  stop: () => void;
}

const mb = (bytes: number) => (bytes / 1e6).toFixed(1);

/**
 * Download feedback on stderr: a bar (bytes, rate, ETA) on a terminal, else one summary line
 * once a download has finished. Nothing at all when everything was in the cache already.
 */
export function downloadReporter(stream: NodeJS.WriteStream = process.stderr): DownloadReporter {
  let plan: DownloadPlan | undefined;
  let bar: SingleBar | undefined;
  let received = 0;
  const started = Date.now();
  const finish = () => {
    bar?.stop();
    bar = undefined;
    if (!plan || plan.files.length === 0 || stream.isTTY) return;
    const seconds = (Date.now() - started) / 1000;
    stream.write(`downloaded ${plan.files.length} file${plan.files.length === 1 ? '' : 's'} (${mb(received)} MB) of ${plan.repo}@${plan.commit.slice(0, 7)} in ${seconds.toFixed(1)} s\n`);
  };
  return {
    onPlan(p) {
      plan = p;
      if (p.files.length === 0 || !stream.isTTY) return;
      bar = new SingleBar({
        stream,
        format: `downloading ${p.repo} [{bar}] {percentage}% {doneMb}/{totalMb} MB {rate} MB/s ETA {eta_formatted} {file}`,
        hideCursor: true,
        clearOnComplete: true,
        etaBuffer: 50,
      }, Presets.shades_classic);
      bar.start(p.totalBytes, 0, { doneMb: mb(0), totalMb: mb(p.totalBytes), rate: '0.0', file: '' });
    },
    onProgress(p) {
      received = p.receivedBytes;
      if (p.finished) { finish(); return; }
      const seconds = Math.max((Date.now() - started) / 1000, 1e-3);
      bar?.update(p.loadedBytes, { doneMb: mb(p.loadedBytes), totalMb: mb(p.totalBytes), rate: mb(received / seconds), file: p.file });
    },
    stop() {
      bar?.stop();
      bar = undefined;
    },
  };
}
