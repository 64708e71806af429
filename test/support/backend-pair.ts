/**
 * A backend under test beside the reference: the same host data uploaded to both, an op run on
 * both and compared (normalized MSE against a limit), and the worst error per op kept for the
 * suite's summary.
 */
import { expect } from 'chai';
import { ReferenceBackend } from '../../src/backends/reference/reference-backend.js';
import { compare } from '../../src/conformance/compare.js';
import type { Tensor, TensorBackend, TensorOps } from '../../src/interfaces/tensor-backend.js';
import { withDefaultOps } from '../../src/ops/with-default-ops.js';
import { rand, sizeOf } from './seeded-values.js';

export class BackendPair<B extends TensorBackend> {
  /** The subject's uploads since the last release(). */
  private readonly inputs: Tensor[] = [];

  constructor(readonly subject: B, readonly ref: ReferenceBackend) {}

  up(data: Float32Array, shape: readonly number[]): [Tensor, Tensor] {
    const t = this.subject.upload(data, shape);
    this.inputs.push(t);
    return [t, this.ref.upload(data, shape)];
  }

  rand(shape: readonly number[], seed: number, scale = 1): [Tensor, Tensor] {
    return this.up(rand(sizeOf(shape), seed, scale), shape);
  }

  /** Runs `op` on `on` (the subject by default) and on the reference; checks shapes and returns the normalized MSE. */
  async check(op: (b: TensorOps, x: Tensor[]) => Tensor, inputs: Array<[Tensor, Tensor]>, limit: number, on: TensorBackend = this.subject): Promise<number> {
    const a = op(withDefaultOps(on), inputs.map((p) => p[0]));
    const b = op(this.ref, inputs.map((p) => p[1]));
    expect([...a.shape]).to.deep.equal([...b.shape]);
    const c = compare(await on.read(a), await this.ref.read(b));
    on.dispose(a);
    expect(c.problem).to.equal('');
    expect(c.error, `nmse ${c.error}`).to.be.at.most(limit);
    return c.error;
  }

  /** Disposes the subject's uploads made through up() and rand(). */
  release(): void {
    this.subject.dispose(this.inputs.splice(0));
  }
}

/** Worst normalized MSE seen per op. */
export class WorstErrors {
  private readonly worst = new Map<string, number>();

  note(op: string, e: number): void {
    this.worst.set(op, Math.max(this.worst.get(op) ?? 0, e));
  }

  /** Prints a heading and one line per op, when anything was noted. */
  print(heading: string, width: number): void {
    if (this.worst.size === 0) return;
    console.log(heading);
    for (const [op, e] of this.worst) console.log(`        ${op.padEnd(width)} ${e.toExponential(2)}`);
  }
}

/** A backend refuses another backend's tensors, and its own once disposed. */
export function expectOwnershipChecks(b: TensorBackend): void {
  const foreign = new ReferenceBackend().zeros([2]);
  expect(() => b.add(foreign, foreign)).to.throw(/does not belong/);
  const t = b.zeros([2]);
  b.dispose(t);
  expect(() => b.scale(t, 2)).to.throw(/after dispose/);
}
