/** Built-in models, by name, for the command line. */
import { describeValue, lookup } from '../errors.js';
import { SpecError } from './spec.js';
import type { ModelSpec } from './sequential.js';
import { cnnSpec } from './models-cnn.js';
import { lstmSpec, vaeSpec } from './models-seq.js';

export function mlpSpec(hidden: number[] = [256, 128], inputs = 784, classes = 10): ModelSpec {
  const layers: ModelSpec['layers'] = [];
  let prev = inputs;
  for (const h of hidden) {
    layers.push({ type: 'dense', inputs: prev, units: h, init: 'he' }, { type: 'relu' });
    prev = h;
  }
  layers.push({ type: 'dense', inputs: prev, units: classes, init: 'xavier' });
  return { inputShape: [inputs], layers, loss: 'softmaxCrossEntropy' };
}

export const builtinModels: Record<string, (inputShape: number[], classes: number) => ModelSpec> = {
  mlp: (inputShape, classes) => mlpSpec([256, 128], inputShape.reduce((a, b) => a * b, 1), classes),
  cnn: (_inputShape, classes) => cnnSpec(classes),
  lstm: (inputShape, classes) => lstmSpec(28, inputShape.reduce((a, b) => a * b, 1) / 28, 128, classes),
  vae: (inputShape) => vaeSpec(inputShape.reduce((a, b) => a * b, 1), 400, 16),
};

export function builtinModel(name: string, inputShape: number[], classes: number): ModelSpec {
  const f = lookup(builtinModels, name);
  if (!f) throw new SpecError(`unknown model ${typeof name === 'string' ? `'${name}'` : describeValue(name, 80)}; built-in models: ${Object.keys(builtinModels).join(', ')} (or a path to a JSON model spec)`);
  return f(inputShape, classes);
}
