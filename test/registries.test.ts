/** Every lookup by name refuses prototype names ('toString', 'constructor', '__proto__', ...) and lists the valid names. */
import { describe, expect, it } from 'vitest';
import { ChainruleError, choose, lookup } from '../src/errors.js';
import { getOp, opRegistry } from '../src/autograd/index.js';
import { Activation, buildLayer, builtinModel, builtinModels, getLoss, initNames, initialize, layerRegistry, losses, validateModelSpec } from '../src/nn/index.js';
import type { InitName } from '../src/nn/index.js';
import { createLrSchedule, createOptimizer, lrSchedules, optimizers, type LrScheduleSpec, type OptimizerSpec } from '../src/optim/index.js';
import { TRANSFORM_KINDS, fitTransform, makeDataset, validateTransformSpec, type TransformKind } from '../src/data/index.js';
import { backendNames, selectBackend } from '../src/tensor/select.js';
import { decodeValue, encodeValue } from '../src/wire/codec.js';
import { Rng } from '../src/tensor/rng.js';

const prototypeNames = ['toString', 'constructor', '__proto__', 'hasOwnProperty', 'valueOf', 'isPrototypeOf', '__defineGetter__'];

const tiny = makeDataset({ name: 'tiny', inputShape: [2], numClasses: 2, inputs: Float32Array.from([0, 1, 2, 3]), labels: Int32Array.from([0, 1]) });

/** Each registry: its valid names, and a call that looks `name` up in it. */
const registries: { registry: string; names: readonly string[]; call: (name: string) => unknown }[] = [
  { registry: 'losses (getLoss)', names: Object.keys(losses), call: (n) => getLoss(n) },
  { registry: 'losses (model spec)', names: Object.keys(losses), call: (n) => validateModelSpec({ inputShape: [2], layers: [{ type: 'relu' }], loss: n }) },
  { registry: 'built-in models', names: Object.keys(builtinModels), call: (n) => builtinModel(n, [784], 10) },
  { registry: 'layers', names: [...layerRegistry.keys()], call: (n) => buildLayer({ type: n }, { rng: new Rng(1), where: 'layer 0' }) },
  { registry: 'activations', names: ['relu', 'leakyRelu', 'sigmoid', 'tanh', 'softplus', 'softmax', 'logSoftmax'], call: (n) => new Activation(n, { type: n }) },
  { registry: 'optimizers', names: Object.keys(optimizers), call: (n) => createOptimizer({ type: n, lr: 0.1 } as OptimizerSpec) },
  { registry: 'lr schedules', names: Object.keys(lrSchedules), call: (n) => createLrSchedule({ type: n, lr: 0.1 } as unknown as LrScheduleSpec) },
  { registry: 'autograd ops', names: [...opRegistry.keys()], call: (n) => getOp(n) },
  { registry: 'initializers', names: initNames, call: (n) => initialize(new Float32Array(4), n as InitName, 2, 2, new Rng(1)) },
  { registry: 'initializers (layer spec)', names: initNames, call: (n) => buildLayer({ type: 'dense', inputs: 2, units: 2, init: n }, { rng: new Rng(1), where: 'layer 0' }) },
  { registry: 'transforms (fit)', names: TRANSFORM_KINDS, call: (n) => fitTransform(n as TransformKind, tiny) },
  { registry: 'transforms (spec)', names: TRANSFORM_KINDS, call: (n) => validateTransformSpec({ kind: n }) },
  { registry: 'backends', names: backendNames, call: (n) => selectBackend(n) },
  { registry: 'wire dtypes', names: ['float32', 'float64', 'int32'], call: (n) => decodeValue(encodeValue({ $tensor: n, shape: [1], bytes: new Uint8Array(4) }), { actor: 'test' }) },
];

describe('registry lookups by name', () => {
  for (const { registry, names, call } of registries) {
    it(`${registry}: prototype names are unknown names, and the error lists ${names.length} valid ones`, () => {
      expect(names.length).toBeGreaterThan(0);
      for (const name of prototypeNames) {
        let thrown: unknown;
        try {
          call(name);
        } catch (e) {
          thrown = e;
        }
        expect(thrown, `${registry}: ${name}`).toBeInstanceOf(ChainruleError);
        const message = (thrown as ChainruleError).message;
        expect(message, `${registry}: ${name}`).toContain(name);
        for (const valid of names) expect(message, `${registry}: ${name}`).toContain(valid);
      }
    });
  }

  it('lookup and choose take plain tables and Maps, own entries only', () => {
    const table = { a: 1, b: 2 };
    const map = new Map([['a', 1], ['b', 2]]);
    for (const t of [table, map]) {
      expect(lookup(t, 'a')).toBe(1);
      for (const name of [...prototypeNames, 7, null, undefined, {}]) expect(lookup(t, name)).toBeUndefined();
      expect(() => choose(t, 'toString', 'options.thing')).toThrow('options.thing must be one of a, b, got "toString"');
    }
  });
});
