/**
 * Data parallelism: R replicas of a K-stage pipeline, each taking a contiguous shard of every
 * minibatch, their gradients reduced among the stage-k actors in one fixed order. For the
 * same seed, R and M every placement ends with the same weights; against one replica with
 * R·M micro-batches they agree to 1e-5.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Coordinator, listCheckpoints, transports, type CoordinatorOptions } from '../coordinator/index.js';
import { loadMnist, subset, type Dataset } from '../src/data/index.js';
import type { ModelSpec } from '../src/nn/index.js';
import type { NamedTensors } from '../src/wire/index.js';
import { startNode, type RunningNode } from '../node/server.js';
import { worstRelativeError } from './helpers.js';

const spec: ModelSpec = {
  inputShape: [784],
  layers: [
    { type: 'dense', inputs: 784, units: 40, init: 'he' }, { type: 'relu' },
    { type: 'dropout', rate: 0.2 },
    { type: 'dense', inputs: 40, units: 24, init: 'he' }, { type: 'tanh' },
    { type: 'dense', inputs: 24, units: 10, init: 'xavier' },
  ],
  loss: 'softmaxCrossEntropy',
};

let data: { train: Dataset; test: Dataset };
const nodes: RunningNode[] = [];

beforeAll(async () => {
  const m = loadMnist();
  // 260 samples in batches of 32: 8 steps, 4 samples dropped.
  data = { train: subset(m.train, Array.from({ length: 260 }, (_, i) => i)), test: subset(m.test, Array.from({ length: 200 }, (_, i) => i)) };
  for (let i = 0; i < 2; i++) nodes.push(await startNode({ host: '127.0.0.1', port: 0 }));
});

afterAll(async () => {
  await Promise.all(nodes.map((n) => n.close()));
});

async function train(o: CoordinatorOptions): Promise<{ sha: string; params: NamedTensors; summary: Awaited<ReturnType<Coordinator['train']>> }> {
  const placement = typeof o.placement === 'string' ? o.placement : 'local';
  const c = new Coordinator({ model: spec, dataset: data, epochs: 2, batchSize: 32, lr: 0.1, seed: 11, ...o, nodes: placement === 'grpc' ? nodes.map((n) => n.address) : undefined });
  try {
    const summary = await c.train();
    return { sha: summary.weightsSha256, params: await c.parameters(), summary };
  } finally {
    await c.close();
  }
}

const relativeError = (a: NamedTensors, b: NamedTensors) => worstRelativeError(a, b).value;

const localRuns = new Map<string, Promise<Awaited<ReturnType<typeof train>>>>();
/** The local run for these options, computed once per file whichever test asks first. */
function local(o: CoordinatorOptions) {
  const key = JSON.stringify(o);
  if (!localRuns.has(key)) localRuns.set(key, train({ ...o, placement: 'local' }));
  return localRuns.get(key)!;
}

describe('data-parallel replicas', () => {
  for (const placement of Object.keys(transports)) {
    for (const replicas of [1, 2]) {
      for (const [stages, schedule] of [[1, 'gpipe'], [2, '1f1b']] as const) {
        it(`${placement}, R=${replicas}, K=${stages}, ${schedule}, M=2 gives the local run's weights`, async () => {
          const o: CoordinatorOptions = { replicas, stages, schedule, microBatches: 2 };
          const r = await train({ ...o, placement });
          expect(r.summary.replicas).toBe(replicas);
          expect(r.summary.stages).toBe(stages);
          expect(r.sha).toBe((await local(o)).sha);
        });
      }
    }
  }

  it('R=2 with M=2 agrees with one replica of 4 micro-batches to 1e-5 (dropout streams included)', async () => {
    const a = await local({ replicas: 2, microBatches: 2 });
    const b = await local({ replicas: 1, microBatches: 4 });
    expect(a.sha).not.toBe(b.sha); // another summation order: not the same bits
    expect(relativeError(a.params, b.params)).toBeLessThan(1e-5);
    expect(a.summary.testAccuracy).toBeGreaterThan(0.5);
  });

  it('R=3 across mixed stage counts agrees with one replica too', async () => {
    const a = await train({ placement: 'threads', replicas: 3, microBatches: 1, batchSize: 33 });
    const b = await train({ placement: 'local', replicas: 1, microBatches: 3, batchSize: 33 });
    expect(relativeError(a.params, b.params)).toBeLessThan(1e-5);
    const same = await train({ placement: 'local', replicas: 3, microBatches: 1, batchSize: 33 });
    expect(same.sha).toBe(a.sha);
  });

  it('clipping sees the gradient reduced over every replica', async () => {
    const o: CoordinatorOptions = { replicas: 2, stages: 2, microBatches: 1, clipNorm: 0.05 };
    const threads = await train({ ...o, placement: 'threads' });
    expect(threads.sha).toBe((await local(o)).sha);
    const single = await local({ replicas: 1, stages: 2, microBatches: 2, clipNorm: 0.05 });
    expect(relativeError(threads.params, single.params)).toBeLessThan(1e-5);
  });

  it('a checkpoint written with R=2 resumes with R=2 bit-exactly and with R=1 to 1e-5', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'chainrule-replicas-'));
    const path = join(dir, 'r2.ckpt');
    await train({ replicas: 2, microBatches: 1, epochs: 1, checkpoint: path, placement: 'threads' });
    const resumed = await train({ replicas: 2, microBatches: 1, epochs: 2, resume: path });
    expect(resumed.sha).toBe((await local({ replicas: 2, microBatches: 1 })).sha);
    const other = await train({ replicas: 1, microBatches: 2, epochs: 2, resume: path });
    expect(relativeError(other.params, resumed.params)).toBeLessThan(1e-5);
  });

  it('thread replicas keep one copy of the parameters and optimizer slots, each updating its chunk: Adam with AMSGrad (three slots), R=3; checkpoints hold every chunk, both ways', async () => {
    const o: CoordinatorOptions = { replicas: 3, microBatches: 1, batchSize: 33, optimizer: 'adam', lr: 0.01, amsgrad: true };
    const whole = await local(o);
    const onThreads = join(mkdtempSync(join(tmpdir(), 'chainrule-shared-')), 'threads');
    const threads = await train({ ...o, placement: 'threads', checkpoint: onThreads });
    expect(threads.sha).toBe(whole.sha);
    // The first epoch's checkpoint (replica 0's state, slots updated by all three) resumed here, and a local one on threads.
    const first = (dir: string) => listCheckpoints(dir)[0]!.path;
    expect((await train({ ...o, placement: 'local', resume: first(onThreads) })).sha).toBe(whole.sha);
    const here = join(mkdtempSync(join(tmpdir(), 'chainrule-shared-')), 'local');
    await train({ ...o, placement: 'local', checkpoint: here });
    expect((await train({ ...o, placement: 'threads', resume: first(here) })).sha).toBe(whole.sha);
  });

  it('a batch size that R×M does not divide is refused, naming both', () => {
    expect(() => new Coordinator({ model: spec, dataset: data, batchSize: 30, replicas: 2, microBatches: 4 }))
      .toThrow(/options.batchSize 30 is not divisible by 2 replicas × 4 micro-batches/);
    expect(() => new Coordinator({ model: spec, dataset: data, replicas: 0 })).toThrow(/options.replicas must be a positive integer, got 0/);
  });
});
