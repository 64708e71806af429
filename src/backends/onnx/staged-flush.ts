/**
 * The onnx backend's flush when its graph holds host nodes (HostNode: few-row products from
 * 16-bit bits, weights widened on the host, gathers): onnxruntime runs and host computations
 * in turns, with the intermediate results in reused buffers.
 */
import { sizeOf } from '../../tensor/op-shapes.js';
import { type GraphNode, HostNode, type Operand, Storage } from './onnx-graph.js';

/** Lent bytes up to which a staged flush widens weights ahead of the run that reads them. */
const AHEAD_BYTES = 128 * 1024 * 1024;
/** Most bytes of free buffers kept for the intermediate results of staged flushes. */
const MAX_SCRATCH_BYTES = 1024 * 1024 * 1024;

/** What the scheduler needs from the backend. */
export interface StagedFlushEnv {
  /** One onnxruntime run computing the nodes (`into` may give a float32 node its result buffer). */
  runOnnx(nodes: GraphNode[], into?: (n: GraphNode) => Float32Array | undefined): Promise<void>;
  /** A computed or stored operand's float32 values. */
  hostValue(o: Operand): Float32Array;
  scratch: ScratchPool;
  stats: { hostMs: number };
}

/**
 * Computes `wanted`. Without host nodes (HostNode) that is one onnxruntime run. With them,
 * in turns: every host node whose inputs are computed runs on the host (a host node with no
 * inputs, a weight widened ahead of its Gemm, only while less than AHEAD_BYTES of lent
 * buffers are out, so that not every weight is wide at once); then one onnxruntime run
 * computes every plain node that waits on no host node, keeping as outputs what later nodes
 * or `wanted` read. Repeat until `wanted` is computed.
 */
export async function runStaged(wanted: GraphNode[], env: StagedFlushEnv): Promise<void> {
  const order = pendingOrder(wanted);
  if (!order.some((n) => n instanceof HostNode)) { await env.runOnnx(wanted); return; }
  // Intermediate float32 results come from `scratch` (fresh buffers of that size cost more in
  // page faults than the work that fills them) and go back to it as soon as every node that
  // reads them has run; `wanted`'s results are the caller's and fresh.
  const keep = new Set(wanted);
  const readers = new Map<GraphNode, GraphNode[]>();
  for (const n of order) {
    for (const i of n.inputs) {
      if (i.kind !== 'node' || i.done) continue;
      const list = readers.get(i);
      if (list) list.push(n); else readers.set(i, [n]);
    }
  }
  const computed = new Set<GraphNode>();
  const lent = new Map<GraphNode, Float32Array>();
  let lentBytes = 0;
  const lend = (n: GraphNode): Float32Array | undefined => {
    if (keep.has(n) || n.elemType !== 'float32') return undefined;
    const buf = env.scratch.take(sizeOf(n.shape));
    lent.set(n, buf);
    lentBytes += buf.byteLength;
    return buf;
  };
  const release = (n: GraphNode, buf: Float32Array) => {
    lent.delete(n);
    lentBytes -= buf.byteLength;
    env.scratch.give(buf);
  };
  const giveBack = (all: boolean) => {
    for (const [n, buf] of lent) if (all || (readers.get(n) ?? []).every((r) => computed.has(r))) release(n, buf);
  };
  const runHost = async (host: HostNode) => {
    const values = host.inputs.map((i) => env.hostValue(i));
    const buf = lend(host);
    const t0 = performance.now();
    const result = await host.compute(values, buf);
    env.stats.hostMs += performance.now() - t0;
    if (buf && result !== buf) release(host, buf);                          // it made its own
    host.done = new Storage(result, host.shape).leaf(host.shape);
    computed.add(host);
    giveBack(false);
  };
  const ready = (n: GraphNode) => n.inputs.every((i) => i.kind !== 'node' || i.done !== null);
  try {
    for (;;) {
      const left = pendingOrder(wanted);
      if (left.length === 0) return;
      // Host nodes that can run now.
      let ran = false;
      for (const n of left) {
        if (!(n instanceof HostNode) || !ready(n)) continue;
        if (n.inputs.length === 0 && lentBytes >= AHEAD_BYTES) continue;
        await runHost(n);
        ran = true;
      }
      if (ran) continue;
      // One onnxruntime run: the plain nodes that wait on no pending host node.
      const blocked = new Set<GraphNode>();
      const stage: GraphNode[] = [];
      for (const n of left) {
        if (n instanceof HostNode || n.inputs.some((i) => i.kind === 'node' && blocked.has(i))) blocked.add(n);
        else stage.push(n);
      }
      if (stage.length === 0) {
        // Only weights to widen ahead remain runnable: widen the next one past the budget.
        const next = left.find((n): n is HostNode => n instanceof HostNode && ready(n));
        if (!next) throw new Error('onnx backend: a staged flush cannot make progress');
        await runHost(next);
        continue;
      }
      const inStage = new Set(stage);
      const outputs = stage.filter((n) => keep.has(n) || (readers.get(n) ?? []).some((r) => !inStage.has(r)));
      await env.runOnnx(outputs, lend);
      for (const n of stage) computed.add(n);
      giveBack(false);
    }
  } finally {
    giveBack(true);
  }
}

/** Float32 buffers by length, kept for reuse up to MAX_SCRATCH_BYTES. */
export class ScratchPool {
  private readonly free = new Map<number, Float32Array[]>();
  private bytes = 0;

  take(length: number): Float32Array {
    const list = this.free.get(length);
    const buf = list?.pop();
    if (buf) { this.bytes -= buf.byteLength; return buf; }
    return new Float32Array(length);
  }

  give(buf: Float32Array): void {
    if (this.bytes + buf.byteLength > MAX_SCRATCH_BYTES) return;
    this.bytes += buf.byteLength;
    const list = this.free.get(buf.length);
    if (list) list.push(buf); else this.free.set(buf.length, [buf]);
  }
}

/**
 * The nodes not yet computed that `outputs` need, inputs before the nodes that read them
 * (iterative depth-first walk: a full-size decode step has thousands of nodes).
 */
export function pendingOrder(outputs: readonly GraphNode[]): GraphNode[] {
  const order: GraphNode[] = [];
  const state = new Map<GraphNode, 1 | 2>();                // 1: inputs being visited, 2: placed
  for (const out of outputs) {
    if (out.done || state.has(out)) continue;
    const stack: Array<{ node: GraphNode; next: number }> = [{ node: out, next: 0 }];
    state.set(out, 1);
    while (stack.length) {
      const top = stack[stack.length - 1];
      if (top.next < top.node.inputs.length) {
        const i = top.node.inputs[top.next++];
        if (i.kind === 'node' && !i.done && !state.has(i)) { state.set(i, 1); stack.push({ node: i, next: 0 }); }
        continue;
      }
      stack.pop();
      state.set(top.node, 2);
      order.push(top.node);
    }
  }
  return order;
}
