/**
 * The onnx backend's products with 16-bit weights kept in the half memory (half-memory.ts), as
 * graph nodes: few rows in gemv16 on the host; many rows as an onnxruntime Gemm whose weight a
 * host node widens just ahead of it (staged-flush.ts lends the buffer); a weight too big to
 * widen whole (the lm_head over many rows) chunk by chunk, one Gemm run each.
 */
import type { AttrValue } from './onnx-proto.js';
import { HalfMemory } from './half-memory.js';
import { DataLeaf, GraphNode, HostNode, type Operand, Storage, type StorageEncoding } from './onnx-graph.js';

export type HalfEncoding = Extract<StorageEncoding, { kind: 'half' }>;

/** What the products need from the backend. */
export interface HalfWeightsEnv {
  /** onnxruntime intra-op threads, also the kernel's threads (default: the machine's). */
  threads?: number;
  /** Largest float32 copy of one weight made at once. */
  widenChunkBytes: number;
  stats: { halfGemvCalls: number };
  /** One onnxruntime run (`into` may give a node its result buffer). */
  runOnnx(nodes: GraphNode[], into?: (n: GraphNode) => Float32Array | undefined): Promise<void>;
}

const TRANSPOSE_B: Record<string, AttrValue> = { transB: { kind: 'int', value: 1 } };

export class HalfWeights {
  private memory: HalfMemory | undefined;
  /** See widenBuffer. */
  private wide: Float32Array | undefined;

  /** `maxRows`: products of at most this many rows run in gemv16. */
  constructor(readonly maxRows: number, private readonly env: HalfWeightsEnv) {}

  /**
   * A 2-D 16-bit weight's storage in the half memory, its bits as the checkpoint holds them;
   * undefined where the caller keeps a plain f16 storage: it is not 2-D (norm scales, the
   * patch-embedding kernel), it fits no memory, or it is f16 holding ±Infinity or NaN (which
   * the kernels would read as finite numbers).
   */
  place(bits: Uint16Array, shape: readonly number[], format: 'f16' | 'bf16'): Storage | undefined {
    if (shape.length !== 2 || bits.length === 0) return undefined;
    this.memory ??= new HalfMemory(this.env.threads);
    const at = this.memory.place(bits, format);
    return at && this.storage(at.view, at.placed, shape, this.memory);
  }

  /**
   * Room in the half memory for a 2-D 16-bit weight that the caller fills in place; `settle`
   * then gives its storage, or undefined for f16 holding ±Infinity or NaN (the room is given
   * back and the caller keeps a copy). Undefined where `place` would be.
   */
  reserve(shape: readonly number[], format: 'f16' | 'bf16'): { view: Uint16Array; settle(): Storage | undefined; release(): void } | undefined {
    if (shape.length !== 2 || shape[0] * shape[1] === 0) return undefined;
    const memory = this.memory ??= new HalfMemory(this.env.threads);
    const room = memory.reserve(shape[0] * shape[1], format);
    if (!room) return undefined;
    return {
      view: room.view,
      settle: () => (memory.settle(room) ? this.storage(room.view, room.placed, shape, memory) : undefined),
      release: () => memory.release(room.placed),
    };
  }

  private storage(view: Uint16Array, placed: HalfEncoding['placed'], shape: readonly number[], memory: HalfMemory): Storage {
    const s = new Storage(view, [...shape]);
    s.elemType = 'float16';
    s.encoding = { kind: 'half', memory, placed };
    return s;
  }

  /** x [m, k] · Wᵀ (+ bias) for a placed weight W [n, k]. */
  product(x: Operand, w: HalfEncoding, m: number, n: number, k: number, bias: Operand | undefined): GraphNode {
    if (m <= this.maxRows && k % 8 === 0) return this.gemv(x, w, m, n, k, bias);
    if (n * k * 4 > this.env.widenChunkBytes) return this.chunked(x, w, m, n, k, bias);
    // Widened on the host into a buffer the flush lends and takes back after the Gemm; the
    // flush widens weights ahead of their Gemms only up to a budget (staged-flush.ts).
    const wide = new HostNode([], [n, k], (_, into) => {
      const out = into ?? new Float32Array(n * k);                            // [n, k]
      w.memory.widen(w.placed, 0, n * k, out);
      return out;
    });
    return new GraphNode('Gemm', bias ? [x, wide, bias] : [x, wide], TRANSPOSE_B, [m, n]);
  }

  /** Rows `ids` of a placed [rows, h] table, widened on the host. */
  gather(w: HalfEncoding, ids: Int32Array, h: number): HostNode {
    const rows = new Int32Array(ids);
    return new HostNode([], [ids.length, h], () => w.memory.gather(w.placed, rows, h));
  }

  close(): void {
    this.memory?.close();
    this.memory = undefined;
    this.wide = undefined;
  }

  /** Few rows: gemv16 from the bits, on the host. */
  private gemv(x: Operand, w: HalfEncoding, m: number, n: number, k: number, bias: Operand | undefined): HostNode {
    return new HostNode(bias ? [x, bias] : [x], [m, n], ([xv, bv], into) => {
      this.env.stats.halfGemvCalls++;
      const out = into ?? new Float32Array(m * n);                            // [m, n]
      w.memory.multiply(w.placed, xv, m, k, n, out);
      if (bv) for (let r = 0; r < m; r++) for (let j = 0; j < n; j++) out[r * n + j] += bv[j];
      return out;
    });
  }

  /**
   * Too big to widen whole: W's rows widened in chunks of at most widenChunkBytes as float32,
   * each chunk's product one onnxruntime Gemm; one chunk's copy is alive at a time.
   */
  private chunked(x: Operand, w: HalfEncoding, m: number, n: number, k: number, bias: Operand | undefined): HostNode {
    return new HostNode(bias ? [x, bias] : [x], [m, n], async ([xv, bv], into) => {
      const rows = Math.min(n, Math.max(1, Math.floor(this.env.widenChunkBytes / (4 * k))));
      const xLeaf = new DataLeaf(xv, [m, k], 'float32');
      const out = rows < n ? into ?? new Float32Array(m * n) : undefined;     // [m, n] when chunked
      for (let r0 = 0; r0 < n; r0 += rows) {
        const r1 = Math.min(n, r0 + rows);
        const wide = this.widenBuffer((r1 - r0) * k);                         // W[r0:r1] [r1 − r0, k]
        w.memory.widen(w.placed, r0 * k, (r1 - r0) * k, wide);
        const inputs: Operand[] = [xLeaf, new DataLeaf(wide, [r1 - r0, k], 'float32')];
        if (bv && !out) inputs.push(new DataLeaf(bv, [n], 'float32'));
        const y = new GraphNode('Gemm', inputs, TRANSPOSE_B, [m, r1 - r0]);
        await this.env.runOnnx([y], () => (out ? undefined : into));
        const yv = y.done!.storage.data as Float32Array;                       // [m, r1 − r0]
        if (!out) return yv;
        for (let r = 0; r < m; r++) {
          out.set(yv.subarray(r * (r1 - r0), (r + 1) * (r1 - r0)), r * n + r0);
          if (bv) for (let j = r0; j < r1; j++) out[r * n + j] += bv[j];
        }
      }
      return out!;
    });
  }

  /**
   * A float32 buffer of `elements` for a widened chunk, reused from call to call (grown to the
   * largest chunk): a fresh buffer of that size costs more in page faults than the Gemm that
   * reads it. Only one Gemm reads it at a time.
   */
  private widenBuffer(elements: number): Float32Array {
    if (!this.wide || this.wide.length < elements) this.wide = new Float32Array(elements);
    return this.wide.subarray(0, elements);
  }
}
