/**
 * Nonlinear conjugate gradient (Nocedal & Wright ch. 5.2) with the strong-Wolfe search:
 * Polak–Ribière+ (β = max(0, g₁·(g₁ − g₀)/‖g₀‖²)) or Fletcher–Reeves (β = ‖g₁‖²/‖g₀‖²),
 * restarted with steepest descent every `restartEvery` iterations, whenever the new
 * direction is not a descent direction, and (FR) when successive gradients lose
 * orthogonality, |g₁·g₀| ≥ 0.1‖g₁‖² (N&W eq. 5.52).
 *
 * NOTE: CG ends in n iterations on an n-dimensional quadratic only with exact line
 * searches; the interpolation is exact on a quadratic, so a tight
 * `lineSearch: { c1: 1e-7, c2: 1e-6 }` gets that at about one extra evaluation per
 * iteration (measured: 10 iterations, ~23 evaluations on n = 10, condition 100, where
 * the default c2 = 0.1 took 15–43 iterations and 32–90 evaluations).
 *
 * @example const r = await minimizeCG(objective, x0, { variant: 'PR+', maxIter: 200, tol: 1e-6 });
 */
import { checkStart, dot, Evaluator, MinimizeError, norm, normInf, report, result, type Evaluated, type MinimizeOptions, type MinimizeResult, type Objective } from './objective.js';
import { lineSearchOptions, strongWolfe } from './linesearch.js';

export interface CGOptions extends MinimizeOptions {
  /** Default 'PR+'. */
  variant?: 'PR+' | 'FR';
  /** Restart with steepest descent every this many iterations. Default: the objective's size. */
  restartEvery?: number;
}

export async function minimizeCG(obj: Objective, x0: Float64Array, opts: CGOptions = {}): Promise<MinimizeResult> {
  const method = 'cg';
  const { maxIter, tol } = checkStart(method, obj, x0, opts, Math.max(100, 10 * obj.size));
  const variant = opts.variant ?? 'PR+';
  if (variant !== 'PR+' && variant !== 'FR') throw new MinimizeError('BAD_INPUT', `${method}: options.variant must be 'PR+' or 'FR', got ${JSON.stringify(variant)}`);
  const restartEvery = opts.restartEvery ?? obj.size;
  if (!(Number.isInteger(restartEvery) && restartEvery > 0)) throw new MinimizeError('BAD_INPUT', `${method}: options.restartEvery must be a positive integer, got ${restartEvery}`);
  const ls = lineSearchOptions(method, opts.lineSearch, 0.1);

  const ev = new Evaluator(method, obj);
  let x: Float64Array = Float64Array.from(x0);
  let cur: Evaluated = await ev.evaluate(x);
  const history = [cur.loss];
  let d = negate(cur.grad);
  let sinceRestart = 0;
  let prevStep = NaN; // α·(g·d) of the last iteration, for the initial step (N&W eq. 3.60)
  for (let k = 1; k <= maxIter; k++) {
    if (norm(cur.grad) <= tol) return result(ev, x, cur, k - 1, history, tol, 'gradient norm ≤ tol');
    ev.iteration = k;
    let gd = dot(cur.grad, d);
    let alpha0 = Number.isFinite(prevStep) ? 1.01 * prevStep / gd : Math.min(1, 1 / normInf(cur.grad));
    let ls1 = await strongWolfe(ev, x, cur, d, alpha0, ls);
    if (!ls1.point && sinceRestart > 0) {
      d = negate(cur.grad);
      gd = dot(cur.grad, d);
      alpha0 = Math.min(1, 1 / normInf(cur.grad));
      sinceRestart = 0;
      ls1 = await strongWolfe(ev, x, cur, d, alpha0, ls);
    }
    const p = ls1.point;
    if (!p) return result(ev, x, cur, k - 1, history, tol, 'line search found no decrease');
    prevStep = p.alpha * gd;
    const g0 = cur.grad, g1 = p.grad;
    const g0g0 = dot(g0, g0), g1g1 = dot(g1, g1), g1g0 = dot(g1, g0);
    sinceRestart++;
    let beta = variant === 'FR' ? g1g1 / g0g0 : Math.max(0, (g1g1 - g1g0) / g0g0);
    if (sinceRestart >= restartEvery || (variant === 'FR' && Math.abs(g1g0) >= 0.1 * g1g1)) beta = 0;
    const nd = new Float64Array(d.length);
    for (let i = 0; i < nd.length; i++) nd[i] = -g1[i]! + beta * d[i]!;
    if (beta === 0 || !(dot(g1, nd) < 0)) {
      for (let i = 0; i < nd.length; i++) nd[i] = -g1[i]!;
      sinceRestart = 0;
    }
    d = nd;
    x = p.x;
    cur = p;
    history.push(cur.loss);
    if (await report(opts, ev, x, cur)) return result(ev, x, cur, k, history, tol, 'stopped by onIteration');
  }
  return result(ev, x, cur, maxIter, history, tol, norm(cur.grad) <= tol ? 'gradient norm ≤ tol' : 'maxIter reached');
}

function negate(g: Float64Array): Float64Array {
  const out = new Float64Array(g.length);
  for (let i = 0; i < g.length; i++) out[i] = -g[i]!;
  return out;
}
