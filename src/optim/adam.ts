import type { Data } from '../tensor/tensor.js';
import { ElementwiseOptimizer, fusedKernels, flag, hyper, knownKeys, type OptimizerSpec } from './optimizer.js';

/**
 * Adam, PyTorch's torch.optim.Adam formulas (β1, β2, ε, λ weightDecay; t the step, 1-based):
 *   g ← g + λp                       (Adam: L2 penalty folded into the gradient)
 *   p ← p·(1 − lr·λ)                 (AdamW instead: decoupled weight decay, no change to g)
 *   m ← β1·m + (1 − β1)·g
 *   v ← β2·v + (1 − β2)·g²
 *   v̂ ← max(v̂, v) if amsgrad, else v̂ = v
 *   p ← p − (lr / (1 − β1ᵗ)) · m / (√v̂ / √(1 − β2ᵗ) + ε)
 * Defaults: beta1 0.9, beta2 0.999, eps 1e-8, weightDecay 0 (AdamW: 0.01), amsgrad false.
 *
 * NOTE: the bias corrections use the optimizer's step count t, which equals PyTorch's
 * per-parameter count as long as every parameter gets a gradient at every step (a
 * parameter skipped with a null gradient is corrected as if it had been stepped).
 *
 * @example createOptimizer({ type: 'adam', lr: 1e-3, beta1: 0.9, beta2: 0.999 })
 */
export class Adam extends ElementwiseOptimizer {
  readonly slotNames: readonly string[];
  private readonly beta1: number;
  private readonly beta2: number;
  private readonly eps: number;
  private readonly weightDecay: number;
  private readonly amsgrad: boolean;

  constructor(spec: OptimizerSpec, private readonly decoupled = false) {
    super(spec);
    knownKeys(spec, ['beta1', 'beta2', 'eps', 'weightDecay', 'amsgrad']);
    this.beta1 = hyper(spec, 'beta1', 0.9, (v) => v >= 0 && v < 1, 'in [0, 1)');
    this.beta2 = hyper(spec, 'beta2', 0.999, (v) => v >= 0 && v < 1, 'in [0, 1)');
    this.eps = hyper(spec, 'eps', 1e-8, (v) => Number.isFinite(v) && v > 0, 'a positive number');
    this.weightDecay = hyper(spec, 'weightDecay', decoupled ? 0.01 : 0, (v) => Number.isFinite(v) && v >= 0, 'a non-negative number');
    this.amsgrad = flag(spec, 'amsgrad', false);
    this.slotNames = this.amsgrad ? ['m', 'v', 'vmax'] : ['m', 'v'];
  }

  protected update(p: Data, g: Data, s: Record<string, Data>, lr: number, t: number, _fresh: boolean, scale: number): void {
    const { beta1: b1, beta2: b2, eps, weightDecay: wd, decoupled, amsgrad } = this;
    const m = s.m!, v = s.v!, vmax = s.vmax;
    const stepSize = lr / (1 - b1 ** t);
    const sqrtBc2 = Math.sqrt(1 - b2 ** t);
    const shrink = decoupled ? 1 - lr * wd : 1;
    const l2 = decoupled ? 0 : wd;
    const fused = fusedKernels(p, g, s);
    if (fused) {
      return fused.adam(p as Float32Array, g as Float32Array, m as Float32Array, v as Float32Array, (vmax ?? null) as Float32Array | null,
        scale, stepSize, sqrtBc2, shrink, l2, b1, b2, eps);
    }
    const f32 = p instanceof Float32Array; // the scaled gradient is rounded as its buffer would store it
    for (let i = 0; i < p.length; i++) {
      const pi = p[i]! * shrink;
      const gi = (f32 ? Math.fround(g[i]! * scale) : g[i]! * scale) + l2 * p[i]!;
      const mi = b1 * m[i]! + (1 - b1) * gi;
      let vi = b2 * v[i]! + (1 - b2) * gi * gi;
      m[i] = mi;
      v[i] = vi;
      if (amsgrad) {
        vi = Math.max(vmax![i]!, vi);
        vmax![i] = vi;
      }
      p[i] = pi - stepSize * mi / (Math.sqrt(vi) / sqrtBc2 + eps);
    }
  }
}

/** AdamW (Loshchilov & Hutter; PyTorch's torch.optim.AdamW): {@link Adam} with decoupled weight decay, default 0.01. */
export class AdamW extends Adam {
  constructor(spec: OptimizerSpec) {
    super(spec, true);
  }
}
