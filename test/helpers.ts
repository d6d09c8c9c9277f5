import { expect } from 'vitest';
import { DataError, loadMnist, subset, type Dataset } from '../src/data/index.js';
import type { ModelSpec } from '../src/nn/index.js';
import type { NamedTensors } from '../src/wire/index.js';

/** Runs fn, expects a DataError, returns it. */
export function dataError(fn: () => unknown): DataError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(DataError);
    return e as DataError;
  }
  throw new Error('expected a DataError, nothing was thrown');
}

/**
 * The largest relative error ‖a−b‖/‖a‖ over the tensors of two parameter sets, and which
 * tensor has it: two runs "agree to 1e-5" when every tensor does.
 */
export function worstRelativeError(a: NamedTensors, b: NamedTensors): { value: number; name: string } {
  expect(Object.keys(b).sort()).toEqual(Object.keys(a).sort());
  let worst = { value: 0, name: '' };
  for (const name of Object.keys(a)) {
    const x = a[name]!.data;
    const y = b[name]!.data;
    let num = 0;
    let den = 0;
    for (let i = 0; i < x.length; i++) { num += (x[i]! - y[i]!) ** 2; den += x[i]! ** 2; }
    const value = Math.sqrt(num / den);
    if (value >= worst.value) worst = { value, name };
  }
  return worst;
}

/** The tests' small classifier: 784-32-10 with ReLU, softmax cross-entropy. */
export const tinySpec: ModelSpec = {
  inputShape: [784],
  layers: [{ type: 'dense', inputs: 784, units: 32, init: 'he' }, { type: 'relu' }, { type: 'dense', inputs: 32, units: 10, init: 'xavier' }],
  loss: 'softmaxCrossEntropy',
};

/** The first `train` training and `test` test digits of the built-in MNIST. */
export function firstDigits(train = 256, test = 64): { train: Dataset; test: Dataset } {
  const m = loadMnist();
  return { train: subset(m.train, Array.from({ length: train }, (_, i) => i)), test: subset(m.test, Array.from({ length: test }, (_, i) => i)) };
}
