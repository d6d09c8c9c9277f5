/**
 * Strong-Wolfe line search, Nocedal & Wright (2nd ed.) algorithms 3.5 (bracketing) and
 * 3.6 (zoom) with safeguarded interpolation: cubic (their eq. 3.59), or the secant on
 * φ' where the curvature between the two points is positive.
 *
 * A step is returned only if it satisfies sufficient decrease
 * φ(α) ≤ φ(0) + c1·α·φ'(0) and φ(α) ≤ φ(0): the search never accepts a step that
 * increases the loss. When the evaluation budget runs out it returns the best
 * sufficient-decrease point found (`wolfe: false`), or no point at all.
 */
import { axpy, dot, MinimizeError, type Evaluated, type Evaluator, type LineSearchOptions } from './objective.js';

export interface LinePoint extends Evaluated {
  alpha: number;
  x: Float64Array;
  /** φ'(α) = ∇f(x + αd)·d. */
  slope: number;
}

export interface LineSearchResult {
  /** The accepted point, or null when no step decreased the loss enough. */
  point: LinePoint | null;
  /** True when the point satisfies both strong-Wolfe conditions. */
  wolfe: boolean;
  /** The first trial (α = alpha0), for trust-region-style ratio tests. */
  first: LinePoint | null;
  evals: number;
}

/**
 * Minimizer of the cubic interpolating φ and φ' at a and b (N&W eq. 3.59); NaN if none.
 */
export function cubicMin(a: number, fa: number, ga: number, b: number, fb: number, gb: number): number {
  const d1 = ga + gb - 3 * (fa - fb) / (a - b);
  const disc = d1 * d1 - ga * gb;
  if (!(disc >= 0)) return NaN;
  const d2 = Math.sign(b - a) * Math.sqrt(disc);
  const den = gb - ga + 2 * d2;
  if (den === 0) return NaN;
  return b - (b - a) * (gb + d2 - d1) / den;
}

/**
 * The point between a and b where the interpolated slope is zero (secant on φ'), exact on a
 * quadratic and free of the cancellation in φ(a) − φ(b) that spoils the cubic once the
 * loss changes only in its last digits; NaN unless the curvature is positive.
 */
function secantMin(a: number, ga: number, b: number, gb: number): number {
  const curv = (gb - ga) / (b - a);
  return curv > 0 ? a - ga / curv : NaN;
}

/** The interpolated minimizer: the derivative secant where it is defined, else the cubic. */
function interpolate(a: LinePoint, b: LinePoint): number {
  const s = secantMin(a.alpha, a.slope, b.alpha, b.slope);
  return Number.isFinite(s) ? s : cubicMin(a.alpha, a.loss, a.slope, b.alpha, b.loss, b.slope);
}

export function lineSearchOptions(method: string, o: LineSearchOptions | undefined, c2Default: number): Required<LineSearchOptions> {
  const c1 = o?.c1 ?? 1e-4;
  const c2 = o?.c2 ?? c2Default;
  const maxEvals = o?.maxEvals ?? 25;
  const alphaMax = o?.alphaMax ?? 1e10;
  if (!(c1 > 0 && c1 < c2 && c2 < 1)) throw new MinimizeError('BAD_INPUT', `${method}: line search needs 0 < c1 < c2 < 1, got c1 = ${c1}, c2 = ${c2}`);
  if (!(Number.isInteger(maxEvals) && maxEvals > 0)) throw new MinimizeError('BAD_INPUT', `${method}: lineSearch.maxEvals must be a positive integer, got ${maxEvals}`);
  if (!(alphaMax > 0)) throw new MinimizeError('BAD_INPUT', `${method}: lineSearch.alphaMax must be positive, got ${alphaMax}`);
  return { c1, c2, maxEvals, alphaMax };
}

/**
 * Searches along the descent direction d from x (where the loss and gradient are `at`),
 * starting with step alpha0.
 * @example const { point } = await strongWolfe(ev, x, at, d, 1, lineSearchOptions('lbfgs', {}, 0.9));
 */
export async function strongWolfe(ev: Evaluator, x: Float64Array, at: Evaluated, d: Float64Array, alpha0: number, o: Required<LineSearchOptions>): Promise<LineSearchResult> {
  const { c1, c2, maxEvals, alphaMax } = o;
  const f0 = at.loss;
  const g0 = dot(at.grad, d);
  if (!(g0 < 0)) return { point: null, wolfe: false, first: null, evals: 0 };
  let evals = 0;
  let first: LinePoint | null = null;
  const probe = async (alpha: number): Promise<LinePoint> => {
    const xa = axpy(x, alpha, d);
    const r = await ev.evaluate(xa);
    evals++;
    const p = { alpha, x: xa, loss: r.loss, grad: r.grad, slope: dot(r.grad, d) };
    first ??= p;
    return p;
  };
  const curved = (p: LinePoint): boolean => Math.abs(p.slope) <= -c2 * g0;
  // NOTE: once the predicted decrease α|φ'(0)| is within ~100 ulps of the loss, the
  // Armijo test compares rounding noise; then (Hager–Zhang's approximate Wolfe idea, but
  // without their tolerance for an increase) a point with φ(α) ≤ φ(0) and a flat enough
  // slope is accepted too.
  const noise = 100 * Number.EPSILON * Math.max(Math.abs(f0), Number.MIN_VALUE);
  const decreases = (p: LinePoint): boolean => p.loss <= f0 && (p.loss <= f0 + c1 * p.alpha * g0 || (-p.alpha * g0 <= noise && curved(p)));
  const origin: LinePoint = { alpha: 0, x, loss: f0, grad: at.grad, slope: g0 };
  const done = (point: LinePoint | null, wolfe: boolean): LineSearchResult => ({ point: point && point.alpha > 0 ? point : null, wolfe, first, evals });

  // Algorithm 3.6: lo satisfies sufficient decrease and has the lowest loss so far; the
  // minimizer lies between lo and hi.
  const zoom = async (lo: LinePoint, hi: LinePoint): Promise<LineSearchResult> => {
    while (evals < maxEvals) {
      const left = Math.min(lo.alpha, hi.alpha), right = Math.max(lo.alpha, hi.alpha), width = right - left;
      if (width <= 1e-14 * right) break;
      let a = interpolate(lo, hi);
      // Safeguard: stay 10% inside the bracket so it shrinks by at least that much.
      a = Number.isFinite(a) ? Math.min(right - 0.1 * width, Math.max(left + 0.1 * width, a)) : (left + right) / 2;
      const p = await probe(a);
      if (!decreases(p) || p.loss >= lo.loss) {
        hi = p;
      } else {
        if (curved(p)) return done(p, true);
        if (p.slope * (hi.alpha - lo.alpha) >= 0) hi = lo;
        lo = p;
      }
    }
    return done(lo, false);
  };

  // Algorithm 3.5: grow the step until the minimizer is bracketed.
  let prev = origin;
  let best: LinePoint | null = null;
  let alpha = Math.min(alpha0, alphaMax);
  for (let i = 1; evals < maxEvals; i++) {
    const p = await probe(alpha);
    if (!decreases(p) || (i > 1 && p.loss >= prev.loss)) return zoom(prev, p);
    best = p;
    if (curved(p)) return done(p, true);
    if (p.slope >= 0) return zoom(p, prev);
    if (alpha >= alphaMax) break;
    // Extrapolate by interpolation through prev and p, kept in [α + 0.01(α − α_prev), 10α].
    const c = interpolate(prev, p);
    const lo = alpha + 0.01 * (alpha - prev.alpha), hi = 10 * alpha;
    const next = Number.isFinite(c) && c > alpha ? Math.min(hi, Math.max(lo, c)) : 2 * alpha;
    prev = p;
    alpha = Math.min(next, alphaMax);
  }
  return done(best, false);
}
