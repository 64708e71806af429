/**
 * The onnx backend's compiled sessions, by the graph's structural key (onnx-graph.ts), least
 * recently used released past `max`. Sessions that embed quantized weights hold their own
 * prepacked copy of them, so fewer of those are kept (evictWeightSessions).
 */
import type { InferenceSession } from 'onnxruntime-node';
import { evictWeightSessions } from './matmul-nbits.js';

export interface SessionCounters {
  sessionsCreated: number;
  sessionHits: number;
  compileMs: number;
}

export class SessionCache {
  private readonly sessions = new Map<string, Promise<InferenceSession>>();
  /** Keys of cached sessions that hold their own packed copy of quantized weights. */
  private readonly weightSessions = new Set<string>();

  constructor(private readonly max: number, private readonly stats: SessionCounters) {}

  get size(): number { return this.sessions.size; }

  /** The session for `key`, made by `create` on a miss. */
  get(key: string, create: () => Promise<InferenceSession>, holdsWeights: boolean): Promise<InferenceSession> {
    const hit = this.sessions.get(key);
    if (hit) {
      this.sessions.delete(key);                                            // most recently used last
      this.sessions.set(key, hit);
      this.stats.sessionHits++;
      return hit;
    }
    const t0 = performance.now();
    const created = create().then((s) => {
      this.stats.compileMs += performance.now() - t0;
      return s;
    });
    this.stats.sessionsCreated++;
    this.sessions.set(key, created);
    created.catch(() => this.sessions.delete(key));
    while (this.sessions.size > this.max) {
      const [oldKey, old] = this.sessions.entries().next().value!;
      this.sessions.delete(oldKey);
      this.weightSessions.delete(oldKey);
      void old.then((s) => s.release(), () => undefined);
    }
    if (holdsWeights) evictWeightSessions(this.sessions, this.weightSessions, key);
    return created;
  }

  /** Releases every session. */
  async clear(): Promise<void> {
    const all = [...this.sessions.values()];
    this.sessions.clear();
    this.weightSessions.clear();
    for (const p of all) await p.then((s) => s.release(), () => undefined);
  }
}
