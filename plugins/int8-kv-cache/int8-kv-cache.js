// @ts-check
/**
 * A KV cache that keeps keys and values in host memory as int8, one float32 scale per row (per
 * position and kv head): scale = max|x| / 127, q = round(x / scale). That is 1 byte per value
 * plus 4 per row of headDim values, about a quarter of a float32 cache. Reading a layer
 * dequantizes it into one backend tensor [capacity, Hkv, D]; only one layer's keys and values
 * are held on the device at a time.
 *
 * The cache interface is synchronous and backend reads are not, so new rows take a detour:
 * write() keeps a float32 copy of them on the device, advance() reads every copy of the step back
 * in one read(), and when that read lands the rows are quantized and the copies freed. Until
 * then the rows are served from the float32 copy. On the reference backend the read lands while
 * the pipeline awaits the step's logits, so a step attends to its own rows exactly and to every
 * earlier row through int8: prefill (and score, which is one prefill) matches the contiguous cache
 * exactly, and decode steps see the quantized history. On a device backend a read may land a step
 * or two later; until then those rows are simply exact.
 */

/** @import { KVCache, KVCacheSpec, KVCacheStore, Tensor, TensorBackend } from 'paligemma-sdk' */

/**
 * @typedef {{ q: Int8Array, scale: Float32Array }} QuantizedRows
 * @typedef {{ offset: number, rows: number, k: Tensor, v: Tensor }} Chunk  float32 rows awaiting their int8 copy
 */

/** @implements {KVCache} */
export class Int8KvCache {
  /** @param {TensorBackend} backend @param {KVCacheSpec} spec */
  constructor(backend, spec) {
    this.backend = backend;
    this.spec = spec;
    const rows = spec.capacity * spec.kvHeads;
    const quantized = () => ({ q: new Int8Array(rows * spec.headDim), scale: new Float32Array(rows) });
    /** @type {{ k: QuantizedRows, v: QuantizedRows }[]} */
    this.layers = Array.from({ length: spec.layers }, () => ({ k: quantized(), v: quantized() }));
    /** Positions [0, n) of each layer hold int8 data. */
    this.quantizedLength = new Int32Array(spec.layers);
    /** @type {Chunk[][]} per layer, rows still served from their float32 copy */
    this.pending = Array.from({ length: spec.layers }, () => []);
    /** @type {{ layer: number, chunk: Chunk }[]} written, not yet read back */
    this.unread = [];
    /** @type {{ layer: number, k?: Tensor, v?: Tensor } | undefined} the dequantized layer last handed out */
    this.view = undefined;
    this.scratch = new Float32Array(rows * spec.headDim);
    this.committed = 0;
    /** Bumped by reset()/dispose(): a read that lands afterwards is dropped. */
    this.generation = 0;
    /** @type {unknown} */
    this.failure = undefined;
  }

  get capacity() { return this.spec.capacity; }
  get length() { return this.committed; }

  /** Host bytes of the int8 storage and its scales (the device holds one layer at a time). */
  get bytes() {
    const { layers, capacity, kvHeads, headDim } = this.spec;
    return 2 * layers * capacity * kvHeads * (headDim + 4);
  }

  /** @param {number} layer @param {Tensor} k @param {Tensor} v  k, v [T, Hkv, D] */
  write(layer, k, v) {
    this.throwIfFailed();
    const t = k.shape[0];
    if (this.committed + t > this.spec.capacity) {
      throw new Error(`KV cache overflow: ${this.committed} + ${t} > capacity ${this.spec.capacity}`);
    }
    this.releaseView();
    // Copies: the caller frees k and v once the layer is done.
    const chunk = {
      offset: this.committed, rows: t,
      k: this.backend.slice(k, 0, 0, t), v: this.backend.slice(v, 0, 0, t),
    };
    this.pending[layer].push(chunk);
    this.unread.push({ layer, chunk });
  }

  /** @param {number} layer */
  keys(layer) { return this.dequantized(layer, 'k'); }
  /** @param {number} layer */
  values(layer) { return this.dequantized(layer, 'v'); }

  /** @param {number} t */
  advance(t) {
    this.committed += t;
    this.readBack();
  }

  reset() {
    this.generation++;
    this.releaseView();
    for (const chunks of this.pending) {
      for (const c of chunks) this.backend.dispose([c.k, c.v]);
      chunks.length = 0;
    }
    this.unread.length = 0;
    this.quantizedLength.fill(0);
    this.committed = 0;
    this.failure = undefined;
  }

  dispose() {
    this.reset();
    this.layers.length = 0;
  }

  /** @private Sends every unread chunk to the host in one read; quantizes them when it lands. */
  readBack() {
    const batch = this.unread.splice(0);
    if (batch.length === 0) return;
    const b = this.backend;
    const parts = batch.flatMap(({ chunk }) => [chunk.k, chunk.v]);                 // each [T, Hkv, D]
    const all = b.concat(parts, 0);                                                  // [ΣT, Hkv, D]
    const generation = this.generation;
    b.read(all).then((data) => {
      b.dispose(all);
      if (generation !== this.generation) return;
      const rowSize = this.spec.kvHeads * this.spec.headDim;
      let at = 0;
      for (const { layer, chunk } of batch) {
        const n = chunk.rows * rowSize;
        const start = chunk.offset * this.spec.kvHeads;
        quantizeRows(data.subarray(at, at + n), this.layers[layer].k, start, this.spec.headDim);
        quantizeRows(data.subarray(at + n, at + 2 * n), this.layers[layer].v, start, this.spec.headDim);
        at += 2 * n;
        this.pending[layer].splice(this.pending[layer].indexOf(chunk), 1);
        b.dispose([chunk.k, chunk.v]);
        this.quantizedLength[layer] = Math.max(this.quantizedLength[layer], chunk.offset + chunk.rows);
      }
    }, (e) => {
      b.dispose(all);
      if (generation === this.generation) this.failure = e;
    });
  }

  /** @private @param {number} layer @param {'k' | 'v'} which @returns {Tensor} */
  dequantized(layer, which) {
    this.throwIfFailed();
    if (this.view?.layer !== layer) {
      this.releaseView();
      this.view = { layer };
    }
    const view = /** @type {{ layer: number, k?: Tensor, v?: Tensor }} */ (this.view);
    const cached = view[which];
    if (cached) return cached;
    const { kvHeads, headDim, capacity } = this.spec;
    const { q, scale } = this.layers[layer][which];
    const rows = this.quantizedLength[layer] * kvHeads;
    for (let r = 0; r < rows; r++) {
      const s = scale[r], o = r * headDim;
      for (let x = 0; x < headDim; x++) this.scratch[o + x] = q[o + x] * s;
    }
    this.scratch.fill(0, rows * headDim);
    const out = this.backend.upload(this.scratch, [capacity, kvHeads, headDim]);     // [capacity, Hkv, D]
    for (const chunk of this.pending[layer]) this.backend.writeRows(out, chunk[which], chunk.offset);
    view[which] = out;
    return out;
  }

  /** @private */
  releaseView() {
    if (!this.view) return;
    const held = [this.view.k, this.view.v].filter((t) => t !== undefined);
    if (held.length) this.backend.dispose(/** @type {Tensor[]} */ (held));
    this.view = undefined;
  }

  /** @private */
  throwIfFailed() {
    if (this.failure !== undefined) {
      const message = String(/** @type {Error} */ (this.failure)?.message ?? this.failure).split('\n')[0];
      throw new Error(`int8 KV cache: reading rows back from the backend failed: ${message}`);
    }
  }
}

/**
 * Quantizes rows of `src` (each `d` values) into `dst` from row `start` on: one scale per row,
 * max|x| / 127; an all-zero row gets scale 0.
 * @param {Float32Array} src @param {QuantizedRows} dst @param {number} start @param {number} d
 */
export function quantizeRows(src, dst, start, d) {
  const rows = src.length / d;
  for (let r = 0; r < rows; r++) {
    const o = r * d;
    let max = 0;
    for (let x = 0; x < d; x++) max = Math.max(max, Math.abs(src[o + x]));
    const scale = max / 127;
    dst.scale[start + r] = scale;
    const inv = scale > 0 ? 1 / scale : 0;
    const out = (start + r) * d;
    for (let x = 0; x < d; x++) dst.q[out + x] = Math.max(-127, Math.min(127, Math.round(src[o + x] * inv)));
  }
}

/** @implements {KVCacheStore} */
export class Int8KvCacheStore {
  name = 'int8';
  /** @param {TensorBackend} backend @param {KVCacheSpec} spec */
  create(backend, spec) {
    return new Int8KvCache(backend, spec);
  }
}
