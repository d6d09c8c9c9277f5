/**
 * More than classification: float targets (regression with mse, multi-label with bce) from the
 * dataset through the batcher, the micro-batches, every placement and the wire, to metrics that
 * fit; model specs whose unknown fields are refused; shapes checked when the Coordinator is built.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Coordinator, loadModel, type CoordinatorOptions } from '../coordinator/index.js';
import { parseCliOptions } from '../coordinator/options.js';
import {
  Batcher, applyTransform, augmentEpoch, batchOf, evalBatches, fitTransform, hasTargets, loadCsv, makeDataset,
  mergeMicroBatches, splitMicroBatches, subset, type LabeledDataset, type TargetDataset,
} from '../src/data/index.js';
import { MetricSums, Sequential, SpecError, builtinModels, layerRegistry, validateModelSpec, type ModelSpec } from '../src/nn/index.js';
import { Rng } from '../src/tensor/rng.js';
import { Tensor } from '../src/tensor/tensor.js';
import { decodeMessage, encodeMessage, type Request } from '../src/wire/index.js';
import { startNode } from '../node/server.js';
import { dataError } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'chainrule-targets-'));

/** y0 = sin(x0) + 0.5·x1·x2, y1 = x0 − x1 (plus a little noise): a smooth two-output regression. */
function regression(name: string, n: number, seed: number): TargetDataset {
  const rng = new Rng(seed);
  const inputs = new Float32Array(n * 3);
  const targets = new Float32Array(n * 2);
  for (let i = 0; i < n; i++) {
    const [a, b, c] = [rng.normal(), rng.normal(), rng.normal()];
    inputs.set([a, b, c], i * 3);
    targets.set([Math.sin(a) + 0.5 * b * c + 0.05 * rng.normal(), a - b], i * 2);
  }
  return makeDataset({ name, inputShape: [3], targetShape: [2], inputs, targets });
}

/** Three labels of four features, each present or not: x0 > 0, x1 + x2 > 0, x3 > 0.5. */
function multiLabel(name: string, n: number, seed: number): TargetDataset {
  const rng = new Rng(seed);
  const inputs = new Float32Array(n * 4);
  const targets = new Float32Array(n * 3);
  for (let i = 0; i < n; i++) {
    const x = [rng.normal(), rng.normal(), rng.normal(), rng.normal()];
    inputs.set(x, i * 4);
    targets.set([x[0]! > 0 ? 1 : 0, x[1]! + x[2]! > 0 ? 1 : 0, x[3]! > 0.5 ? 1 : 0], i * 3);
  }
  return makeDataset({ name, inputShape: [4], targetShape: [3], inputs, targets });
}

const regressionSpec: ModelSpec = {
  inputShape: [3],
  layers: [
    { type: 'dense', inputs: 3, units: 32, init: 'he' }, { type: 'tanh' },
    { type: 'dense', inputs: 32, units: 16, init: 'he' }, { type: 'tanh' },
    { type: 'dense', inputs: 16, units: 2, init: 'xavier' },
  ],
  loss: 'mse',
};

const multiLabelSpec: ModelSpec = {
  inputShape: [4],
  layers: [{ type: 'dense', inputs: 4, units: 24, init: 'he' }, { type: 'relu' }, { type: 'dense', inputs: 24, units: 3, init: 'xavier' }],
  loss: 'bce',
};

const reg = { train: regression('reg/train', 256, 1), test: regression('reg/test', 128, 2) };
const ml = { train: multiLabel('ml/train', 256, 3), test: multiLabel('ml/test', 128, 4) };

/** The per-element variance of the targets: the MSE of predicting their mean. */
function variance(ds: TargetDataset): number {
  const per = ds.targets.length / ds.size;
  let v = 0;
  for (let j = 0; j < per; j++) {
    let m = 0;
    for (let i = 0; i < ds.size; i++) m += ds.targets[i * per + j]!;
    m /= ds.size;
    for (let i = 0; i < ds.size; i++) v += (ds.targets[i * per + j]! - m) ** 2;
  }
  return v / ds.targets.length;
}

describe('datasets with float targets', () => {
  it('makeDataset checks targets: shape, length, finite values, and labels or targets but not both', () => {
    const ds = regression('r', 10, 5);
    expect(hasTargets(ds)).toBe(true);
    expect([ds.size, ds.targetShape]).toEqual([10, [2]]);
    expect(dataError(() => makeDataset({ name: 'short', inputShape: [1], targetShape: [2], inputs: new Float32Array(3), targets: new Float32Array(5), size: 3 })).message)
      .toMatch(/dataset "short": targets hold 5 values, expected .* 3 × 2 = 6/);
    const nan = dataError(() => makeDataset({ name: 'nan', inputShape: [1], targetShape: [1], inputs: new Float32Array(2), targets: Float32Array.of(1, NaN) }));
    expect([nan.code, nan.message]).toEqual(['NOT_A_NUMBER', expect.stringMatching(/dataset "nan": target 0 of sample 1 is NaN/)]);
    const both = { name: 'both', inputShape: [1], numClasses: 2, labels: new Int32Array(2), targetShape: [1], targets: new Float32Array(2), inputs: new Float32Array(2) };
    expect(dataError(() => makeDataset(both as never)).message).toMatch(/either labels .* or targets .*, not both/);
    expect(dataError(() => makeDataset({ name: 'b', inputShape: [1], targetShape: [0], inputs: new Float32Array(1), targets: new Float32Array(0), size: 1 })).message)
      .toMatch(/targetShape \[0\] must be a non-empty array of positive integers/);
  });

  it('subset, batchOf, the batcher and evalBatches carry the targets of each sample', () => {
    const ds = regression('r', 20, 6);
    const s = subset(ds, [3, 1]);
    expect(Array.from(s.targets)).toEqual([...ds.targets.subarray(6, 8), ...ds.targets.subarray(2, 4)]);
    const { x, y } = batchOf(ds, [4, 0]);
    expect([x.shape, y.shape]).toEqual([[2, 3], [2, 2]]);
    expect(Array.from(y.data)).toEqual([...ds.targets.subarray(8, 10), ...ds.targets.subarray(0, 2)]);
    for (const b of new Batcher(ds, { batchSize: 6, seed: 1 }).epoch(0)) {
      expect(b.y.shape).toEqual([6, 2]);
      for (let i = 0; i < 6; i++) expect(Array.from(b.y.data.subarray(i * 2, i * 2 + 2))).toEqual(Array.from(ds.targets.subarray(b.indices[i]! * 2, b.indices[i]! * 2 + 2)));
    }
    const all = [...evalBatches(ds, 7)].flatMap((b) => Array.from(b.y.data));
    expect(all).toEqual(Array.from(ds.targets));
  });

  it('micro-batch split and merge are an inverse pair for a targets tensor', () => {
    const ds = regression('r', 12, 7);
    const { x, y } = batchOf(ds, [11, 3, 5, 0, 1, 2, 4, 6, 7, 8, 9, 10]);
    const parts = splitMicroBatches(x, y, 4);
    for (const p of parts) expect([p.x.shape, p.y.shape]).toEqual([[3, 3], [3, 2]]);
    expect(Array.from(parts[1]!.y.data)).toEqual(Array.from(y.data.subarray(6, 12)));
    const back = mergeMicroBatches(parts);
    expect(back.y.shape).toEqual([12, 2]);
    expect(Array.from(back.y.data)).toEqual(Array.from(y.data));
    expect(dataError(() => splitMicroBatches(x, new Tensor(new Float32Array(4), [2, 2]), 2)).message).toMatch(/x has 12 samples .* but y has targets of shape \[2, 2\]/);
    expect(dataError(() => mergeMicroBatches([parts[0]!, { x: parts[1]!.x, y: Int32Array.of(0, 1, 2) as never }])).message).toMatch(/all parts must have labels or all targets/);
  });

  it('transforms change only the inputs; augmentation carries the targets', () => {
    const ds = regression('r', 16, 8);
    const t = applyTransform(fitTransform('standardize', ds), ds);
    expect(hasTargets(t)).toBe(true);
    expect(Array.from(t.targets)).toEqual(Array.from(ds.targets));
    expect(t.targets).not.toBe(ds.targets);
    const b = new Batcher(ds, { batchSize: 8, seed: 2 });
    const [plain] = [...b.epoch(0)];
    const [noisy] = [...augmentEpoch(b, 0, { noise: 0.1 })];
    expect(Array.from(noisy!.y.data)).toEqual(Array.from(plain!.y.data));
    expect(Array.from(noisy!.x.data)).not.toEqual(Array.from(plain!.x.data));
  });
});

describe('CSV target columns', () => {
  const csv = join(dir, 'houses.csv');
  writeFileSync(csv, 'rooms,price,area,age,label\n' + Array.from({ length: 10 }, (_, i) => `${i},${100 + i * 10.5},${50 + i},${i % 4},${i % 2}`).join('\n') + '\n');

  it('by name or index, in the order given; the other columns are the inputs', () => {
    const byName = loadCsv(csv, { targetColumns: ['price', 'age'], testFraction: 0.2, seed: 1 });
    expect([byName.train.inputShape, byName.train.targetShape, byName.train.size, byName.test.size]).toEqual([[3], [2], 8, 2]);
    expect(byName.featureNames).toEqual(['rooms', 'area', 'label']);
    expect(byName.targetNames).toEqual(['price', 'age']);
    // Each row keeps its own targets: rooms = i gives price 100 + 10.5 i and age i mod 4.
    for (const ds of [byName.train, byName.test]) {
      for (let r = 0; r < ds.size; r++) {
        const i = ds.inputs[r * 3]!;
        expect(Array.from(ds.targets.subarray(r * 2, r * 2 + 2))).toEqual([100 + i * 10.5, i % 4]);
      }
    }
    const byIndex = loadCsv(csv, { targetColumns: [1, 3], testFraction: 0.2, seed: 1 });
    expect(Array.from(byIndex.train.targets)).toEqual(Array.from(byName.train.targets));
  });

  it('refuses a duplicate, an unknown or a non-numeric target column, and labels together with targets', () => {
    expect(dataError(() => loadCsv(csv, { targetColumns: ['price', 1] })).message).toMatch(/names column 1 \("price"\) twice/);
    expect(dataError(() => loadCsv(csv, { targetColumns: ['cost'] })).message).toMatch(/targetColumns\[0\] "cost" is not a column of .*houses\.csv; columns are "rooms", "price"/);
    expect(dataError(() => loadCsv(csv, { targetColumns: [9] })).message).toMatch(/targetColumns\[0\] 9 is out of range: .* has 5 columns/);
    expect(dataError(() => loadCsv(csv, { targetColumns: [] })).message).toMatch(/targetColumns must be a non-empty array/);
    expect(dataError(() => loadCsv(csv, { targetColumns: ['price'], labelColumn: 'label' })).message).toMatch(/labelColumn and options.targetColumns exclude each other/);
    expect(dataError(() => loadCsv(csv, { targetColumns: [0, 1, 2, 3, 4] })).message).toMatch(/no input columns are left/);
    const bad = join(dir, 'bad.csv');
    writeFileSync(bad, 'x,y\n1,2\n3,NaN\n');
    expect(dataError(() => loadCsv(bad, { targetColumns: ['y'] })).message).toMatch(/bad\.csv:3:2: target column \("y"\) is not a number: "NaN"/);
  });
});

describe('model specs: unknown fields are refused, naming them', () => {
  const base = (): ModelSpec => JSON.parse(JSON.stringify(regressionSpec)) as ModelSpec;

  it('a field a layer does not know names the layer index, the field and the known fields', () => {
    const spec = base();
    spec.layers[2] = { ...spec.layers[2]!, activation: 'relu' };
    const e = (() => { try { validateModelSpec(spec, 'my.json'); } catch (err) { return err as SpecError; } throw new Error('no error'); })();
    expect(e).toBeInstanceOf(SpecError);
    expect(e.message).toMatch(/^my\.json: layer 2 \(dense\): unknown field 'activation' in a dense layer; its fields are type, inputs, units, init/);
    expect(e.hint).toMatch(/put \{ "type": "relu" \} after this layer/);
    // Building (what every stage does) refuses it too, and so does the Coordinator at construction.
    expect(() => Sequential.fromSpec(spec, 0)).toThrow(/layer 2 \(dense\): unknown field 'activation'/);
    expect(() => new Coordinator({ model: spec, dataset: reg })).toThrow(/layer 2 \(dense\): unknown field 'activation'/);
    const relu = base();
    relu.layers[1] = { type: 'tanh', slope: 0.1 };
    expect(() => validateModelSpec(relu)).toThrow(/layer 1 \(tanh\): unknown field 'slope' in a tanh layer; its only field is type/);
  });

  it('an unknown top-level field, an unknown loss (prototype names included) and a bad autoencoder flag', () => {
    expect(() => validateModelSpec({ ...base(), optimizer: 'adam' })).toThrow(/model spec: unknown field 'optimizer'; a model spec's fields are inputShape, layers, loss, autoencoder/);
    expect(() => validateModelSpec({ ...base(), loss: 'toString' })).toThrow(/unknown loss 'toString'; known losses: softmaxCrossEntropy, mse, bce/);
    expect(() => validateModelSpec({ ...base(), autoencoder: 'yes' })).toThrow(/'autoencoder' must be true or false/);
    expect(() => validateModelSpec({ ...base(), layers: [{ type: '__proto__' }] })).toThrow(/layer 0 \(__proto__\): unknown layer type '__proto__'/);
  });

  it("every layer's own spec (toSpec) uses only fields its registry entry knows", () => {
    const specs = Object.values(builtinModels).map((f) => f([784], 10));
    for (const spec of specs) {
      for (const layer of Sequential.fromSpec(spec, 1).layers) {
        const fields = layerRegistry.get(layer.type)!.fields;
        for (const k of Object.keys(layer.toSpec())) if (k !== 'type') expect(fields, `${layer.type}.${k}`).toContain(k);
      }
    }
    expect([...layerRegistry.keys()].length).toBeGreaterThan(15);
  });
});

describe('shapes are checked against the data when the Coordinator is built', () => {
  const cls: { train: LabeledDataset; test: LabeledDataset } = (() => {
    const inputs = Float32Array.from({ length: 64 * 3 }, (_, i) => (i % 7) / 7);
    const train = makeDataset({ name: 'cls/train', inputShape: [3], numClasses: 4, inputs, labels: Int32Array.from({ length: 64 }, (_, i) => i % 4) });
    return { train, test: subset(train, [0, 1, 2, 3], 'cls/test') };
  })();
  const classifier = (units: number, inputs = 3): ModelSpec => ({ inputShape: [inputs], layers: [{ type: 'dense', inputs, units }], loss: 'softmaxCrossEntropy' });

  it('datasets given to the API are validated: labels or targets, not neither', () => {
    const bare = { name: 'bare', inputShape: [3], size: 2, inputs: new Float32Array(6) };
    expect(() => new Coordinator({ model: classifier(4), dataset: { train: bare as never, test: cls.test }, batchSize: 2 })).toThrow(/dataset "bare": give either labels .* or targets .*, got neither/);
  });

  it('the input shape, naming both', () => {
    expect(() => new Coordinator({ model: classifier(4, 5), dataset: cls })).toThrow(/model spec: inputShape \[5\] does not match the samples of dataset "cls\/train", shape \[3\]/);
  });

  it('classifiers: class labels, and an output that scores every class', () => {
    expect(() => new Coordinator({ model: classifier(3), dataset: cls })).toThrow(/the model's output \[3\] cannot score the 4 classes of dataset "cls\/train" \(labels 0\.\.3\)/);
    expect(() => new Coordinator({ model: classifier(4), dataset: cls })).not.toThrow();
    const { loss: _, ...noLoss } = { ...regressionSpec };
    expect(() => new Coordinator({ model: noLoss, dataset: reg })).toThrow(/loss softmaxCrossEntropy \(the default\) needs integer class labels, but dataset "reg\/train" has float targets of shape \[2\]/);
  });

  it('regression and multi-label: float targets shaped like the output, in [0, 1] for bce', () => {
    expect(() => new Coordinator({ model: { ...classifier(4), loss: 'mse' }, dataset: cls })).toThrow(/loss mse compares the output with float targets, but dataset "cls\/train" has integer class labels \(4 classes\)/);
    const one = { ...regressionSpec, layers: [...regressionSpec.layers.slice(0, 4), { type: 'dense', inputs: 16, units: 1 }] };
    expect(() => new Coordinator({ model: one, dataset: reg })).toThrow(/the model's output \[1\] does not match the targets of dataset "reg\/train", shape \[2\]/);
    const spec3: ModelSpec = { inputShape: [3], layers: [{ type: 'dense', inputs: 3, units: 2 }], loss: 'bce' };
    expect(() => new Coordinator({ model: spec3, dataset: reg })).toThrow(/loss bce needs targets in \[0, 1\] .* target \d of sample \d+ of dataset "reg\/train" is/);
    // A built-in classifier on float targets says what to use instead.
    expect(() => new Coordinator({ model: 'mlp', dataset: reg })).toThrow(/the built-in model 'mlp' is a classifier, but dataset "reg\/train" has float targets/);
  });

  it('the CLI-shaped options: target columns need a CSV dataset and exclude a label column', () => {
    expect(() => new Coordinator({ dataset: 'mnist', targetColumns: ['y'] })).toThrow(/options.targetColumns is only used with a CSV options.dataset/);
    expect(() => new Coordinator({ targetColumns: ['y'] })).toThrow(/target columns are only used with a CSV dataset \(csv:PATH\), not 'mnist'/);
    // A config file may hold the target columns and the flags the dataset.
    const config = join(dir, 'run.json');
    writeFileSync(config, JSON.stringify({ 'target-columns': 'y', optimizer: 'adam' }));
    const parsed = parseCliOptions(['--config', config, '--dataset', `csv:${join(import.meta.dirname, '..', 'examples', 'regression.csv')}`]);
    expect(parsed.options.targetColumns).toEqual(['y']);
    expect(() => new Coordinator({ dataset: 'csv:x.csv', targetColumns: ['y'], labelColumn: 'z' })).toThrow(/options.labelColumn and options.targetColumns exclude each other/);
    expect(() => new Coordinator({ dataset: 'csv:x.csv', targetColumns: [-1] })).toThrow(/options.targetColumns must be a non-empty list of column names or 0-based indices/);
  });
});

describe('metrics that fit the loss', () => {
  it('MSE and MAE per element for mse; per-label accuracy at sigmoid 0.5 for bce; accuracy only for classifiers', () => {
    const out = new Tensor(Float32Array.of(1, -2, 0.5, 3), [2, 2]);
    const t = new Tensor(Float32Array.of(0, -2, 1, 1), [2, 2]);
    const r = new MetricSums({ loss: 'mse' });
    r.add(out, t);
    expect(r.result()).toEqual({ accuracy: null, mse: (1 + 0 + 0.25 + 4) / 4, mae: (1 + 0 + 0.5 + 2) / 4, labelAccuracy: null, perLabelAccuracy: null });
    const b = new MetricSums({ loss: 'bce' });
    b.add(out, t); // logits > 0 ⇔ sigmoid > 0.5: predictions [1, 0], [1, 1] against [0, 0], [1, 1]
    expect(b.result()).toMatchObject({ accuracy: null, mse: null, labelAccuracy: 0.75, perLabelAccuracy: [0.5, 1] });
    const c = new MetricSums({});
    c.add(out, Int32Array.of(0, 0));
    expect(c.result()).toMatchObject({ accuracy: 0.5, mse: null, labelAccuracy: null });
  });
});

describe('regression and multi-label train on every placement with the same weights', () => {
  const nodes: { address: string; close(): Promise<void> }[] = [];
  beforeAll(async () => {
    for (let i = 0; i < 2; i++) nodes.push(await startNode({ host: '127.0.0.1', port: 0 }));
  });
  afterAll(async () => {
    await Promise.all(nodes.map((n) => n.close()));
  });

  async function train(o: CoordinatorOptions) {
    const c = new Coordinator({ epochs: 8, batchSize: 32, microBatches: 4, optimizer: 'adam', lr: 0.01, seed: 3, ...o });
    try {
      return { summary: await c.train(), evaluation: await c.evaluate(), c };
    } finally {
      await c.close();
    }
  }
  const placements: [string, CoordinatorOptions][] = [
    ['threads, 2 stages, 1f1b', { placement: 'threads', stages: 2, schedule: '1f1b' }],
    ['grpc, 2 stages', { placement: 'grpc', stages: 2 }],
  ];

  const root = join(import.meta.dirname, '..');
  const csv = { model: join(root, 'examples', 'regression.json'), dataset: `csv:${join(root, 'examples', 'regression.csv')}`, targetColumns: ['y'] };

  it('a regression CSV (--target-columns y, loss mse) trains on local, threads and grpc to a reported test MSE, with the same weightsSha256', async () => {
    const ref = await train({ ...csv, epochs: 10 });
    const s = ref.summary;
    const test = ref.c.data.test;
    if (!hasTargets(test)) throw new Error('expected float targets');
    expect([test.targetShape, s.testAccuracy, s.testLabelAccuracy]).toEqual([[1], null, null]);
    expect(s.testMse!).toBeLessThan(0.1 * variance(test));
    expect(s.testMae!).toBeGreaterThan(0);
    expect(s.testLoss).toBeCloseTo(s.testMse!, 6); // one target: the per-sample loss is the MSE
    expect(ref.evaluation.mse).toBe(s.testMse);
    for (const [, o] of placements) {
      const r = await train({ ...csv, epochs: 10, ...o, nodes: o.placement === 'grpc' ? nodes.map((n) => n.address) : undefined });
      expect(r.summary.placement).toBe(o.placement);
      expect(r.summary.weightsSha256).toBe(s.weightsSha256);
      expect(r.summary.testMse).toBe(s.testMse);
    }
  });

  it('two targets per sample, and data-parallel replicas: local and threads agree bit for bit', async () => {
    const local = await train({ model: regressionSpec, dataset: reg, replicas: 2, microBatches: 2 });
    expect(local.summary.testMse!).toBeLessThan(0.25 * variance(reg.test));
    // The loss sums a sample's two targets: twice the per-element MSE.
    expect(local.summary.testLoss).toBeCloseTo(2 * local.summary.testMse!, 5);
    const threads = await train({ model: regressionSpec, dataset: reg, replicas: 2, microBatches: 2, placement: 'threads' });
    expect(threads.summary.weightsSha256).toBe(local.summary.weightsSha256);
  });

  it('a full-batch method (L-BFGS) fits float targets too', async () => {
    const r = await train({ model: regressionSpec, dataset: reg, optimizer: 'lbfgs', epochs: 2, iterationsPerEpoch: 5, microBatches: 1 });
    expect(r.summary.testMse!).toBeLessThan(variance(reg.test));
    expect(r.summary.gradEvals!).toBeGreaterThan(0);
  });

  it('bce multi-label: per-label accuracy well above chance, the same weights on threads', async () => {
    const ref = await train({ model: multiLabelSpec, dataset: ml });
    expect(ref.summary.testAccuracy).toBeNull();
    expect(ref.summary.testMse).toBeNull();
    expect(ref.summary.testLabelAccuracy!).toBeGreaterThan(0.85);
    expect(ref.evaluation.perLabelAccuracy!.length).toBe(3);
    for (const a of ref.evaluation.perLabelAccuracy!) expect(a).toBeGreaterThan(0.75);
    const r = await train({ model: multiLabelSpec, dataset: ml, placement: 'threads', stages: 2 });
    expect(r.summary.weightsSha256).toBe(ref.summary.weightsSha256);
  });

  it('a saved regression model predicts what the live one does and evaluates to the same MSE', async () => {
    const c = new Coordinator({ model: regressionSpec, dataset: reg, epochs: 2, batchSize: 32, optimizer: 'adam', lr: 0.01, seed: 3 });
    try {
      await c.train();
      const out = join(dir, 'reg-model');
      await c.save(out);
      const m = loadModel(out);
      const x = batchOf(reg.test, [0, 1, 2]).x;
      expect(Array.from(m.predict(x).data)).toEqual(Array.from((await c.predict(x)).data));
      const ev = m.evaluate(reg.test);
      expect(ev.mse).toBeCloseTo((await c.evaluate()).mse!, 6);
      expect(() => m.evaluate(cls())).toThrow(/has integer class labels, but the model \(loss mse\) compares its output with float targets/);
    } finally {
      await c.close();
    }
  });

  it('targets that do not fit are refused by the stage (every placement) and NaN by the codec', async () => {
    const c = new Coordinator({ model: regressionSpec, dataset: reg, batchSize: 4, seed: 1 });
    try {
      const { x, y } = batchOf(reg.train, [0, 1, 2, 3]);
      await expect(c.step(x, new Tensor(new Float32Array(4), [4, 1]))).rejects.toThrow(/the targets of micro-batch 0 have shape \[4, 1\], the output has \[4, 2\]/);
      await expect(c.step(x, Int32Array.of(0, 1, 0, 1))).rejects.toThrow(/loss mse needs float targets shaped like the output \[4, 2\], got 4 integer labels/);
      const nan = new Tensor(y.data.slice(), y.shape);
      nan.data[3] = NaN;
      await expect(c.step(x, nan)).rejects.toThrow(/value NaN at index 3 is not finite/);
      expect(Number.isFinite(await c.step(x, y))).toBe(true);
    } finally {
      await c.close();
    }
    const req = { type: 'runStep', run: 'r', stage: 1, step: 0, microBatch: -1, actions: ['1F0'], targets: [new Tensor(Float32Array.of(1, NaN), [1, 2])] } as Request;
    expect(() => decodeMessage(encodeMessage(req), { actor: 'stage 1' })).toThrow(/stage 1: field 'targets\[0\]': value NaN at index 1 is not finite/);
    const ok = decodeMessage(encodeMessage({ ...req, targets: [new Tensor(Float32Array.of(1, 2), [1, 2])] } as Request), { actor: 'stage 1' }) as Extract<Request, { type: 'runStep' }>;
    expect((ok.targets![0] as Tensor).shape).toEqual([1, 2]);
  });

  const cls = (): LabeledDataset => makeDataset({ name: 'c', inputShape: [3], numClasses: 2, inputs: new Float32Array(6), labels: Int32Array.of(0, 1) });
});
