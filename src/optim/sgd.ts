import type { Data } from '../tensor/tensor.js';
import { ElementwiseOptimizer, fusedKernels, hyper, knownKeys, type OptimizerSpec } from './optimizer.js';

/**
 * Plain SGD with optional L2 weight decay (PyTorch's torch.optim.SGD without momentum):
 * g ← g + λp;  p ← p − lr·g.
 *
 * @example createOptimizer({ type: 'sgd', lr: 0.1, weightDecay: 1e-4 })
 */
export class SGD extends ElementwiseOptimizer {
  readonly slotNames = [] as const;
  private readonly weightDecay: number;

  constructor(spec: OptimizerSpec) {
    super(spec);
    knownKeys(spec, ['weightDecay']);
    this.weightDecay = hyper(spec, 'weightDecay', 0, (v) => Number.isFinite(v) && v >= 0, 'a non-negative number');
  }

  protected update(p: Data, g: Data, s: Record<string, Data>, lr: number, _t: number, _fresh: boolean, scale: number): void {
    const wd = this.weightDecay;
    const fused = fusedKernels(p, g, s);
    if (fused) return fused.sgd(p as Float32Array, g as Float32Array, scale, lr, wd);
    const f32 = p instanceof Float32Array; // the scaled gradient is rounded as its buffer would store it
    for (let i = 0; i < p.length; i++) p[i] = p[i]! - lr * ((f32 ? Math.fround(g[i]! * scale) : g[i]! * scale) + wd * p[i]!);
  }
}
