/**
 * Losses, composed from autograd ops (the cross-entropy is a fused op for stability).
 * Training losses are SUMS over the batch: the coordinator scales the summed gradient
 * by 1/batchSize once, so the number of micro-batches changes only the summation order.
 */
import { Tensor, fmtShape, sameShape } from '../tensor/tensor.js';
import { ShapeError } from '../tensor/functional.js';
import { mul, softmaxCrossEntropy, softplus, sub, sum } from '../autograd/index.js';
import { describeValue, lookup } from '../errors.js';
import { SpecError } from './spec.js';

export type Targets = Int32Array | Tensor;
export type Reduction = 'sum' | 'mean';

export interface Loss {
  readonly name: string;
  compute(output: Tensor, targets: Targets, reduction: Reduction): Tensor;
}

function tensorTargets(name: string, output: Tensor, t: Targets): Tensor {
  if (!(t instanceof Tensor)) throw new TypeError(`${name}: targets must be a tensor shaped like the output ${fmtShape(output.shape)}`);
  if (!sameShape(t.shape, output.shape)) throw new ShapeError(`${name}: targets ${fmtShape(t.shape)} != output ${fmtShape(output.shape)}`);
  return t.dtype === output.dtype ? t : t.to(output.dtype);
}

function reduce(total: Tensor, n: number, reduction: Reduction): Tensor {
  return reduction === 'sum' ? total : mul(total, 1 / n);
}

export const losses: Record<string, Loss> = {
  /** Softmax cross-entropy from logits with integer labels (fused, log-sum-exp stable). */
  softmaxCrossEntropy: {
    name: 'softmaxCrossEntropy',
    compute(output, targets, reduction) {
      if (!(targets instanceof Int32Array)) throw new TypeError('softmaxCrossEntropy: targets must be integer labels (Int32Array)');
      return softmaxCrossEntropy(output, targets, reduction);
    },
  },
  /** Mean squared error: Σ (y − t)² over elements, divided by the batch for 'mean'. */
  mse: {
    name: 'mse',
    compute(output, targets, reduction) {
      const t = tensorTargets('mse', output, targets);
      const d = sub(output, t);
      return reduce(sum(mul(d, d)), output.shape[0] ?? 1, reduction);
    },
  },
  /** Binary cross-entropy from logits: softplus(x) − x·t, stable for any x. */
  bce: {
    name: 'bce',
    compute(output, targets, reduction) {
      const t = tensorTargets('bce', output, targets);
      return reduce(sum(sub(softplus(output), mul(output, t))), output.shape[0] ?? 1, reduction);
    },
  },
};

/**
 * The loss of that name; prototype names such as 'toString' are unknown, not Object's.
 * @example getLoss('mse').compute(output, targets, 'sum')
 */
export function getLoss(name: string): Loss {
  const l = lookup(losses, name);
  if (!l) throw new SpecError(`unknown loss ${typeof name === 'string' ? `'${name}'` : describeValue(name, 80)}; known losses: ${Object.keys(losses).join(', ')}`);
  return l;
}
