import { describeValue } from '../errors.js';
import { Tensor, allocate } from '../tensor/tensor.js';
import { mul } from '../autograd/index.js';
import { Layer, registerLayer, type LayerContext } from './layer.js';
import { SpecError, type LayerSpec } from './spec.js';

/**
 * Inverted dropout: in training each element is kept with probability 1 − rate and scaled
 * by 1/(1 − rate), so the expectation is unchanged and evaluation is the identity.
 *
 * The mask is drawn from `rngFor(ctx)`, a stream derived from (seed, layer index, step,
 * micro-batch): the same on every host and placement, different for each step and
 * micro-batch. NOTE: so a different micro-batch count draws different masks.
 * @example { "type": "dropout", "rate": 0.5 }
 */
export class Dropout extends Layer {
  readonly type = 'dropout';

  constructor(readonly rate: number) {
    super();
  }

  forward(x: Tensor, ctx: LayerContext): Tensor {
    if (!ctx.training || this.rate === 0) return x;
    return mul(x, this.mask(x, ctx));
  }

  /** The scaled keep-mask (0 or 1/(1 − rate)) for x's shape in this context. */
  mask(x: Tensor, ctx: LayerContext): Tensor {
    const rng = this.rngFor(ctx);
    const keep = 1 - this.rate;
    const scale = 1 / keep;
    const m = allocate(x.dtype, x.size);
    for (let i = 0; i < m.length; i++) m[i] = rng.float() < keep ? scale : 0;
    return new Tensor(m, x.shape);
  }

  outputShape(inputShape: readonly number[]): number[] {
    return [...inputShape];
  }

  toSpec(): LayerSpec {
    return { type: this.type, rate: this.rate };
  }
}

registerLayer('dropout', ['rate'], (spec, { where }) => {
  const rate = spec['rate'] ?? 0.5;
  if (typeof rate !== 'number' || !Number.isFinite(rate) || rate < 0 || rate >= 1) {
    throw new SpecError(`${where}: 'rate' must be a number in [0, 1), got ${describeValue(spec['rate'], 80)}`);
  }
  return new Dropout(rate);
});
