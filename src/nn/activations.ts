import type { Tensor } from '../tensor/tensor.js';
import { leakyRelu, logSoftmax, relu, sigmoid, softmax, softplus, tanh } from '../autograd/index.js';
import { Layer, registerLayer, type LayerContext } from './layer.js';
import { lookup } from '../errors.js';
import { SpecError, finiteNumber, type LayerSpec } from './spec.js';

const activations: Record<string, (x: Tensor, spec: LayerSpec) => Tensor> = {
  relu: (x) => relu(x),
  leakyRelu: (x, s) => leakyRelu(x, s.slope as number),
  sigmoid: (x) => sigmoid(x),
  tanh: (x) => tanh(x),
  softplus: (x) => softplus(x),
  softmax: (x) => softmax(x, -1),
  logSoftmax: (x) => logSoftmax(x, -1),
};

/** An activation as a layer of its own (no parameters). */
export class Activation extends Layer {
  private readonly fn: (x: Tensor, spec: LayerSpec) => Tensor;

  constructor(readonly type: string, private readonly spec: LayerSpec) {
    super();
    const fn = lookup(activations, type);
    if (fn === undefined) throw new SpecError(`unknown activation '${type}'; known activations: ${Object.keys(activations).join(', ')}`);
    this.fn = fn;
  }

  forward(x: Tensor, _ctx: LayerContext): Tensor {
    return this.fn(x, this.spec);
  }

  outputShape(inputShape: readonly number[]): number[] {
    return [...inputShape];
  }

  toSpec(): LayerSpec {
    return { ...this.spec };
  }
}

for (const type of Object.keys(activations)) {
  registerLayer(type, type === 'leakyRelu' ? ['slope'] : [], (spec, { where }) => {
    const s: LayerSpec = type === 'leakyRelu' ? { type, slope: finiteNumber(spec, 'slope', where, 0.01) } : { type };
    return new Activation(type, s);
  });
}
