/**
 * The whole pipeline, every placement and schedule, against single-process training:
 * for the same seed and micro-batch count the weights must be bit-identical.
 * Placements and schedules come from their registries, so a new one is covered here as is.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Coordinator, type CoordinatorOptions } from '../coordinator/index.js';
import { MixedTransport, transports } from '../coordinator/transports/index.js';
import { getSchedule, schedules, splitsBackward, theoreticalBubble } from '../coordinator/schedules/index.js';
import { loadMnist, subset, type Dataset } from '../src/data/index.js';
import type { ModelSpec } from '../src/nn/index.js';
import { backend, setBackend } from '../src/tensor/backend.js';
import { startNode } from '../node/server.js';
import { worstRelativeError } from './helpers.js';

const spec: ModelSpec = {
  inputShape: [784],
  layers: [
    { type: 'dense', inputs: 784, units: 48, init: 'he' }, { type: 'relu' },
    { type: 'dense', inputs: 48, units: 32, init: 'he' }, { type: 'tanh' },
    { type: 'dense', inputs: 32, units: 10, init: 'xavier' },
  ],
  loss: 'softmaxCrossEntropy',
};

const m = loadMnist();
// 520 samples with batch 32: 16 steps and a partial batch of 8 that must be dropped.
const data: { train: Dataset; test: Dataset } = {
  train: subset(m.train, Array.from({ length: 520 }, (_, i) => i)),
  test: subset(m.test, Array.from({ length: 300 }, (_, i) => i)),
};

// Two gRPC nodes, started here, for the placements that run stages on nodes.
const nodes: { address: string; close(): Promise<void> }[] = [];
beforeAll(async () => {
  for (let i = 0; i < 2; i++) nodes.push(await startNode({ host: '127.0.0.1', port: 0 }));
});
afterAll(async () => {
  await Promise.all(nodes.map((n) => n.close()));
});

/**
 * What a registered placement needs besides its name (none by default; options.nodes is
 * refused by the others). A new placement that needs more fails below, naming the option.
 */
function placementOptions(placement: string): CoordinatorOptions {
  return placement === 'grpc' ? { nodes: nodes.map((n) => n.address) } : {};
}

// A Coordinator installs the default backend in this process when it finds the reference one.
const initialBackend = backend();
afterEach(() => setBackend(initialBackend));

type Trained = { summary: Awaited<ReturnType<Coordinator['train']>>; params: Awaited<ReturnType<Coordinator['parameters']>> };

async function train(o: CoordinatorOptions): Promise<Trained> {
  const c = new Coordinator({ model: spec, dataset: data, epochs: 2, batchSize: 32, lr: 0.1, seed: 7, ...o });
  try {
    const summary = await c.train();
    return { summary, params: await c.parameters() };
  } finally {
    await c.close();
  }
}

/**
 * The single-process run with M micro-batches, trained by whichever test asks first and kept
 * (never mutated), so each test has its reference whether it runs alone or after others.
 * A schedule that splits the backward adds its weight gradients per W action, not in one
 * product a step: its reference is one process running that schedule.
 */
const references = new Map<string, Promise<Trained>>();
function reference(M: number, schedule?: string): Promise<Trained> {
  const key = `${M} ${schedule ?? ''}`;
  let r = references.get(key);
  if (r === undefined) {
    r = train({ microBatches: M, ...(schedule ? { schedule } : {}) });
    references.set(key, r);
  }
  return r;
}

/** The bubble for M = 4 micro-batches, worked out by hand: (K−1)/(M+K−1) for GPipe and 1F1B, (K−1)/(3M+K−1) for ZB-H1. */
const theoreticalBubbleAt4: Record<string, Record<number, number>> = {
  gpipe: { 2: 1 / 5, 3: 2 / 6 }, '1f1b': { 2: 1 / 5, 3: 2 / 6 }, 'zb-h1': { 2: 1 / 13, 3: 2 / 14 },
};

describe('every placement, schedule and stage count matches single-process training', () => {
  for (const M of [1, 4]) {
    it(`single process, M=${M}: learns, drops the partial batch, and is reproducible`, async () => {
      const r = await reference(M);
      expect(r.summary.droppedPerEpoch).toBe(8);
      expect(r.summary.droppedSamples).toBe(16);
      expect(r.summary.testAccuracy!).toBeGreaterThan(0.6);
      const again = await train({ microBatches: M });
      expect(again.summary.weightsSha256).toBe(r.summary.weightsSha256);
    });
  }

  it('a different seed gives different weights', async () => {
    const other = await train({ microBatches: 1, seed: 8 });
    expect(other.summary.weightsSha256).not.toBe((await reference(1)).summary.weightsSha256);
  });

  it('another micro-batch count agrees to 1e-5 relative', async () => {
    const a = (await reference(1)).params;
    const b = (await reference(4)).params;
    const worst = worstRelativeError(a, b);
    expect(worst.value, worst.name).toBeLessThan(1e-5);
  });

  for (const placement of Object.keys(transports)) {
    for (const schedule of Object.keys(schedules)) {
      for (const stages of [2, 3]) {
        it(`${placement}, ${stages} stages, ${schedule}, M=4 gives the single-process weights`, async () => {
          const r = await train({ placement, stages, schedule, microBatches: 4, ...placementOptions(placement) });
          expect(r.summary.stages).toBe(stages);
          expect(r.summary.placement).toBe(placement);
          expect(r.summary.schedule).toBe(schedule);
          expect(r.summary.theoreticalBubbleFraction).toBeCloseTo(theoreticalBubbleAt4[schedule]?.[stages] ?? theoreticalBubble(schedule, stages, 4), 12);
          // Downstream stages wait for their first activation: some idle share, never all of it.
          expect(r.summary.bubbleFraction).toBeGreaterThan(0);
          expect(r.summary.bubbleFraction).toBeLessThan(1);
          if (!splitsBackward(getSchedule(schedule)(stages, 4))) {
            expect(r.summary.weightsSha256).toBe((await reference(4)).summary.weightsSha256);
          } else {
            expect(r.summary.weightsSha256).toBe((await reference(4, schedule)).summary.weightsSha256);
            const worst = worstRelativeError((await reference(4)).params, r.params);
            expect(worst.value, worst.name).toBeLessThan(1e-5);
          }
        });
      }
    }
  }

  it('threads with one stage and M=1 gives the single-process weights', async () => {
    const r = await train({ placement: 'threads', microBatches: 1 });
    expect(r.summary.weightsSha256).toBe((await reference(1)).summary.weightsSha256);
  });
});

describe('coordinator options are validated where they enter', () => {
  it('names the bad option', () => {
    expect(() => new Coordinator({ model: spec, dataset: data, batchSize: 30, microBatches: 4 })).toThrow(/options.batchSize 30 is not divisible by 4 micro-batches/);
    expect(() => new Coordinator({ model: spec, dataset: data, stages: 9 })).toThrow(/cannot cut a model of 5 layers into 9 stages/);
    expect(() => new Coordinator({ model: spec, dataset: data, stages: 3, microBatches: 2, batchSize: 32, schedule: '1f1b' })).toThrow(/micro-batch/);
    expect(() => new Coordinator({ model: spec, dataset: data, schedule: 'zigzag' })).toThrow(Object.keys(schedules).join(', '));
    expect(() => new Coordinator({ model: spec, dataset: data, placement: 'carrier-pigeon' })).toThrow(`options.placement must be one of ${Object.keys(transports).join(', ')}, got 'carrier-pigeon'`);
    expect(() => new Coordinator({ model: spec, dataset: data, epochs: 0 })).toThrow(/epochs must be a positive integer, got 0/);
    expect(() => new Coordinator({ model: spec, dataset: data, optimizer: 'sgd', lr: -1 })).toThrow(/lr must be a positive number/);
  });

  it('an unknown placement is refused before any actor starts, naming the choices', async () => {
    expect(() => new Coordinator({ model: spec, dataset: data, placement: 'toString' })).toThrow(`options.placement must be one of ${Object.keys(transports).join(', ')}, got 'toString'`);
  });
});

describe('convolutional, normalization and dropout layers run in every placement', () => {
  const cnn: ModelSpec = {
    inputShape: [784],
    layers: [
      { type: 'reshape', shape: [1, 28, 28] },
      { type: 'conv2d', inChannels: 1, outChannels: 4, kernel: 3, padding: 1 }, { type: 'relu' }, { type: 'maxPool2d', kernel: 2 },
      { type: 'batchNorm', channels: 4 }, { type: 'flatten' }, { type: 'dropout', rate: 0.2 },
      { type: 'dense', inputs: 4 * 14 * 14, units: 10, init: 'xavier' },
    ],
    loss: 'softmaxCrossEntropy',
  };
  const small = () => ({ train: subset(data.train, Array.from({ length: 128 }, (_, i) => i)), test: subset(data.test, Array.from({ length: 64 }, (_, i) => i)) });

  it('a CNN split into two stages (threads and gRPC) gives the single-process weights', async () => {
    const run = async (o: CoordinatorOptions) => {
      const c = new Coordinator({ model: cnn, dataset: small(), epochs: 1, batchSize: 32, microBatches: 2, optimizer: 'adam', seed: 11, ...o });
      try {
        return (await c.train()).weightsSha256;
      } finally {
        await c.close();
      }
    };
    const one = await run({});
    expect(await run({ placement: 'threads', stages: 2, schedule: '1f1b' })).toBe(one);
    expect(await run({ placement: 'grpc', stages: 2, nodes: nodes.map((n) => n.address) })).toBe(one);
  });
});

describe('a mixed placement through the programmatic API', () => {
  it('one stage on a worker thread, one in this process and one on a gRPC node give the single-process weights', async () => {
    const run = async (o: CoordinatorOptions) => {
      const c = new Coordinator({ model: spec, dataset: data, epochs: 1, batchSize: 32, lr: 0.1, seed: 7, microBatches: 4, ...o });
      try {
        return (await c.train()).weightsSha256;
      } finally {
        await c.close();
      }
    };
    const one = await run({});
    const mixed = new MixedTransport(['threads', 'local', `grpc:${nodes[0]!.address}`]);
    expect(await run({ placement: mixed, stages: 3, schedule: '1f1b' })).toBe(one);
  });
});
