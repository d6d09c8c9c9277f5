import type { Data } from '../tensor/tensor.js';
import { ElementwiseOptimizer, hyper, knownKeys, type OptimizerSpec } from './optimizer.js';

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

  protected update(p: Data, g: Data, _s: Record<string, Data>, lr: number): void {
    const wd = this.weightDecay;
    for (let i = 0; i < p.length; i++) p[i] = p[i]! - lr * (g[i]! + wd * p[i]!);
  }
}
