/** Shape layers: reshape each sample, or flatten it to a vector. Neither copies data. */
import { describeValue } from '../errors.js';
import type { Tensor } from '../tensor/tensor.js';
import { fmtShape, sizeOf } from '../tensor/tensor.js';
import { ShapeError } from '../tensor/functional.js';
import { reshape } from '../autograd/index.js';
import { Layer, registerLayer, type LayerContext } from './layer.js';
import { SpecError, type LayerSpec } from './spec.js';

/**
 * Gives each sample a new shape with the same number of elements.
 * @example { "type": "reshape", "shape": [1, 28, 28] } // 784 pixels → one 28×28 channel
 */
export class Reshape extends Layer {
  readonly type = 'reshape';

  constructor(readonly shape: number[]) {
    super();
  }

  forward(x: Tensor, _ctx: LayerContext): Tensor {
    const per = x.rank === 0 ? 0 : x.size / x.shape[0]!;
    if (per !== sizeOf(this.shape)) {
      throw new ShapeError(`reshape: cannot reshape samples of ${fmtShape(x.shape.slice(1))} (${per} elements) to ${fmtShape(this.shape)} (${sizeOf(this.shape)})`);
    }
    return reshape(x, [x.shape[0]!, ...this.shape]);
  }

  outputShape(inputShape: readonly number[]): number[] {
    if (sizeOf(inputShape) !== sizeOf(this.shape)) {
      throw new ShapeError(`reshape: cannot reshape ${fmtShape(inputShape)} (${sizeOf(inputShape)} elements) to ${fmtShape(this.shape)} (${sizeOf(this.shape)})`);
    }
    return [...this.shape];
  }

  toSpec(): LayerSpec {
    return { type: this.type, shape: [...this.shape] };
  }
}

registerLayer('reshape', ['shape'], (spec, { where }) => {
  const s = spec['shape'];
  if (!Array.isArray(s) || s.length === 0 || !s.every((d) => typeof d === 'number' && Number.isSafeInteger(d) && d > 0)) {
    throw new SpecError(`${where}: 'shape' must be a non-empty array of positive integers (the per-sample shape), got ${describeValue(s, 80)}`);
  }
  return new Reshape([...(s as number[])]);
});

/** Flattens each sample to a vector: [n, ...] → [n, features]. */
export class Flatten extends Layer {
  readonly type = 'flatten';

  forward(x: Tensor, _ctx: LayerContext): Tensor {
    if (x.rank === 0) throw new ShapeError(`flatten: expected a batch [n, ...], got a scalar`);
    return reshape(x, [x.shape[0]!, x.shape[0] === 0 ? 0 : x.size / x.shape[0]!]);
  }

  outputShape(inputShape: readonly number[]): number[] {
    return [sizeOf(inputShape)];
  }

  toSpec(): LayerSpec {
    return { type: this.type };
  }
}

registerLayer('flatten', [], () => new Flatten());
