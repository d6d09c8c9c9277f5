/**
 * Newton's method with Hessian-vector products by central differences of gradients,
 * Hv ≈ (∇f(x + εv) − ∇f(x − εv)) / 2ε (two gradient evaluations; works across actors
 * since it needs nothing but `evaluate`).
 *
 * - `minimizeNewton`: exact Newton for small models. The Hessian is assembled column by
 *   column (2n evaluations), symmetrized, and H p = −g solved by Cholesky; when H is not
 *   positive definite, τI is added with τ growing tenfold until it is (N&W alg. 3.3).
 * - `minimizeNewtonCG`: Hessian-free Newton–CG for larger ones. (H + λI) p = −g is solved
 *   by CG to a relative residual min(0.5, √‖g‖) (superlinear forcing, N&W alg. 7.1),
 *   stopping at negative curvature; λ follows Levenberg–Marquardt / Martens (2010):
 *   ×3/2 when the quadratic model predicted the decrease badly (ρ < 1/4), ×2/3 when well (ρ > 3/4).
 *
 * Both take the Newton step through the strong-Wolfe search starting at α = 1, so the
 * loss never increases and the full step is kept near the optimum (quadratic convergence).
 *
 * NOTE: the default relative difference step (6e-6 ≈ cube root of float64's epsilon)
 * suits an objective computed in float64. For parameters held in Float32Array use
 * `epsilon` ≈ 5e-3, or the differences drown in float32 rounding.
 *
 * @example const r = await minimizeNewtonCG(objective, x0, { maxIter: 100, tol: 1e-6 });
 */
import { checkStart, dot, Evaluator, MinimizeError, norm, report, result, type Evaluated, type MinimizeOptions, type MinimizeResult, type Objective } from './objective.js';
import { lineSearchOptions, strongWolfe } from './linesearch.js';

export interface NewtonOptions extends MinimizeOptions {
  /** Relative step of the Hessian-vector differences: ε = epsilon·max(1, ‖x‖∞)/‖v‖∞. Default 6e-6. */
  epsilon?: number;
  /** Largest size for exact Newton (the Hessian is size² float64s). Default 2000. */
  maxSize?: number;
}

export interface NewtonCGOptions extends MinimizeOptions {
  /** See {@link NewtonOptions.epsilon}. */
  epsilon?: number;
  /** Initial Levenberg–Marquardt damping λ. Default 1. */
  damping?: number;
  /** CG iterations per Newton iteration (each costs two gradient evaluations). Default min(size, 100). */
  cgMaxIter?: number;
}

function epsilonOf(method: string, e: number | undefined): number {
  const eps = e ?? 6e-6;
  if (!(Number.isFinite(eps) && eps > 0)) throw new MinimizeError('BAD_INPUT', `${method}: options.epsilon must be a positive number, got ${eps}`);
  return eps;
}

export async function minimizeNewton(obj: Objective, x0: Float64Array, opts: NewtonOptions = {}): Promise<MinimizeResult> {
  const method = 'newton';
  const { maxIter, tol } = checkStart(method, obj, x0, opts, 100);
  const eps = epsilonOf(method, opts.epsilon);
  const maxSize = opts.maxSize ?? 2000;
  const n = obj.size;
  if (n > maxSize) throw new MinimizeError('BAD_INPUT', `${method}: exact Newton assembles a ${n}×${n} Hessian, above options.maxSize = ${maxSize}; use minimizeNewtonCG (Hessian-free) or raise maxSize`);
  const ls = lineSearchOptions(method, opts.lineSearch, 0.9);

  const ev = new Evaluator(method, obj);
  let x: Float64Array = Float64Array.from(x0);
  let cur: Evaluated = await ev.evaluate(x);
  const history = [cur.loss];
  const H = new Float64Array(n * n);
  const e = new Float64Array(n);
  for (let k = 1; k <= maxIter; k++) {
    if (norm(cur.grad) <= tol) return result(ev, x, cur, k - 1, history, tol, 'gradient norm ≤ tol');
    ev.iteration = k;
    for (let j = 0; j < n; j++) {
      e.fill(0);
      e[j] = 1;
      const col = await ev.hessVec(x, e, eps);
      for (let i = 0; i < n; i++) H[i * n + j] = col[i]!;
    }
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < i; j++) {
        const s = (H[i * n + j]! + H[j * n + i]!) / 2;
        H[i * n + j] = s;
        H[j * n + i] = s;
      }
    }
    const d = solveDamped(H, n, cur.grad);
    const search = await strongWolfe(ev, x, cur, d, 1, ls);
    const p = search.point;
    if (!p) return result(ev, x, cur, k - 1, history, tol, 'line search found no decrease');
    x = p.x;
    cur = p;
    history.push(cur.loss);
    if (await report(opts, ev, x, cur)) return result(ev, x, cur, k, history, tol, 'stopped by onIteration');
  }
  return result(ev, x, cur, maxIter, history, tol, norm(cur.grad) <= tol ? 'gradient norm ≤ tol' : 'maxIter reached');
}

/** Solves (H + τI) d = −g by Cholesky, τ = 0 first, then growing until H + τI is positive definite. */
function solveDamped(H: Float64Array, n: number, g: Float64Array): Float64Array {
  let maxDiag = 0, minDiag = Infinity;
  for (let i = 0; i < n; i++) {
    maxDiag = Math.max(maxDiag, Math.abs(H[i * n + i]!));
    minDiag = Math.min(minDiag, H[i * n + i]!);
  }
  const beta = Math.max(1e-3 * maxDiag, 1e-8);
  let tau = minDiag > 0 ? 0 : -minDiag + beta;
  const L = new Float64Array(n * n);
  for (let attempt = 0; attempt < 60; attempt++) {
    if (cholesky(H, n, tau, L)) {
      const y = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        let s = -g[i]!;
        for (let j = 0; j < i; j++) s -= L[i * n + j]! * y[j]!;
        y[i] = s / L[i * n + i]!;
      }
      const d = new Float64Array(n);
      for (let i = n - 1; i >= 0; i--) {
        let s = y[i]!;
        for (let j = i + 1; j < n; j++) s -= L[j * n + i]! * d[j]!;
        d[i] = s / L[i * n + i]!;
      }
      return d;
    }
    tau = Math.max(2 * tau, beta, tau * 10);
  }
  // Unreachable for finite H: τ ends far above every eigenvalue; fall back to steepest descent.
  return Float64Array.from(g, (v) => -v);
}

function cholesky(H: Float64Array, n: number, tau: number, L: Float64Array): boolean {
  for (let j = 0; j < n; j++) {
    let s = H[j * n + j]! + tau;
    for (let k = 0; k < j; k++) s -= L[j * n + k]! * L[j * n + k]!;
    if (!(s > 0)) return false;
    const ljj = Math.sqrt(s);
    L[j * n + j] = ljj;
    for (let i = j + 1; i < n; i++) {
      let t = H[i * n + j]!;
      for (let k = 0; k < j; k++) t -= L[i * n + k]! * L[j * n + k]!;
      L[i * n + j] = t / ljj;
    }
  }
  return true;
}

export async function minimizeNewtonCG(obj: Objective, x0: Float64Array, opts: NewtonCGOptions = {}): Promise<MinimizeResult> {
  const method = 'newton-cg';
  const { maxIter, tol } = checkStart(method, obj, x0, opts, 100);
  const eps = epsilonOf(method, opts.epsilon);
  let lambda = opts.damping ?? 1;
  if (!(Number.isFinite(lambda) && lambda >= 0)) throw new MinimizeError('BAD_INPUT', `${method}: options.damping must be a non-negative number, got ${lambda}`);
  const cgMaxIter = opts.cgMaxIter ?? Math.min(obj.size, 100);
  if (!(Number.isInteger(cgMaxIter) && cgMaxIter > 0)) throw new MinimizeError('BAD_INPUT', `${method}: options.cgMaxIter must be a positive integer, got ${cgMaxIter}`);
  const ls = lineSearchOptions(method, opts.lineSearch, 0.9);

  const ev = new Evaluator(method, obj);
  let x: Float64Array = Float64Array.from(x0);
  let cur: Evaluated = await ev.evaluate(x);
  const history = [cur.loss];
  const n = obj.size;
  for (let k = 1; k <= maxIter; k++) {
    const gnorm = norm(cur.grad);
    if (gnorm <= tol) return result(ev, x, cur, k - 1, history, tol, 'gradient norm ≤ tol');
    ev.iteration = k;
    // CG on B p = −g, B = H + λI, tracking Bp for the model's predicted decrease.
    const g = cur.grad;
    const p = new Float64Array(n), Bp = new Float64Array(n);
    const r = Float64Array.from(g, (v) => -v);
    let dir = Float64Array.from(r);
    let rr = dot(r, r);
    const target = Math.min(0.5, Math.sqrt(gnorm)) * gnorm;
    let negativeCurvature = false;
    for (let j = 0; j < cgMaxIter; j++) {
      const Bd = await ev.hessVec(x, dir, eps);
      for (let i = 0; i < n; i++) Bd[i] = Bd[i]! + lambda * dir[i]!;
      const dBd = dot(dir, Bd);
      if (!(dBd > 0)) {
        negativeCurvature = true;
        if (j === 0) {
          // Steepest descent, scaled by the curvature's magnitude along it.
          const q = Math.abs(dBd) / rr;
          const scale = 1 / Math.max(q, lambda, 1e-12);
          for (let i = 0; i < n; i++) { p[i] = -g[i]! * scale; Bp[i] = dBd / rr * p[i]!; }
        }
        break;
      }
      const a = rr / dBd;
      for (let i = 0; i < n; i++) {
        p[i] = p[i]! + a * dir[i]!;
        Bp[i] = Bp[i]! + a * Bd[i]!;
        r[i] = r[i]! - a * Bd[i]!;
      }
      const rr1 = dot(r, r);
      if (Math.sqrt(rr1) <= target) break;
      const b = rr1 / rr;
      rr = rr1;
      const next = new Float64Array(n);
      for (let i = 0; i < n; i++) next[i] = r[i]! + b * dir[i]!;
      dir = next;
    }
    // Undamped quadratic model: m(p) − f = g·p + ½ pᵀHp, with Hp = Bp − λp.
    const pp = dot(p, p);
    const predicted = -(dot(g, p) + 0.5 * (dot(p, Bp) - lambda * pp));
    const search = await strongWolfe(ev, x, cur, p, 1, ls);
    const first = search.first;
    if (first && first.alpha === 1 && predicted > 0) {
      const rho = (cur.loss - first.loss) / predicted;
      if (rho < 0.25) lambda *= 1.5;
      else if (rho > 0.75) lambda *= 2 / 3;
    }
    if (negativeCurvature) lambda = Math.max(lambda * 1.5, 1e-8);
    const pt = search.point;
    if (!pt) {
      // The model was bad even along its own direction: damp harder and try again next iteration.
      lambda = Math.max(lambda * 4, 1e-4);
      if (lambda > 1e12) return result(ev, x, cur, k - 1, history, tol, 'line search found no decrease');
      history.push(cur.loss);
      if (await report(opts, ev, x, cur)) return result(ev, x, cur, k, history, tol, 'stopped by onIteration');
      continue;
    }
    x = pt.x;
    cur = pt;
    history.push(cur.loss);
    if (await report(opts, ev, x, cur)) return result(ev, x, cur, k, history, tol, 'stopped by onIteration');
  }
  return result(ev, x, cur, maxIter, history, tol, norm(cur.grad) <= tol ? 'gradient norm ≤ tol' : 'maxIter reached');
}
