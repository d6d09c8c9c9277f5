import type { Data } from '../tensor/tensor.js';
import { ElementwiseOptimizer, flag, fusedKernels, hyper, knownKeys, OptimizerError, type OptimizerSpec } from './optimizer.js';

/**
 * SGD with momentum, PyTorch's torch.optim.SGD formulas (λ weightDecay, μ momentum,
 * τ dampening):
 *   g ← g + λp
 *   b ← g at the parameter's first step, else b ← μb + (1 − τ)g
 *   g ← g + μb (nesterov) or g ← b
 *   p ← p − lr·g
 * Defaults: momentum 0.9, dampening 0, weightDecay 0, nesterov false.
 *
 * @example createOptimizer({ type: 'momentum', lr: 0.05, momentum: 0.9 })
 */
export class Momentum extends ElementwiseOptimizer {
  readonly slotNames = ['b'] as const;
  private readonly momentum: number;
  private readonly dampening: number;
  private readonly weightDecay: number;
  private readonly nesterov: boolean;

  constructor(spec: OptimizerSpec, nesterovDefault = false) {
    super(spec);
    knownKeys(spec, ['momentum', 'dampening', 'weightDecay', 'nesterov']);
    this.momentum = hyper(spec, 'momentum', 0.9, (v) => v >= 0 && v < 1, 'in [0, 1)');
    this.dampening = hyper(spec, 'dampening', 0, (v) => v >= 0 && v <= 1, 'in [0, 1]');
    this.weightDecay = hyper(spec, 'weightDecay', 0, (v) => Number.isFinite(v) && v >= 0, 'a non-negative number');
    this.nesterov = flag(spec, 'nesterov', nesterovDefault);
    if (this.nesterov && (this.momentum === 0 || this.dampening !== 0)) {
      throw new OptimizerError(`${spec.type}: Nesterov momentum needs momentum > 0 and dampening = 0, got momentum ${this.momentum}, dampening ${this.dampening}`);
    }
  }

  protected update(p: Data, g: Data, s: Record<string, Data>, lr: number, _t: number, fresh: boolean, scale: number): void {
    const { momentum: mu, dampening, weightDecay: wd, nesterov } = this;
    const b = s.b!;
    const fused = fusedKernels(p, g, s);
    if (fused) return fused.momentum(p as Float32Array, g as Float32Array, b as Float32Array, scale, lr, mu, dampening, wd, nesterov, fresh);
    const f32 = p instanceof Float32Array; // the scaled gradient is rounded as its buffer would store it
    for (let i = 0; i < p.length; i++) {
      const gi = (f32 ? Math.fround(g[i]! * scale) : g[i]! * scale) + wd * p[i]!;
      // NOTE: PyTorch starts the buffer at the first gradient itself (no dampening), not at zero.
      const bi = fresh ? gi : mu * b[i]! + (1 - dampening) * gi;
      b[i] = bi;
      p[i] = p[i]! - lr * (nesterov ? gi + mu * bi : bi);
    }
  }
}

/** Nesterov momentum: {@link Momentum} with `nesterov: true` by default. */
export class Nesterov extends Momentum {
  constructor(spec: OptimizerSpec) {
    super(spec, true);
  }
}
