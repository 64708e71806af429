/**
 * Ctrl-C during a command that runs the model. The first SIGINT aborts the generation through
 * its AbortSignal (the pipeline yields to the event loop once per decode step and between
 * prefill layers, so it lands within a step on every backend); what was produced so far is
 * printed, the pipeline is closed and the command exits 130 (128 + SIGINT, what shells report
 * for a process stopped by Ctrl-C). A second Ctrl-C exits 130 at once.
 */
export const EXIT_INTERRUPTED = 130;

export interface Interrupt {
  /** Fires on the first SIGINT. */
  readonly signal: AbortSignal;
  /** Whether a SIGINT came. */
  readonly fired: boolean;
  /** Removes the handlers; after a SIGINT, sets the exit code to 130. */
  release(): void;
}

export function onInterrupt(): Interrupt {
  const controller = new AbortController();
  const second = () => process.exit(EXIT_INTERRUPTED);
  const first = () => {
    controller.abort();
    process.once('SIGINT', second);
  };
  process.once('SIGINT', first);
  return {
    signal: controller.signal,
    get fired() { return controller.signal.aborted; },
    release() {
      process.off('SIGINT', first);
      process.off('SIGINT', second);
      if (controller.signal.aborted) process.exitCode = EXIT_INTERRUPTED;
    },
  };
}
