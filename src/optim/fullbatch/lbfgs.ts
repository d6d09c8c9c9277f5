/**
 * Limited-memory BFGS (Nocedal & Wright alg. 7.4/7.5): the two-loop recursion over the
 * last `history` pairs (s, y), initial scaling γ = sᵀy / yᵀy, the strong-Wolfe search
 * (c2 = 0.9) starting from the unit step. A pair with sᵀy ≤ 1e-10‖s‖‖y‖ is skipped
 * (it would break positive definiteness); a failed search drops the memory once and
 * retries along steepest descent.
 *
 * @example const r = await minimizeLBFGS(objective, x0, { history: 10, maxIter: 500, tol: 1e-6 });
 */
import { checkStart, dot, Evaluator, MinimizeError, norm, report, result, type Evaluated, type MinimizeOptions, type MinimizeResult, type Objective } from './objective.js';
import { lineSearchOptions, strongWolfe } from './linesearch.js';

export interface LBFGSOptions extends MinimizeOptions {
  /** Correction pairs kept. Default 10. */
  history?: number;
}

export async function minimizeLBFGS(obj: Objective, x0: Float64Array, opts: LBFGSOptions = {}): Promise<MinimizeResult> {
  const method = 'lbfgs';
  const { maxIter, tol } = checkStart(method, obj, x0, opts, 100);
  const m = opts.history ?? 10;
  if (!(Number.isInteger(m) && m > 0)) throw new MinimizeError('BAD_INPUT', `${method}: options.history must be a positive integer, got ${m}`);
  const ls = lineSearchOptions(method, opts.lineSearch, 0.9);

  const ev = new Evaluator(method, obj);
  let x: Float64Array = Float64Array.from(x0);
  let cur: Evaluated = await ev.evaluate(x);
  const history = [cur.loss];
  const S: Float64Array[] = [], Y: Float64Array[] = [], R: number[] = [];
  for (let k = 1; k <= maxIter; k++) {
    if (norm(cur.grad) <= tol) return result(ev, x, cur, k - 1, history, tol, 'gradient norm ≤ tol');
    ev.iteration = k;
    let d = direction(cur.grad, S, Y, R);
    let first = S.length === 0;
    if (!(dot(cur.grad, d) < 0)) {
      S.length = Y.length = R.length = 0;
      d = direction(cur.grad, S, Y, R);
      first = true;
    }
    let search = await strongWolfe(ev, x, cur, d, first ? Math.min(1, 1 / norm(cur.grad)) : 1, ls);
    if (!search.point && S.length > 0) {
      S.length = Y.length = R.length = 0;
      d = direction(cur.grad, S, Y, R);
      search = await strongWolfe(ev, x, cur, d, Math.min(1, 1 / norm(cur.grad)), ls);
    }
    const p = search.point;
    if (!p) return result(ev, x, cur, k - 1, history, tol, 'line search found no decrease');
    const s = new Float64Array(x.length), y = new Float64Array(x.length);
    for (let i = 0; i < s.length; i++) {
      s[i] = p.x[i]! - x[i]!;
      y[i] = p.grad[i]! - cur.grad[i]!;
    }
    const sy = dot(s, y);
    if (sy > 1e-10 * norm(s) * norm(y)) {
      if (S.length === m) { S.shift(); Y.shift(); R.shift(); }
      S.push(s); Y.push(y); R.push(1 / sy);
    }
    x = p.x;
    cur = p;
    history.push(cur.loss);
    if (await report(opts, ev, x, cur)) return result(ev, x, cur, k, history, tol, 'stopped by onIteration');
  }
  return result(ev, x, cur, maxIter, history, tol, norm(cur.grad) <= tol ? 'gradient norm ≤ tol' : 'maxIter reached');
}

/** −H·g by the two-loop recursion (N&W alg. 7.4); −g when the memory is empty. */
function direction(g: Float64Array, S: Float64Array[], Y: Float64Array[], R: number[]): Float64Array {
  const q = Float64Array.from(g);
  const a = new Array<number>(S.length);
  for (let j = S.length - 1; j >= 0; j--) {
    a[j] = R[j]! * dot(S[j]!, q);
    const yj = Y[j]!;
    for (let i = 0; i < q.length; i++) q[i] = q[i]! - a[j]! * yj[i]!;
  }
  if (S.length > 0) {
    const last = S.length - 1;
    const gamma = dot(S[last]!, Y[last]!) / dot(Y[last]!, Y[last]!);
    for (let i = 0; i < q.length; i++) q[i] = q[i]! * gamma;
  }
  for (let j = 0; j < S.length; j++) {
    const b = R[j]! * dot(Y[j]!, q);
    const sj = S[j]!;
    for (let i = 0; i < q.length; i++) q[i] = q[i]! + (a[j]! - b) * sj[i]!;
  }
  for (let i = 0; i < q.length; i++) q[i] = -q[i]!;
  return q;
}
