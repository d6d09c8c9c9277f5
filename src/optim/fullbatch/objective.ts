/**
 * Full-batch minimization from the coordinator: all parameters as one flat Float64Array,
 * the loss and gradient over the whole data set from one `evaluate` call (which may fan
 * out to every actor). Global dot products and line searches need the whole vector,
 * which is why these methods run here and not where the parameters live.
 */
import { ChainruleError } from '../../errors.js';

export interface Objective {
  readonly size: number;
  /** Loss and gradient at x (the model's parameters, flattened in a fixed order). */
  evaluate(x: Float64Array): Promise<{ loss: number; grad: Float64Array }>;
}

export interface MinimizeResult {
  x: Float64Array;
  loss: number;
  iterations: number;
  gradEvals: number;
  lossEvals: number;
  /** True when the gradient norm reached tol. */
  converged: boolean;
  /** The loss at x0 and after each iteration (non-increasing). */
  history: number[];
  /** Why it stopped: 'gradient norm ≤ tol', 'maxIter reached', 'line search found no decrease', 'stopped by onIteration'. */
  reason: string;
}

export interface IterationInfo {
  /** 1-based. */
  iteration: number;
  loss: number;
  gradNorm: number;
  /** Gradient evaluations so far (each evaluate call counts one). */
  gradEvals: number;
  /** The current point; the minimizer keeps using it, so copy it to keep it. */
  x: Float64Array;
}

/** Return false (or a promise of false) to stop after this iteration. */
export type OnIteration = (info: IterationInfo) => void | boolean | Promise<void | boolean>;

export interface LineSearchOptions {
  /** Sufficient-decrease constant, 0 < c1 < c2 < 1. Default 1e-4. */
  c1?: number;
  /** Curvature constant: |φ'(α)| ≤ c2·|φ'(0)|. Default per method (0.1 for CG, 0.9 for quasi-Newton and Newton). */
  c2?: number;
  /** Evaluations allowed in one line search. Default 25. */
  maxEvals?: number;
  /** Largest step length tried. Default 1e10. */
  alphaMax?: number;
}

export interface MinimizeOptions {
  /** Iterations allowed. Default 100 (CG: 10·size, at least 100). */
  maxIter?: number;
  /** Stop when the gradient's Euclidean norm is at most tol. Default 1e-6. */
  tol?: number;
  lineSearch?: LineSearchOptions;
  onIteration?: OnIteration;
}

export class MinimizeError extends ChainruleError {
  constructor(code: 'NOT_FINITE' | 'BAD_INPUT', message: string) {
    super(code, message);
  }
}

export function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

export function norm(a: Float64Array): number {
  return Math.sqrt(dot(a, a));
}

export function normInf(a: Float64Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

/** x + αd as a new array. */
export function axpy(x: Float64Array, alpha: number, d: Float64Array): Float64Array {
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i]! + alpha * d[i]!;
  return out;
}

export interface Evaluated { loss: number; grad: Float64Array }

/**
 * Wraps an Objective for one minimization: counts evaluations, copies results (the
 * objective may reuse its buffers) and stops on a non-finite loss or gradient with an
 * error naming the method and the iteration being computed (0 is the start point).
 */
export class Evaluator {
  gradEvals = 0;
  lossEvals = 0;
  iteration = 0;

  constructor(readonly method: string, readonly objective: Objective) {}

  async evaluate(x: Float64Array): Promise<Evaluated> {
    const r = await this.objective.evaluate(x);
    this.gradEvals++;
    this.lossEvals++;
    const where = `at iteration ${this.iteration}`;
    if (typeof r?.loss !== 'number' || !Number.isFinite(r.loss)) {
      throw new MinimizeError('NOT_FINITE', `${this.method}: loss is ${r?.loss} ${where}`);
    }
    if (!(r.grad instanceof Float64Array) || r.grad.length !== x.length) {
      throw new MinimizeError('BAD_INPUT', `${this.method}: evaluate must return a Float64Array gradient of ${x.length} elements, got ${describe(r.grad)} ${where}`);
    }
    for (let i = 0; i < r.grad.length; i++) {
      if (!Number.isFinite(r.grad[i]!)) throw new MinimizeError('NOT_FINITE', `${this.method}: gradient is ${r.grad[i]} ${where} (element ${i})`);
    }
    return { loss: r.loss, grad: Float64Array.from(r.grad) };
  }

  /**
   * Hessian-vector product by central differences of gradients,
   * Hv ≈ (∇f(x + εv) − ∇f(x − εv)) / 2ε with ε = epsilon·max(1, ‖x‖∞)/‖v‖∞:
   * two gradient evaluations, O(ε²) truncation error, and nothing but `evaluate` needed
   * from the actors.
   */
  async hessVec(x: Float64Array, v: Float64Array, epsilon: number): Promise<Float64Array> {
    const vn = normInf(v);
    const out = new Float64Array(x.length);
    if (vn === 0) return out;
    const eps = epsilon * Math.max(1, normInf(x)) / vn;
    const plus = await this.evaluate(axpy(x, eps, v));
    const minus = await this.evaluate(axpy(x, -eps, v));
    for (let i = 0; i < out.length; i++) out[i] = (plus.grad[i]! - minus.grad[i]!) / (2 * eps);
    return out;
  }
}

function describe(g: unknown): string {
  if (g === null || g === undefined) return String(g);
  if (ArrayBuffer.isView(g)) return `${g.constructor.name} of ${(g as unknown as ArrayLike<number>).length}`;
  return typeof g;
}

/** Validates x0 and the common options where they enter. */
export function checkStart(method: string, obj: Objective, x0: Float64Array, opts: MinimizeOptions, defaultMaxIter: number): { maxIter: number; tol: number } {
  if (!(Number.isInteger(obj.size) && obj.size > 0)) throw new MinimizeError('BAD_INPUT', `${method}: objective.size must be a positive integer, got ${obj.size}`);
  if (!(x0 instanceof Float64Array) || x0.length !== obj.size) throw new MinimizeError('BAD_INPUT', `${method}: x0 must be a Float64Array of objective.size = ${obj.size} elements, got ${describe(x0)}`);
  for (let i = 0; i < x0.length; i++) if (!Number.isFinite(x0[i]!)) throw new MinimizeError('NOT_FINITE', `${method}: x0[${i}] is ${x0[i]}`);
  const maxIter = opts.maxIter ?? defaultMaxIter;
  if (!(Number.isInteger(maxIter) && maxIter >= 0)) throw new MinimizeError('BAD_INPUT', `${method}: options.maxIter must be a non-negative integer, got ${maxIter}`);
  const tol = opts.tol ?? 1e-6;
  if (!(Number.isFinite(tol) && tol >= 0)) throw new MinimizeError('BAD_INPUT', `${method}: options.tol must be a non-negative number, got ${tol}`);
  return { maxIter, tol };
}

/** Calls onIteration; true when it asked to stop. */
export async function report(opts: MinimizeOptions, ev: Evaluator, x: Float64Array, cur: Evaluated): Promise<boolean> {
  if (!opts.onIteration) return false;
  const r = await opts.onIteration({ iteration: ev.iteration, loss: cur.loss, gradNorm: norm(cur.grad), gradEvals: ev.gradEvals, x });
  return r === false;
}

export function result(ev: Evaluator, x: Float64Array, cur: Evaluated, iterations: number, history: number[], tol: number, reason: string): MinimizeResult {
  return { x, loss: cur.loss, iterations, gradEvals: ev.gradEvals, lossEvals: ev.lossEvals, converged: norm(cur.grad) <= tol, history, reason };
}
