import { Tensor, fmtShape } from '../tensor/tensor.js';
import { ShapeError } from '../tensor/functional.js';
import { SharedWeight, linear } from '../autograd/index.js';
import { Layer, registerLayer, type LayerContext } from './layer.js';
import { initialize, initNames, type InitName } from './init.js';
import { oneOf, positiveInt, type LayerSpec } from './spec.js';
import type { Rng } from '../tensor/rng.js';

/** y = x·W + b, with W stored [in, out] so the forward is a plain (untransposed) matmul. */
export class Dense extends Layer {
  readonly type = 'dense';
  readonly weight: Tensor;
  readonly bias: Tensor;
  /** The weight as the micro-batches of a step share it: packed once, its gradient deferred. */
  private readonly shared = new SharedWeight();

  constructor(readonly inputs: number, readonly units: number, readonly init: InitName, rng: Rng) {
    super();
    this.weight = Tensor.param(initialize(new Float32Array(inputs * units), init, inputs, units, rng), [inputs, units], 'weight');
    this.bias = Tensor.param(new Float32Array(units), [units], 'bias');
    this.params = [['weight', this.weight], ['bias', this.bias]];
  }

  forward(x: Tensor, ctx: LayerContext): Tensor {
    if (x.rank !== 2 || x.shape[1] !== this.inputs) {
      throw new ShapeError(`dense: expected input [batch, ${this.inputs}], got ${fmtShape(x.shape)}`);
    }
    const shared = ctx.microBatching && ctx.training ? { weight: this.shared, microBatch: ctx.microBatch } : undefined;
    return linear(x, this.weight, this.bias, shared);
  }

  override flushDeferredGrads(through?: number): void {
    if (this.shared.weight !== null) this.shared.flush(through);
  }

  outputShape(inputShape: readonly number[]): number[] {
    if (inputShape.length !== 1 || inputShape[0] !== this.inputs) {
      throw new ShapeError(`dense: expects ${this.inputs} inputs per sample but receives ${fmtShape(inputShape)}${inputShape.length > 1 ? ' (add a flatten layer)' : ''}`);
    }
    return [this.units];
  }

  toSpec(): LayerSpec {
    return { type: this.type, inputs: this.inputs, units: this.units, init: this.init };
  }
}

registerLayer('dense', ['inputs', 'units', 'init'], (spec, { rng, where }) =>
  new Dense(positiveInt(spec, 'inputs', where), positiveInt(spec, 'units', where), oneOf(spec, 'init', initNames, where, 'he'), rng));
