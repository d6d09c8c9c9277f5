/**
 * The programmatic API with data made in code: train a regression model on two worker-thread
 * stages, save it, load it back and predict.
 * Run: node --import tsx examples/api.ts [MODEL_DIR]   (default: a fresh temporary directory)
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Coordinator, loadModel, data, tensor } from 'chainrule';

// Custom data: y = sin(x1) + x1·x2 / 2 for x uniform in [-2, 2]², as plain typed arrays.
const f = (x1: number, x2: number) => Math.sin(x1) + 0.5 * x1 * x2;
function points(name: string, n: number, seed: number) {
  const rng = new tensor.Rng(seed);
  const inputs = new Float32Array(n * 2);
  const targets = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const [x1, x2] = [4 * rng.float() - 2, 4 * rng.float() - 2];
    inputs.set([x1, x2], 2 * i);
    targets[i] = f(x1, x2);
  }
  return data.makeDataset({ name, inputShape: [2], targetShape: [1], inputs, targets });
}

const coordinator = new Coordinator({
  model: {
    inputShape: [2],
    layers: [
      { type: 'dense', inputs: 2, units: 32 }, { type: 'tanh' },
      { type: 'dense', inputs: 32, units: 1 },
    ],
    loss: 'mse',
  },
  dataset: { train: points('train', 512, 1), test: points('test', 128, 2) },
  epochs: 30, batchSize: 32, optimizer: 'adam', lr: 0.01, seed: 42,
  placement: 'threads', stages: 2, microBatches: 4,    // each stage an actor on its own thread
  onEpoch: (r) => { if (r.epoch % 10 === 0) console.log(`epoch ${r.epoch}: test mse ${r.testMse!.toFixed(4)}`); },
});
try {
  const summary = await coordinator.train();                  // the same object as --json
  console.log(`test mse ${summary.testMse!.toFixed(4)}, mae ${summary.testMae!.toFixed(4)}, weights ${summary.weightsSha256.slice(0, 12)}`);

  const dir = process.argv[2] ?? mkdtempSync(join(tmpdir(), 'chainrule-model-'));
  await coordinator.save(dir);                                // model.safetensors + model.json
  const model = loadModel(dir);
  const x = tensor.Tensor.from([0.5, 1, -1, 1.5], [2, 2]);    // two points
  const y = model.predict(x);                                 // [2, 1]
  const live = await coordinator.predict(x);                  // the same bits, through the stages
  const sameAsLive = y.toArray().every((v, i) => v === live.data[i]);
  console.log(JSON.stringify({ dir, predictions: y.toArray(), truth: [f(0.5, 1), f(-1, 1.5)], sameAsLive }));
} finally {
  await coordinator.close();
}
