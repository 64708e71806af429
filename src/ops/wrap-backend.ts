/**
 * One backend in front of another without naming its methods: every member of `inner` that the
 * shell does not define is forwarded (methods bound to `inner`, optional ones included), so a
 * fused `attention` or `rmsNorm` of the inner backend survives the wrapping, and so does any
 * method the interface gains later. Plugins use it (a profiler, a tracer); so does
 * `withDefaultOps`, whose shell holds the default composites.
 *
 * ```ts
 * const traced = wrapBackend(inner, { name: 'traced' }, (op, args, call) => { console.log(op); return call(); });
 * ```
 */
import type { TensorBackend } from '../interfaces/tensor-backend.js';

/** Runs one forwarded call (`call()` runs it on the inner backend) and returns its result. */
export type AroundCall = (op: string, args: readonly unknown[], call: () => unknown) => unknown;

/**
 * A proxy whose members are the shell's where it has them (own or inherited), else inner's.
 * Writes go to the shell. `around`, when given, sees every forwarded method call.
 */
export function wrapBackend<S extends object>(inner: TensorBackend, shell: S, around?: AroundCall): S & TensorBackend {
  const forwarded = new Map<PropertyKey, unknown>();
  return new Proxy(shell, {
    get(target, prop, receiver) {
      if (prop in target) return Reflect.get(target, prop, receiver);
      const value: unknown = Reflect.get(inner, prop, inner);
      if (typeof value !== 'function') return value;
      let f = forwarded.get(prop);
      if (f === undefined || (f as { source?: unknown }).source !== value) {
        const bound = (value as (...args: unknown[]) => unknown).bind(inner);
        const op = String(prop);
        const g = around ? (...args: unknown[]) => around(op, args, () => bound(...args)) : bound;
        Object.defineProperty(g, 'source', { value });
        forwarded.set(prop, f = g);
      }
      return f;
    },
    has(target, prop) {
      return prop in target || prop in inner;
    },
  }) as S & TensorBackend;
}
