/**
 * Optimizers work on named parameters and their gradients, with a serializable state,
 * so the same optimizer can drive parameters that live in this process, on a worker
 * thread or on another host.
 *
 * Element-wise optimizers (SGD, momentum, Adam, ...) update each parameter from its own
 * gradient and state alone, so they may run where the parameters live: the coordinator
 * sends (spec, lr, step count) and every host runs the very same `update` arithmetic,
 * which keeps placements bit-identical. Each one writes only its update; the loop,
 * the state bookkeeping and the validation are shared here (as tinygrad's optim does).
 */
import { ChainruleError } from '../errors.js';
import { backend, type OptimizerKernels } from '../tensor/backend.js';
import type { Data } from '../tensor/tensor.js';

export interface OptimizerSpec {
  type: string;
  lr: number;
  [hyperparameter: string]: number | string | boolean;
}

export interface OptimizerState {
  type: string;
  /** Steps taken (1-based inside update). */
  t: number;
  /** Per parameter name, per slot name, the slot's values. */
  slots: Record<string, Record<string, number[] | Float32Array>>;
}

export class OptimizerError extends ChainruleError {
  constructor(message: string) {
    super('BAD_OPTIMIZER', message);
  }
}

/** A parameter as an optimizer sees it: its values (updated in place) and its gradient. */
/** A parameter to update: with `lo`/`hi`, only elements [lo, hi) of it (a replica's share of a shared update). */
export interface ParamRef { name: string; value: Data; grad: Data | null; lo?: number; hi?: number }

/** Where a parameter's slot j (of length n) lives, when not in arrays of the optimizer's own: shared memory, say. */
export type SlotStorage = (name: string, j: number, n: number) => Data;

export abstract class ElementwiseOptimizer {
  /** Names of the per-parameter state buffers (e.g. ['m', 'v'] for Adam). */
  abstract readonly slotNames: readonly string[];
  private slots = new Map<string, Record<string, Data>>();
  t = 0;
  /** Set before the first step: the slots go there (each parameter's its own view). */
  storage: SlotStorage | null = null;

  constructor(readonly spec: OptimizerSpec) {
    if (!(Number.isFinite(spec.lr) && spec.lr > 0)) throw new OptimizerError(`optimizer.lr must be a positive number, got ${spec.lr}`);
  }

  /**
   * Updates p in place from g·scale (and s, this parameter's slots) at step t (1-based).
   * The scaled gradient g[i]·scale is rounded to g's precision (Math.fround for float32), as
   * if it had been stored, so that loops and fused kernels agree to the bit. `fresh` is true
   * when this parameter's slots were just created (zero-filled): PyTorch initializes some
   * buffers from the first gradient instead (the momentum buffer).
   */
  protected abstract update(p: Data, g: Data, s: Record<string, Data>, lr: number, t: number, fresh: boolean, scale: number): void;

  /**
   * One step over params: gradients are multiplied by gradScale first (the one place
   * where summed micro-batch gradients are scaled). A parameter without a gradient is skipped.
   */
  step(params: Iterable<ParamRef>, opts: { lr?: number; gradScale?: number } = {}): void {
    const lr = opts.lr ?? this.spec.lr;
    const scale = opts.gradScale ?? 1;
    this.t++;
    for (const { name, value, grad, lo = 0, hi = value.length } of params) {
      if (grad === null) continue;
      if (grad.length !== value.length) throw new OptimizerError(`optimizer: gradient of ${name} has ${grad.length} elements, the parameter ${value.length}`);
      const fresh = !this.slots.has(name);
      const slots = this.slotsFor(name, value);
      if (hi <= lo) continue;
      // The scale is applied inside the update (one pass over memory, not two). Element-wise,
      // so a part gets the bits the whole would.
      const part = lo === 0 && hi === value.length ? slots : Object.fromEntries(Object.entries(slots).map(([k, v]) => [k, v.subarray(lo, hi)]));
      this.update(lo === 0 && hi === value.length ? value : value.subarray(lo, hi), lo === 0 && hi === grad.length ? grad : grad.subarray(lo, hi), part, lr, this.t, fresh, scale);
    }
  }

  private slotsFor(name: string, value: Data): Record<string, Data> {
    let s = this.slots.get(name);
    if (!s) {
      s = {};
      for (const [j, k] of this.slotNames.entries()) s[k] = this.storage ? this.storage(name, j, value.length) : new (value.constructor as { new(n: number): Data })(value.length);
      this.slots.set(name, s);
    }
    return s;
  }

  /** The state without copies (the live slot arrays): for a commit that copies it at once. */
  peekState(): { type: string; t: number; slots: Record<string, Record<string, Data>> } {
    const slots: Record<string, Record<string, Data>> = {};
    for (const [name, s] of this.slots) slots[name] = s;
    return { type: this.spec.type, t: this.t, slots };
  }

  getState(): OptimizerState {
    const slots: OptimizerState['slots'] = {};
    for (const [name, s] of this.slots) {
      slots[name] = {};
      for (const [k, v] of Object.entries(s)) slots[name]![k] = Float32Array.from(v);
    }
    return { type: this.spec.type, t: this.t, slots };
  }

  /**
   * `own(name)`: with storage shared among replicas, the part [lo, hi) of each parameter's slots
   * this one writes (the others write theirs, maybe while this one updates its own).
   */
  setState(state: OptimizerState, own?: (name: string) => { lo: number; hi: number }): void {
    if (state.type !== this.spec.type) throw new OptimizerError(`optimizer state is for '${state.type}', not '${this.spec.type}'`);
    this.t = state.t;
    this.slots.clear();
    for (const [name, s] of Object.entries(state.slots)) {
      const copy: Record<string, Data> = {};
      for (const [k, v] of Object.entries(s)) {
        const j = this.slotNames.indexOf(k);
        if (!this.storage || j < 0) { copy[k] = Float32Array.from(v); continue; }
        const at = this.storage(name, j, v.length);
        const { lo, hi } = own?.(name) ?? { lo: 0, hi: v.length };
        at.set((v instanceof Float32Array ? v : Float32Array.from(v)).subarray(lo, hi), lo);
        copy[k] = at;
      }
      this.slots.set(name, copy);
    }
  }
}

/**
 * A numeric hyperparameter with its default, checked where it enters:
 * `hyper(spec, 'beta1', 0.9, (v) => v >= 0 && v < 1, 'in [0, 1)')` throws
 * `adam.beta1 must be in [0, 1), got 1.5`.
 */
export function hyper(spec: OptimizerSpec, name: string, fallback: number, check: (v: number) => boolean, what: string): number {
  const v = spec[name] ?? fallback;
  if (typeof v !== 'number' || !check(v)) throw new OptimizerError(`${spec.type}.${name} must be ${what}, got ${JSON.stringify(spec[name])}`);
  return v;
}

/** A boolean hyperparameter (`nesterov`, `centered`, `amsgrad`) with its default. */
export function flag(spec: OptimizerSpec, name: string, fallback: boolean): boolean {
  const v = spec[name] ?? fallback;
  if (typeof v !== 'boolean') throw new OptimizerError(`${spec.type}.${name} must be true or false, got ${JSON.stringify(spec[name])}`);
  return v;
}

/**
 * Rejects hyperparameters the optimizer does not know, so a typo (`betas1`) fails
 * instead of silently training with the default.
 */
export function knownKeys(spec: OptimizerSpec, names: readonly string[]): void {
  const known = new Set(['type', 'lr', ...names]);
  for (const k of Object.keys(spec)) {
    if (!known.has(k)) throw new OptimizerError(`${spec.type} has no hyperparameter '${k}'; known: ${[...known].filter((n) => n !== 'type').join(', ')}`);
  }
}

/**
 * The backend's fused kernels when p, g and every slot are float32 (so that they can run
 * there), else null and the optimizer runs its own TypeScript loop.
 */
export function fusedKernels(p: Data, g: Data, s: Record<string, Data>): OptimizerKernels | null {
  const k = backend().optimizer;
  if (!k || !(p instanceof Float32Array) || !(g instanceof Float32Array)) return null;
  for (const key in s) if (!(s[key] instanceof Float32Array)) return null;
  return k;
}

