/**
 * A turn of the event loop. Compute on the CPU (the reference backend) never awaits anything
 * that leaves the microtask queue, so without this a timer-fired AbortSignal, a SIGINT handler
 * or a server's other requests would wait until the whole generation ends. setImmediate runs
 * after pending I/O and due timers, at a cost of microseconds.
 */
export function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Thrown by a pause when its signal has fired; the pipeline turns it into finishReason 'aborted'. */
export class Aborted extends Error {
  constructor() { super('aborted'); }
}

/** A pause for the decoder's layers: one event-loop turn, then stop if `signal` has fired. */
export function pauseFor(signal: AbortSignal | undefined): () => Promise<void> {
  return async () => {
    await nextTurn();
    if (signal?.aborted) throw new Aborted();
  };
}
