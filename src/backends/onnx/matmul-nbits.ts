/**
 * The graph side of block-quantized weights: leaves for a BlockQuantized weight and the
 * `MatMulNBits` node (com.microsoft) that multiplies an activation by it.
 *
 * `accuracy_level` picks the type onnxruntime computes in: 0 (unset) and 1 dequantize the
 * weight to float32 and accumulate in float32; 4 quantizes each block of the activation to
 * int8 and uses integer dot products (about 2× faster for one row here, but it adds an
 * activation rounding whose size grows with the activation's outliers; see docs/performance.md).
 */
import { f16ToF32 } from '../../tensor/dtype.js';
import { DataLeaf, GraphNode, type Operand, type Storage } from './onnx-graph.js';
import type { AttrValue } from './onnx-proto.js';
import { quantizeBlockwise, type BlockQuantized, type QuantBits } from '../../tensor/block-quantization.js';

/** The graph inputs of one quantized weight, built once and fed every run without copying. */
export interface NBitsWeight {
  q: BlockQuantized;
  data: DataLeaf;
  scales: DataLeaf;
  zeroPoints?: DataLeaf;
}

let nextWeight = 0;

/**
 * The leaves of a quantized weight. They are model initializers (see DataLeaf.initializer):
 * onnxruntime prepacks them once per session, so a session holds its own packed copy.
 */
export function nbitsWeight(q: BlockQuantized): NBitsWeight {
  const blob = (q.blockSize * q.bits) / 8;
  const id = `q${nextWeight++}`;
  return {
    q,
    data: new DataLeaf(q.data, [q.n, q.kBlocks, blob], 'uint8', `${id}.data`),
    scales: new DataLeaf(q.scales, [q.n * q.kBlocks], 'float32', `${id}.scales`),
    zeroPoints: q.zeroPoints && new DataLeaf(q.zeroPoints, [q.zeroPoints.length], 'uint8', `${id}.zp`),
  };
}

/** x [M, K] · dequant(W)ᵀ (+ bias [N]) → [M, N]. */
export function matMulNBits(x: Operand, w: NBitsWeight, accuracyLevel: number, bias?: Operand): GraphNode {
  const { q } = w;
  const m = x.shape[0];
  if (x.shape.length !== 2 || x.shape[1] !== q.k) throw new Error(`MatMulNBits: activation [${x.shape}] does not match K=${q.k}`);
  const int = (value: number): AttrValue => ({ kind: 'int', value });
  const inputs: Operand[] = [x, w.data, w.scales];
  // Optional inputs are positional (zero_points, g_idx, bias); an empty name skips one, which
  // our graph builder cannot write, so a bias with no zero points is added after the node.
  if (w.zeroPoints) inputs.push(w.zeroPoints);
  const y = new GraphNode('MatMulNBits', inputs, {
    K: int(q.k), N: int(q.n), bits: int(q.bits), block_size: int(q.blockSize), accuracy_level: int(accuracyLevel),
  }, [m, q.n], 'float32', 'com.microsoft');
  return bias ? new GraphNode('Add', [y, bias], {}, [m, q.n]) : y;
}

/**
 * Replaces a [N, K] weight storage (float32, or f16 bits with bf16 patches) by its block-wise
 * quantized form, reading one row at a time so a 16-bit weight is never widened whole. The
 * storage's `data` becomes the packed codes (uint8); the graph reads it through the
 * NBitsWeight's leaves, never through a storage leaf.
 */
export function quantizeStorageNBits(s: Storage, bits: QuantBits, blockSize = 32): void {
  const q = quantizeStorageCopy(s, bits, blockSize);
  s.data = q.data;
  s.elemType = 'uint8';
  s.encoding = { kind: 'nbits', weight: nbitsWeight(q) };
  s.decoded = null;
}

/**
 * The block-wise quantized form of a [N, K] weight storage (float32, or f16 bits with bf16
 * patches), read one row at a time; the storage itself is left as it is.
 */
export function quantizeStorageCopy(s: Storage, bits: QuantBits, blockSize = 32): BlockQuantized {
  const [n, k] = s.shape;
  const enc = s.encoding;
  if (enc && enc.kind !== 'f16') throw new Error(`quantizeStorageNBits: storage is already ${enc.kind}`);
  const src = s.data;
  const patches = enc?.kind === 'f16' ? enc.patches : undefined;
  const pIdx = patches?.index.data as BigInt64Array | undefined, pVal = patches?.values.data as Float32Array | undefined;
  let pj = 0;
  const readRow = (r: number, row: Float32Array): void => {
    if (!enc) { row.set((src as Float32Array).subarray(r * k, (r + 1) * k)); return; }
    f16ToF32((src as Uint16Array).subarray(r * k, (r + 1) * k), row);
    // Patches are ascending flat indices and rows are read in order.
    if (pIdx) for (; pj < pIdx.length && Number(pIdx[pj]) < (r + 1) * k; pj++) row[Number(pIdx[pj]) - r * k] = pVal![pj];
  };
  return quantizeBlockwise(n, k, readRow, { bits, blockSize });
}

/**
 * Sessions whose model embeds quantized weights each hold a packed copy of them, so at most
 * this many are cached (vision, prefill, decode, and one prefill of another prompt length);
 * the least recently used beyond that are released.
 */
export const MAX_WEIGHT_SESSIONS = 4;

/** Records `key` as a weight-holding session and releases the oldest beyond MAX_WEIGHT_SESSIONS. */
export function evictWeightSessions(
  sessions: Map<string, Promise<{ release(): Promise<void> }>>, weightSessions: Set<string>, key: string,
): void {
  weightSessions.add(key);
  for (const k of weightSessions) if (!sessions.has(k)) weightSessions.delete(k);
  // `sessions` iterates least recently used first.
  for (const [k, s] of sessions) {
    if (weightSessions.size <= MAX_WEIGHT_SESSIONS) break;
    if (k === key || !weightSessions.has(k)) continue;
    sessions.delete(k);
    weightSessions.delete(k);
    void s.then((x) => x.release(), () => undefined);
  }
}

/** Initializer bytes one model may embed: protobuf caps a message at 2 GiB, less room for the graph. */
export const MAX_EMBEDDED_BYTES = 2 ** 31 - 64 * 2 ** 20;
