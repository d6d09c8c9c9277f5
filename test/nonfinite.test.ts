/**
 * A NaN or an infinity in a step stops the run naming where it appeared (the step, the epoch,
 * the actor, the layer, the micro-batch, the first bad element), on every placement, with the
 * same message; with skipNonFinite every actor drops that step and training goes on, ending
 * with the weights (and BatchNorm statistics) of a run that never saw that batch.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { Coordinator, type CoordinatorOptions } from '../coordinator/index.js';
import { transports } from '../coordinator/transports/index.js';
import { NonFiniteError, earliestNonFinite } from '../coordinator/nonfinite.js';
import { startNode, type RunningNode } from '../node/server.js';
import { Batcher, loadMnist, makeDataset, subset, type Dataset } from '../src/data/index.js';
import { Sequential, allFinite, firstNonFinite, jsAllFinite, locateNonFinite, type ModelSpec } from '../src/nn/index.js';
import { Tensor } from '../src/tensor/tensor.js';
import { backend, setBackend } from '../src/tensor/backend.js';
import { createNativeBackend, nativeAvailable } from '../src/tensor/native/index.js';
import { checkNonFiniteReport, describeNonFinite, type StepReport } from '../src/wire/index.js';

const nodes: RunningNode[] = [];
beforeAll(async () => { for (let i = 0; i < 2; i++) nodes.push(await startNode({ port: 0, log: false })); });
afterAll(async () => { await Promise.all(nodes.map((n) => n.close())); });
const initialBackend = backend();
afterEach(() => { setBackend(initialBackend); vi.restoreAllMocks(); });
const placementOptions = (p: string): CoordinatorOptions => (p === 'grpc' ? { nodes: nodes.map((n) => n.address) } : {});

describe('finding NaN and infinities', () => {
  const cases: [string, number[], number][] = [
    ['all finite, odd length', [0, -0, 1, -3.4e38, 3.4e38, 1e-45, -1e-45], -1],
    ['a NaN last', [1, 2, 3, 4, 5, NaN], 5],
    ['+Infinity in the middle', [1, 2, Infinity, 4, 5, 6, 7, 8, 9], 2],
    ['-Infinity first', [-Infinity, 0], 0],
  ];
  for (const [name, values, first] of cases) {
    it(`${name}: every pass agrees`, () => {
      for (const x of [Float32Array.from(values), Float64Array.from(values)]) {
        expect(jsAllFinite(x)).toBe(first < 0);
        expect(allFinite(x)).toBe(first < 0);
        expect(firstNonFinite(x)).toBe(first);
      }
      if (nativeAvailable()) {
        // Long enough for the native pass, the bad value at every lane of a vector.
        const nat = createNativeBackend().allFinite!;
        for (const at of [0, 1, 7, 15, 16, 4095, 4097]) {
          const x = new Float32Array(4100);
          expect(nat(x)).toBe(true);
          if (first >= 0) { x[at] = values[first]!; expect(nat(x), `at ${at}`).toBe(false); }
        }
      }
    });
  }

  it('locates the first layer whose output is not finite, leaving BatchNorm statistics alone', () => {
    const spec: ModelSpec = { inputShape: [2], layers: [{ type: 'dense', inputs: 2, units: 2 }, { type: 'batchNorm', channels: 2 }, { type: 'softplus' }, { type: 'dense', inputs: 2, units: 1 }] };
    const model = Sequential.fromSpec(spec, 1);
    const [w0, , , , w3] = model.parameters().map(([, p]) => p);
    w0!.data.set([1, 0, 0, 1]);
    w3!.data.fill(3e38); // the sum of two products overflows here
    const ctx = { training: true, seed: 1, step: 0, microBatch: 0 };
    const before = model.layers[1]!.buffers.map(([, b]) => [...b.data]);
    const x = new Tensor(Float32Array.from([1e10, 0, 0, 3e10]), [2, 2]);
    expect(locateNonFinite(model, x, ctx)).toEqual({ at: 'layer', layer: 3, type: 'dense', index: 0, value: Infinity });
    expect(model.layers[1]!.buffers.map(([, b]) => [...b.data])).toEqual(before);
    expect(locateNonFinite(model, new Tensor(Float32Array.from([1, NaN, 0, 0]), [2, 2]), ctx)).toEqual({ at: 'input', index: 1, value: NaN });
    w3!.data.fill(1);
    expect(locateNonFinite(model, x, ctx)).toBeNull();
  });

  it('picks the earliest finding over the actors, and checks what came over the wire', () => {
    const r = (nonFinite?: object): StepReport => ({ losses: [], busyMs: 0, wallMs: 0, ...(nonFinite ? { nonFinite } : {}) }) as StepReport;
    // 2 replicas × 2 stages, 2 micro-batches each: replica 1's micro-batch 0 comes after replica 0's 1.
    const reports = [
      r({ kind: 'gradient', layer: 0, layerType: 'dense', param: 'weight', index: 3, value: 'NaN' }),
      r({ kind: 'loss', microBatch: 1, index: 0, value: 'Infinity' }),
      r({ kind: 'activation', layer: 0, layerType: 'dense', microBatch: 0, index: 5, value: 'NaN' }),
      r(),
    ];
    expect(earliestNonFinite(reports, 2, 2)).toMatchObject({ stage: 1, replica: 0, report: { kind: 'loss', microBatch: 1 } });
    expect(earliestNonFinite([r(), r({ kind: 'inputGradient', layer: 2, layerType: 'dense', microBatch: 0, index: 1, value: 'NaN' }), r({ kind: 'activation', layer: 0, layerType: 'dense', microBatch: 0, index: 1, value: 'NaN' }), r()], 2, 2)!.replica).toBe(0);
    expect(earliestNonFinite([r(), r()], 2, 1)).toBeNull();
    expect(() => earliestNonFinite([r({ kind: 'oops', index: 0, value: 'NaN' }), r()], 2, 1, ['stage 0 (grpc h:1)'])).toThrow("stage 0 (grpc h:1): stepDone report: nonFinite.kind must be one of input, activation, loss, inputGradient, gradient, got \"oops\"");
    expect(checkNonFiniteReport({ kind: 'loss', index: -1, value: 'NaN' })).toMatch(/nonFinite.index must be a non-negative integer/);
    expect(checkNonFiniteReport({ kind: 'gradient', layer: 1, layerType: 'x y', index: 0, value: 'NaN' })).toMatch(/nonFinite.layerType must be a short name/);
    expect(describeNonFinite({ kind: 'gradient', layer: 2, layerType: 'dense', param: 'weight', index: 1234, value: 'NaN' }, 'stage 1'))
      .toBe("the gradient of layer 2 (dense 'weight') on stage 1 (summed over the step's micro-batches) is not finite: first NaN at index 1234");
  });
});

// A small classifier that diverges (its logits overflow) at a learning rate of 1e5.
const mlp: ModelSpec = {
  inputShape: [784],
  layers: [{ type: 'dense', inputs: 784, units: 24, init: 'he' }, { type: 'relu' }, { type: 'dense', inputs: 24, units: 16, init: 'he' }, { type: 'relu' }, { type: 'dense', inputs: 16, units: 10, init: 'xavier' }],
  loss: 'softmaxCrossEntropy',
};
const m = loadMnist();
const digits = { train: subset(m.train, Array.from({ length: 256 }, (_, i) => i)), test: subset(m.test, Array.from({ length: 64 }, (_, i) => i)) };

// A regression whose sample 37 has a target of 3e38: finite (the data and the wire take it), but
// its squared error overflows float32, so the step that holds it has an infinite loss.
const POISONED = 37;
function regression(n: number, poison: boolean): Dataset {
  const inputs = Float32Array.from({ length: n * 4 }, (_, i) => Math.sin(i * 0.7));
  const targets = Float32Array.from({ length: n * 2 }, (_, i) => Math.cos(i * 0.3));
  if (poison) targets[POISONED * 2] = 3e38;
  return makeDataset({ name: poison ? 'poisoned' : 'clean', inputShape: [4], targetShape: [2], inputs, targets });
}
const reg: ModelSpec = {
  inputShape: [4],
  layers: [{ type: 'dense', inputs: 4, units: 8 }, { type: 'batchNorm', channels: 8 }, { type: 'tanh' }, { type: 'dense', inputs: 8, units: 2 }],
  loss: 'mse',
};

describe('a non-finite value on every placement', () => {
  let localMessage: string | null = null;
  for (const placement of Object.keys(transports)) {
    it(`${placement}: a diverging run stops with NONFINITE naming where, the same message as in-process; the actors keep serving`, async () => {
      const c = new Coordinator({ model: mlp, dataset: digits, epochs: 2, batchSize: 32, lr: 1e5, optimizer: 'sgd', seed: 5, stages: 2, microBatches: 2, placement, ...placementOptions(placement) });
      try {
        const err = await c.train().catch((e: unknown) => e);
        expect(err).toBeInstanceOf(NonFiniteError);
        const e = err as NonFiniteError;
        expect(e.code).toBe('NONFINITE');
        expect(e.user).toBe(true);
        expect(e.message).toMatch(/^step \d+ \(epoch 1\): the (output of layer \d \((dense|relu)\)|loss|input gradient of layer \d \(\w+\) \(sent back to the previous stage\)|gradient of layer \d \(dense '(weight|bias)'\)) on stage [01](, micro-batch [01]| \(summed over the step's micro-batches\)) is not finite: first (NaN|-?Infinity) at index \d+\nHow to fix: lower --lr/);
        if (placement === 'local') localMessage = e.message;
        else if (localMessage !== null) expect(e.message).toBe(localMessage);
        // Nothing crashed: every actor still answers.
        expect(Object.keys(await c.parameters())).toHaveLength(6);
      } finally {
        await c.close();
      }
    });
  }

  for (const placement of Object.keys(transports)) {
    for (const layout of [{ stages: 2, microBatches: 2 }, { stages: 2, replicas: 2, microBatches: 2, clipNorm: 5 }]) {
      const label = `${layout.replicas ?? 1} replica(s) × ${layout.stages} stages × ${layout.microBatches} micro-batches${layout.clipNorm ? ', clipped' : ''}`;
      it(`${placement}, ${label}: skipNonFinite drops exactly the poisoned step; weights and statistics are those of a run without that batch`, async () => {
        const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
        const o: CoordinatorOptions = { model: reg, epochs: 1, batchSize: 16, lr: 0.05, optimizer: 'adam', seed: 3, ...layout };
        const test = regression(32, false);
        const poisoned = { train: regression(192, true), test };
        const a = new Coordinator({ ...o, dataset: poisoned, placement, skipNonFinite: true, ...placementOptions(placement) });
        // The reference: the same steps on the same batches, but not the one holding the sample.
        const b = new Coordinator({ ...o, dataset: poisoned, placement: 'local' });
        try {
          const s = await a.train();
          expect(s.skippedSteps).toBe(1);
          expect(a.skippedSteps).toBe(1);
          expect(Number.isFinite(s.trainLoss)).toBe(true);
          const batcher = new Batcher(poisoned.train, { batchSize: 16, seed: 3 });
          let skippedAt = -1;
          let step = 0;
          for (let e = 0; e < 1; e++) {
            for (const batch of batcher.epoch(e)) {
              const y = (batch.y as Tensor).data;
              if (!allFinite(Float32Array.from(y, (v) => v * v))) skippedAt = step; // the batch holding 3e38
              else await b.step(batch.x, batch.y);
              step++;
            }
          }
          expect(skippedAt).toBeGreaterThanOrEqual(0);
          expect(await a.weightsSha256()).toBe(await b.weightsSha256());
          expect((await a.evaluate(test)).loss).toBe((await b.evaluate(test)).loss); // BatchNorm statistics too
          const warned = warn.mock.calls.map((c) => String(c[0])).filter((l) => l.includes('skipped step'));
          expect(warned).toHaveLength(1);
          expect(warned[0]).toMatch(new RegExp(`^chainrule: warning: skipped step ${skippedAt} \\(epoch 1\\): the loss on stage 1${layout.replicas ? ' of replica [01]' : ''}, micro-batch [01] is not finite: first Infinity at index 0 \\(--skip-nonfinite; 1 skipped so far\\)$`));
        } finally {
          await a.close();
          await b.close();
        }
      });
    }
  }
});
