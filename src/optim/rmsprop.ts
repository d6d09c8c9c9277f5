import type { Data } from '../tensor/tensor.js';
import { ElementwiseOptimizer, flag, hyper, knownKeys, type OptimizerSpec } from './optimizer.js';

/**
 * RMSProp, PyTorch's torch.optim.RMSprop formulas (α alpha, ε, λ weightDecay, μ momentum):
 *   g ← g + λp
 *   v ← α·v + (1 − α)·g²
 *   centered:  a ← α·a + (1 − α)·g;  d ← √(v − a²) + ε      otherwise d ← √v + ε
 *   μ > 0:     b ← μ·b + g/d;  p ← p − lr·b                  otherwise p ← p − lr·g/d
 * Defaults: alpha 0.99, eps 1e-8, weightDecay 0, momentum 0, centered false.
 *
 * NOTE: v − a² is clamped at 0: it is non-negative in exact arithmetic but rounding of
 * the stored float32 averages can take it just below, which would give NaN.
 *
 * @example createOptimizer({ type: 'rmsprop', lr: 1e-3, alpha: 0.9, centered: true })
 */
export class RMSProp extends ElementwiseOptimizer {
  readonly slotNames: readonly string[];
  private readonly alpha: number;
  private readonly eps: number;
  private readonly weightDecay: number;
  private readonly momentum: number;
  private readonly centered: boolean;

  constructor(spec: OptimizerSpec) {
    super(spec);
    knownKeys(spec, ['alpha', 'eps', 'weightDecay', 'momentum', 'centered']);
    this.alpha = hyper(spec, 'alpha', 0.99, (v) => v >= 0 && v < 1, 'in [0, 1)');
    this.eps = hyper(spec, 'eps', 1e-8, (v) => Number.isFinite(v) && v > 0, 'a positive number');
    this.weightDecay = hyper(spec, 'weightDecay', 0, (v) => Number.isFinite(v) && v >= 0, 'a non-negative number');
    this.momentum = hyper(spec, 'momentum', 0, (v) => v >= 0 && v < 1, 'in [0, 1)');
    this.centered = flag(spec, 'centered', false);
    const names = ['v'];
    if (this.centered) names.push('a');
    if (this.momentum > 0) names.push('b');
    this.slotNames = names;
  }

  protected update(p: Data, g: Data, s: Record<string, Data>, lr: number, _t: number, _fresh: boolean, scale: number): void {
    const { alpha, eps, weightDecay: wd, momentum: mu, centered } = this;
    const v = s.v!, a = s.a, b = s.b;
    const f32 = p instanceof Float32Array; // the scaled gradient is rounded as its buffer would store it
    for (let i = 0; i < p.length; i++) {
      const gi = (f32 ? Math.fround(g[i]! * scale) : g[i]! * scale) + wd * p[i]!;
      const vi = alpha * v[i]! + (1 - alpha) * gi * gi;
      v[i] = vi;
      let d: number;
      if (centered) {
        const ai = alpha * a![i]! + (1 - alpha) * gi;
        a![i] = ai;
        d = Math.sqrt(Math.max(0, vi - ai * ai)) + eps;
      } else {
        d = Math.sqrt(vi) + eps;
      }
      if (mu > 0) {
        const bi = mu * b![i]! + gi / d;
        b![i] = bi;
        p[i] = p[i]! - lr * bi;
      } else {
        p[i] = p[i]! - lr * gi / d;
      }
    }
  }
}
