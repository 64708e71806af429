/**
 * The lazy graph behind the ONNX backend. Ops record ONNX nodes here instead of running;
 * `compileGraph` turns the nodes a flush needs into an ONNX model plus a structural key (op
 * types, attributes, shapes, constants — never fed data), so identical steps share one session.
 *
 * Operands are either nodes (pending results) or leaves:
 * - StorageLeaf: a host array (uploads, zeros, KV caches, results already computed), fed as a
 *   graph input every run without copying. Most are float32; weights may be kept as float16
 *   bits or as int8 with per-channel scales (see Storage), which the backend widens in-graph;
 * - DataLeaf: per-call host data (token ids, RoPE tables, attention masks, cache row indices),
 *   fed as an input too: its values never enter the key, so steps that differ only in data
 *   reuse the same session;
 * - ConstLeaf: small constants baked into the model (slice bounds, shapes, scalars); their
 *   values are part of the key.
 */
import {
  type AttrValue, type ProtoNode, type ProtoTensor, type ProtoValueInfo,
  encodeModel, float32Bytes, int64Bytes, ONNX_FLOAT, ONNX_FLOAT16, ONNX_INT64, ONNX_INT8, ONNX_UINT8,
} from './onnx-proto.js';
import type { HalfMemory, Placed16 } from './half-memory.js';
import type { NBitsWeight } from './matmul-nbits.js';

export type ElemType = 'float32' | 'int64' | 'float16' | 'int8' | 'uint8';

/** Host array types a Storage may hold, by element type. */
export type StorageData = Float32Array | Uint16Array | Int8Array | Uint8Array;

/**
 * How a non-float32 storage turns back into float32 values:
 * - 'f16': IEEE half bits; `patches` (flat indices and exact float32 values) overwrite the
 *   few elements f16 cannot hold exactly (a bf16 upload kept as f16 where that is lossless);
 * - 'int8': symmetric per-output-channel weights of a [N, K] matrix, stored transposed as
 *   [K, N] (the layout DynamicQuantizeMatMul reads) with `scales` [N];
 * - 'nbits': block-wise int4/int8 codes of a [N, K] matrix in MatMulNBits' layout
 *   (weight-quantization.ts); `data` is the packed codes, fed through `weight`'s leaves;
 * - 'half': f16 or bf16 bits of a 2-D weight in the backend's shared memory (half-memory.ts),
 *   which onnxruntime cannot read: only host nodes do (HostNode), never a graph input.
 */
export type StorageEncoding =
  | { kind: 'f16'; patches?: { index: DataLeaf; values: DataLeaf; count: number } }
  | { kind: 'int8'; scales: DataLeaf; n: number; k: number }
  | { kind: 'nbits'; weight: NBitsWeight }
  | { kind: 'half'; memory: HalfMemory; placed: Placed16 };

/** Host memory behind one or more tensor handles (reshape views share it). */
export class Storage {
  private static nextId = 0;
  readonly id = Storage.nextId++;
  /** Handles that still reference this storage. */
  refs = 0;
  /** Row writes recorded but not yet applied to `data` (see OnnxBackend.writeRows). */
  pendingVersion: GraphNode | null = null;
  commits: Array<{ src: Operand; offset: number }> = [];
  /** Element type of `data`; float32 unless `encoding` says otherwise. */
  elemType: ElemType = 'float32';
  /** Set when `data` is not plain float32 values in `shape` (see StorageEncoding). */
  encoding: StorageEncoding | null = null;
  /** An uploaded weight: the int8 option may quantize it on its first use as a transposed matmul operand. */
  quantizable = false;
  /** Some graph has read it as it is: its layout can no longer change (no quantization). */
  pinned = false;
  /** The in-graph float32 value of an encoded storage, shared by the nodes of one flush. */
  decoded: GraphNode | null = null;
  private readonly leaves = new Map<string, StorageLeaf>();

  constructor(public data: StorageData, readonly shape: readonly number[]) {}

  /** The leaf that feeds this storage viewed as `shape` (one per shape, so inputs dedupe). */
  leaf(shape: readonly number[]): StorageLeaf {
    const k = shape.join(',');
    let l = this.leaves.get(k);
    if (!l) { l = new StorageLeaf(this, shape); this.leaves.set(k, l); }
    return l;
  }
}

export class StorageLeaf {
  readonly kind = 'storage';
  constructor(readonly storage: Storage, readonly shape: readonly number[]) {}
  get elemType(): ElemType { return this.storage.elemType; }
}

export class DataLeaf {
  readonly kind = 'data';
  constructor(
    readonly data: Float32Array | BigInt64Array | Uint16Array | Int8Array | Uint8Array,
    readonly shape: readonly number[],
    readonly elemType: ElemType,
    /**
     * Set for data the model must hold as an initializer rather than take as an input (a
     * quantized weight: onnxruntime prepacks MatMulNBits' weights only when they are
     * initializers; fed as an input, the kernel repacks them every run, ~400× slower).
     * A unique name, part of the structural key, so a session is reused only with this data.
     */
    readonly initializer?: string,
  ) {}
}

export class ConstLeaf {
  readonly kind = 'const';
  /** Part of the structural key: the constant's type, shape and values. */
  readonly key: string;
  constructor(
    readonly values: readonly number[],
    readonly shape: readonly number[],
    readonly elemType: ElemType,
  ) {
    this.key = `${elemType}[${shape}]{${values.map((v) => (Object.is(v, -0) ? '-0' : String(v))).join(',')}}`;
  }
}

export class GraphNode {
  readonly kind = 'node';
  /** Set once a flush has computed this node: later graphs read the result as an input. */
  done: StorageLeaf | null = null;
  constructor(
    readonly op: string,
    readonly inputs: readonly Operand[],
    readonly attrs: Readonly<Record<string, AttrValue>>,
    readonly shape: readonly number[],
    readonly elemType: ElemType = 'float32',
    /** Operator domain ('' for standard ONNX, 'com.microsoft' for onnxruntime's contrib ops). */
    readonly domain = '',
  ) {}
}

/**
 * A node the backend computes on the host, between onnxruntime runs (a few-row product with a
 * 16-bit weight, gemv16.ts): the flush runs the graph up to its inputs, calls `compute` with
 * their float32 values, and goes on with its result as a stored input. compileGraph never sees one.
 */
export class HostNode extends GraphNode {
  constructor(
    inputs: readonly Operand[], shape: readonly number[],
    /** `into`, when given, is a buffer of the result's size to write and return. */
    readonly compute: (values: readonly Float32Array[], into?: Float32Array) => Float32Array | Promise<Float32Array>,
  ) {
    super('Host', inputs, {}, shape);
  }
}

export type Leaf = StorageLeaf | DataLeaf | ConstLeaf;
export type Operand = GraphNode | Leaf;

export interface CompiledGraph {
  /** Structural key: equal keys ⇒ the same ONNX model. */
  key: string;
  /** Builds the model bytes (only called when no session has the key yet). */
  model(): Uint8Array;
  /** Graph inputs in order: name and the leaf whose data feeds it. */
  feeds: Array<{ name: string; leaf: StorageLeaf | DataLeaf }>;
  /** Output names, one per requested node, in the order asked. */
  outputNames: string[];
  nodeCount: number;
  /** Bytes of data held as initializers (quantized weights): each session holds its own copy. */
  embeddedBytes: number;
  /**
   * Initializers past the embedding budget (compileGraph's `embedBudget`): the model refers to
   * them as external data of these names, handed to onnxruntime from memory (the session
   * option `externalData`), so no model exceeds protobuf's 2 GiB limit.
   */
  externalData: Array<{ path: string; data: Uint8Array }>;
}

/** The operand a node reads: a node computed by an earlier flush becomes its stored result. */
export function resolve(o: Operand): Operand {
  return o.kind === 'node' && o.done ? o.done : o;
}

function attrKey(a: Readonly<Record<string, AttrValue>>): string {
  const keys = Object.keys(a);
  if (keys.length === 0) return '';
  return keys.sort().map((k) => {
    const v = a[k];
    return `${k}=${v.kind === 'ints' ? `[${v.value}]` : v.value}`;
  }).join(';');
}

/**
 * Orders every node the outputs need (inputs first), names them and builds the key. Leaves
 * are numbered by first use, so the same structure over different data gives the same key.
 */
export function compileGraph(outputs: readonly GraphNode[], opset: number, irVersion: number, embedBudget = Infinity): CompiledGraph {
  const order: GraphNode[] = [];
  const nodeIndex = new Map<GraphNode, number>();
  const leafName = new Map<Leaf, string>();
  const feeds: CompiledGraph['feeds'] = [];
  const consts: ConstLeaf[] = [];
  const embedded: DataLeaf[] = [];
  const keyParts: string[] = [];

  const nameOfLeaf = (l: Leaf): string => {
    let n = leafName.get(l);
    if (n !== undefined) return n;
    if (l.kind === 'const') {
      n = `c${consts.length}`;
      consts.push(l);
      keyParts.push(`${n}:${l.key}`);
    } else if (l.kind === 'data' && l.initializer) {
      n = `w${embedded.length}`;
      embedded.push(l);
      keyParts.push(`${n}:${l.initializer}:${l.elemType}[${l.shape}]`);
    } else {
      n = `i${feeds.length}`;
      feeds.push({ name: n, leaf: l });
      keyParts.push(`${n}:${l.kind}:${l.elemType}[${l.shape}]`);
    }
    leafName.set(l, n);
    return n;
  };

  // Iterative post-order DFS (model graphs are deep; recursion could overflow the stack).
  const visiting = new Set<GraphNode>();
  for (const out of outputs) {
    const stack: Array<{ node: GraphNode; next: number }> = [{ node: out, next: 0 }];
    while (stack.length) {
      const top = stack[stack.length - 1];
      if (nodeIndex.has(top.node)) { stack.pop(); continue; }
      visiting.add(top.node);
      let pushed = false;
      while (top.next < top.node.inputs.length) {
        const inp = resolve(top.node.inputs[top.next++]);
        if (inp.kind === 'node' && !nodeIndex.has(inp)) {
          if (visiting.has(inp)) throw new Error('onnx backend: cycle in the pending graph');
          stack.push({ node: inp, next: 0 });
          pushed = true;
          break;
        }
      }
      if (pushed) continue;
      stack.pop();
      visiting.delete(top.node);
      const inNames = top.node.inputs.map((i0) => {
        const i = resolve(i0);
        return i.kind === 'node' ? `v${nodeIndex.get(i)}` : nameOfLeaf(i);
      });
      const idx = order.length;
      nodeIndex.set(top.node, idx);
      order.push(top.node);
      keyParts.push(`v${idx}=${top.node.domain}${top.node.op}(${inNames.join(',')}){${attrKey(top.node.attrs)}}[${top.node.shape}]`);
    }
  }

  const outputNames: string[] = [];
  const outputInfos: ProtoValueInfo[] = [];
  const named = new Set<string>();
  for (const out of outputs) {
    const base = `v${nodeIndex.get(out)}`;
    outputNames.push(base);
    if (named.has(base)) continue;
    named.add(base);
    outputInfos.push({ name: base, elemType: elem(out.elemType), dims: out.shape });
  }
  keyParts.push(`out:${outputNames.join(',')}`);

  const model = (): Uint8Array => {
    const nodes: ProtoNode[] = order.map((n, i) => ({
      opType: n.op,
      inputs: n.inputs.map((i0) => {
        const inp = resolve(i0);
        return inp.kind === 'node' ? `v${nodeIndex.get(inp)}` : leafName.get(inp)!;
      }),
      outputs: [`v${i}`],
      attributes: n.attrs,
      domain: n.domain || undefined,
    }));
    const domains: Record<string, number> = {};
    for (const n of order) if (n.domain) domains[n.domain] = 1;
    const initializers: ProtoTensor[] = consts.map((c, i) => ({
      name: `c${i}`,
      dims: c.shape,
      dataType: c.elemType === 'int64' ? ONNX_INT64 : ONNX_FLOAT,
      raw: c.elemType === 'int64' ? int64Bytes(c.values) : float32Bytes(c.values),
    }));
    for (const [i, l] of embedded.entries()) {
      const ext = external.get(l);
      initializers.push(ext
        ? { name: `w${i}`, dims: l.shape, dataType: elem(l.elemType), external: { location: ext.path, offset: 0, length: ext.data.byteLength } }
        : { name: `w${i}`, dims: l.shape, dataType: elem(l.elemType), raw: bytesOf(l) });
    }
    const inputs: ProtoValueInfo[] = feeds.map((f) => ({
      name: f.name, elemType: elem(f.leaf.elemType), dims: f.leaf.shape,
    }));
    return encodeModel({ irVersion, opset, domains, nodes, initializers, inputs, outputs: outputInfos });
  };

  const embeddedBytes = embedded.reduce((n, l) => n + l.data.byteLength, 0);
  // Initializers are embedded in order while they fit the budget; the rest become external
  // data under their unique initializer names (the same data for every model of this key).
  const external = new Map<DataLeaf, { path: string; data: Uint8Array }>();
  let inModel = 0;
  for (const l of embedded) {
    if (inModel + l.data.byteLength <= embedBudget) inModel += l.data.byteLength;
    else external.set(l, { path: `${l.initializer}.bin`, data: bytesOf(l) });
  }
  return { key: keyParts.join('\n'), model, feeds, outputNames, nodeCount: order.length, embeddedBytes, externalData: [...external.values()] };
}

function bytesOf(l: DataLeaf): Uint8Array {
  return new Uint8Array(l.data.buffer, l.data.byteOffset, l.data.byteLength);
}

function elem(t: ElemType): number {
  switch (t) {
    case 'int64': return ONNX_INT64;
    case 'float16': return ONNX_FLOAT16;
    case 'int8': return ONNX_INT8;
    case 'uint8': return ONNX_UINT8;
    default: return ONNX_FLOAT;
  }
}
