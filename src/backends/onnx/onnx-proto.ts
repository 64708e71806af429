/**
 * A small protobuf writer for the few ONNX messages the ONNX backend emits (ModelProto,
 * GraphProto, NodeProto, AttributeProto, TensorProto, ValueInfoProto). Field numbers follow
 * onnx.proto; only what the backend's graphs use is written. No dependency on a protobuf library.
 */

/** ONNX TensorProto.DataType values the backend uses. */
export const ONNX_FLOAT = 1;
export const ONNX_UINT8 = 2;
export const ONNX_INT8 = 3;
export const ONNX_INT64 = 7;
export const ONNX_FLOAT16 = 10;
export const ONNX_BFLOAT16 = 16;

export type AttrValue =
  | { kind: 'int'; value: number }
  | { kind: 'float'; value: number }
  | { kind: 'ints'; value: readonly number[] }
  | { kind: 'string'; value: string };

export interface ProtoTensor {
  name: string;
  dims: readonly number[];
  dataType: number;
  /** Little-endian raw bytes (absent when `external` says where they are). */
  raw?: Uint8Array;
  /**
   * The bytes are in a file next to the model instead (TensorProto.data_location EXTERNAL):
   * `location` relative to the model's folder, at `offset`, `length` bytes. A model whose
   * tensors live outside it is not bound by protobuf's 2 GiB message limit.
   */
  external?: { location: string; offset: number; length: number };
}

export interface ProtoNode {
  opType: string;
  inputs: readonly string[];
  outputs: readonly string[];
  attributes?: Readonly<Record<string, AttrValue>>;
  /** Operator domain; '' (the default ONNX domain) when absent, e.g. 'com.microsoft' for contrib ops. */
  domain?: string;
}

export interface ProtoValueInfo {
  name: string;
  elemType: number;
  dims: readonly number[];
}

export interface ProtoModel {
  irVersion: number;
  opset: number;
  /** Extra operator sets, e.g. { 'com.microsoft': 1 }. */
  domains?: Readonly<Record<string, number>>;
  nodes: readonly ProtoNode[];
  initializers: readonly ProtoTensor[];
  inputs: readonly ProtoValueInfo[];
  outputs: readonly ProtoValueInfo[];
}

/** Growable byte buffer with protobuf primitives. */
class Writer {
  private buf = new Uint8Array(1024);
  private len = 0;

  private ensure(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  /** Unsigned varint; negative int64 values are written as their 10-byte two's complement. */
  varint(v: number): void {
    this.ensure(10);
    if (v < 0) {
      let big = BigInt.asUintN(64, BigInt(v));
      while (big >= 0x80n) { this.buf[this.len++] = Number(big & 0x7fn) | 0x80; big >>= 7n; }
      this.buf[this.len++] = Number(big);
      return;
    }
    while (v >= 0x80) {
      this.buf[this.len++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[this.len++] = v;
  }

  tag(field: number, wire: number): void { this.varint(field * 8 + wire); }

  bytes(field: number, data: Uint8Array): void {
    this.tag(field, 2);
    this.varint(data.length);
    this.ensure(data.length);
    this.buf.set(data, this.len);
    this.len += data.length;
  }

  string(field: number, s: string): void { this.bytes(field, TEXT.encode(s)); }

  int(field: number, v: number): void { this.tag(field, 0); this.varint(v); }

  float(field: number, v: number): void {
    this.tag(field, 5);
    this.ensure(4);
    new DataView(this.buf.buffer, this.buf.byteOffset + this.len, 4).setFloat32(0, v, true);
    this.len += 4;
  }

  /** Packed repeated varints. */
  packed(field: number, vs: readonly number[]): void {
    const inner = new Writer();
    for (const v of vs) inner.varint(v);
    this.bytes(field, inner.finish());
  }

  message(field: number, build: (w: Writer) => void): void {
    const inner = new Writer();
    build(inner);
    this.bytes(field, inner.finish());
  }

  finish(): Uint8Array { return this.buf.subarray(0, this.len); }
}

const TEXT = new TextEncoder();

const ATTR_FLOAT = 1, ATTR_INT = 2, ATTR_STRING = 3, ATTR_INTS = 7;

function writeAttribute(w: Writer, name: string, a: AttrValue): void {
  w.string(1, name);
  switch (a.kind) {
    case 'float': w.float(2, a.value); w.int(20, ATTR_FLOAT); break;
    case 'int': w.int(3, a.value); w.int(20, ATTR_INT); break;
    case 'string': w.bytes(4, TEXT.encode(a.value)); w.int(20, ATTR_STRING); break;
    case 'ints': w.packed(8, a.value); w.int(20, ATTR_INTS); break;
  }
}

function writeNode(w: Writer, n: ProtoNode, index: number): void {
  for (const i of n.inputs) w.string(1, i);
  for (const o of n.outputs) w.string(2, o);
  w.string(3, `n${index}`);
  w.string(4, n.opType);
  for (const [name, a] of Object.entries(n.attributes ?? {})) w.message(5, (aw) => writeAttribute(aw, name, a));
  if (n.domain) w.string(7, n.domain);
}

function writeTensor(w: Writer, t: ProtoTensor): void {
  if (t.dims.length) w.packed(1, t.dims);
  w.int(2, t.dataType);
  w.string(8, t.name);
  if (t.external) {
    const entry = (key: string, value: string) => w.message(13, (e) => { e.string(1, key); e.string(2, value); });
    entry('location', t.external.location);
    entry('offset', String(t.external.offset));
    entry('length', String(t.external.length));
    w.int(14, 1);                                                         // DataLocation.EXTERNAL
  } else {
    w.bytes(9, t.raw ?? new Uint8Array(0));
  }
}

function writeValueInfo(w: Writer, v: ProtoValueInfo): void {
  w.string(1, v.name);
  w.message(2, (type) => type.message(1, (tensor) => {
    tensor.int(1, v.elemType);
    tensor.message(2, (shape) => {
      for (const d of v.dims) shape.message(1, (dim) => dim.int(1, d));
    });
  }));
}

/** Serialises a ModelProto with one graph. */
export function encodeModel(m: ProtoModel): Uint8Array {
  const w = new Writer();
  w.int(1, m.irVersion);
  w.string(2, 'paligemma-sdk');
  w.message(7, (g) => {
    m.nodes.forEach((n, i) => g.message(1, (nw) => writeNode(nw, n, i)));
    g.string(2, 'paligemma_graph');
    for (const t of m.initializers) g.message(5, (tw) => writeTensor(tw, t));
    for (const v of m.inputs) g.message(11, (vw) => writeValueInfo(vw, v));
    for (const v of m.outputs) g.message(12, (vw) => writeValueInfo(vw, v));
  });
  w.message(8, (o) => { o.string(1, ''); o.int(2, m.opset); });
  for (const [domain, version] of Object.entries(m.domains ?? {})) w.message(8, (o) => { o.string(1, domain); o.int(2, version); });
  return w.finish();
}

/** Raw little-endian bytes of int64 values. */
export function int64Bytes(values: readonly number[]): Uint8Array {
  const out = new BigInt64Array(values.length);
  values.forEach((v, i) => { out[i] = BigInt(v); });
  return new Uint8Array(out.buffer);
}

/** Raw little-endian bytes of float32 values. */
export function float32Bytes(values: ArrayLike<number>): Uint8Array {
  return new Uint8Array(Float32Array.from(values).buffer);
}
