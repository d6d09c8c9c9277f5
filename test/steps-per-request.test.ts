/**
 * Several steps to a request (options.stepsPerRequest): the actors run them back to back, so a
 * short step no longer pays a round trip to the coordinator. The same bits as one step at a
 * time on every placement; requests end at checkpoints and recovery commits; a thread lost
 * in the middle of a request is rebuilt and the run ends with the uninterrupted weights.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Coordinator, LocalTransport, ThreadsTransport, displayOnly, type CoordinatorOptions, type StepInfo, type Transport } from '../coordinator/index.js';
import { startNode, type RunningNode } from '../node/server.js';
import { trainClosed } from './helpers.js';
import { StageActor } from '../node/stage.js';
import { loadMnist, subset } from '../src/data/index.js';
import type { ModelSpec } from '../src/nn/index.js';
import { Tensor } from '../src/tensor/tensor.js';
import { MAX_STEPS_PER_REQUEST, type Reply } from '../src/wire/index.js';

const spec: ModelSpec = {
  inputShape: [784],
  layers: [
    { type: 'dense', inputs: 784, units: 24, init: 'he' }, { type: 'relu' }, { type: 'dropout', rate: 0.1 },
    { type: 'dense', inputs: 24, units: 16, init: 'he' }, { type: 'tanh' },
    { type: 'dense', inputs: 16, units: 10, init: 'xavier' },
  ],
  loss: 'softmaxCrossEntropy',
};
const m = loadMnist();
const data = { train: subset(m.train, Array.from({ length: 320 }, (_, i) => i)), test: subset(m.test, Array.from({ length: 64 }, (_, i) => i)) };
// A schedule (warm-up, cosine) and momentum: every step of a request has its own rate and slots.
const base: CoordinatorOptions = { model: spec, dataset: data, epochs: 2, batchSize: 32, lr: 0.1, seed: 9, optimizer: 'momentum', lrSchedule: 'cosine', warmupSteps: 3 };

/** The transport, counting the requests its actors get by type. */
function counted<T extends Transport>(t: T): T & { counts: Map<string, number> } {
  const counts = new Map<string, number>();
  const open = t.open.bind(t);
  t.open = async (layout, run) => (await open(layout, run)).map((h) => ({
    name: h.name,
    request: (req) => { counts.set(req.type, (counts.get(req.type) ?? 0) + 1); return h.request(req); },
  }));
  return Object.assign(t, { counts });
}

const run = (o: CoordinatorOptions) => trainClosed({ ...base, ...o });

const nodes: RunningNode[] = [];
beforeAll(async () => {
  for (let i = 0; i < 2; i++) nodes.push(await startNode({ host: '127.0.0.1', port: 0 }));
});
afterAll(async () => { await Promise.all(nodes.map((n) => n.close())); });

describe('steps per request', () => {
  const layouts: [string, CoordinatorOptions][] = [
    ['one stage', {}],
    ['2 replicas', { replicas: 2 }],
    ['2 stages, 1F1B, 2 micro-batches', { stages: 2, microBatches: 2, schedule: '1f1b' }],
    ['2 replicas × 2 stages, ZB-H1', { replicas: 2, stages: 2, microBatches: 2, schedule: 'zb-h1' }],
  ];
  for (const [name, layout] of layouts) {
    it(`${name}: 4 steps to a request on local, threads and gRPC give the bits of one step to a request`, async () => {
      const one = await run({ ...layout, stepsPerRequest: 1 });
      // In-process actors get one step a request whatever is asked: their requests are calls.
      const local = counted(new LocalTransport());
      expect((await run({ ...layout, stepsPerRequest: 4, placement: local, commitEvery: 0 })).weightsSha256, 'local').toBe(one.weightsSha256);
      expect(local.counts.get('runSteps') ?? 0).toBe(0);
      const threads = counted(new ThreadsTransport());
      const s = await run({ ...layout, stepsPerRequest: 4, placement: threads, commitEvery: 0 });
      expect(s.weightsSha256, 'threads').toBe(one.weightsSha256);
      // 10 steps an epoch: requests of 4, 4 and 2 in each, to every actor.
      const actors = (layout.replicas ?? 1) * (layout.stages ?? 1);
      expect(threads.counts.get('runSteps')).toBe(3 * 2 * actors);
      expect(threads.counts.get('runStep') ?? 0).toBe(0);
      const grpc = await run({ ...layout, stepsPerRequest: 4, placement: 'grpc', nodes: nodes.map((n) => n.address), commitEvery: 0 });
      expect(grpc.weightsSha256, 'grpc').toBe(one.weightsSha256);
    });
  }

  it('auto groups short steps once it has timed them; an onStep callback gets one step a request, a display-only one does not stop grouping', async () => {
    const auto = counted(new ThreadsTransport());
    const s = await run({ placement: auto, epochs: 3 });
    expect(auto.counts.get('runSteps') ?? 0).toBeGreaterThan(0);
    expect(auto.counts.get('runStep') ?? 0).toBeGreaterThan(0); // the first steps, timed one at a time
    const watched = counted(new ThreadsTransport());
    const seen: number[] = [];
    const w = await run({ placement: watched, epochs: 3, onStep: (i) => { seen.push(i.step); } });
    expect(watched.counts.get('runSteps') ?? 0).toBe(0);
    expect(seen).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    expect(w.weightsSha256).toBe(s.weightsSha256);
    const shown = counted(new ThreadsTransport());
    const steps: number[] = [];
    await run({ placement: shown, epochs: 3, onStep: displayOnly((i: StepInfo) => { steps.push(i.step); }) });
    expect(shown.counts.get('runSteps') ?? 0).toBeGreaterThan(0);
    expect(steps).toEqual(seen); // still once per step, in order
  });

  it('a request ends at each checkpoint: checkpoint-every 3 with 4 steps to a request, and a resume from step 3 ends with the same weights', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'chainrule-spr-'));
    const full = await run({ stepsPerRequest: 4, placement: 'threads', checkpoint: dir, checkpointEvery: 3, keep: 10 });
    const { listCheckpoints } = await import('../coordinator/index.js');
    expect(listCheckpoints(dir).map((c) => c.step)).toEqual([3, 6, 9, 12, 15, 18]);
    const resumed = await run({ stepsPerRequest: 4, placement: 'threads', resume: join(dir, 'step-3') });
    expect(resumed.weightsSha256).toBe(full.weightsSha256);
  });

  it('a worker thread terminated in the middle of a request: rebuilt from the commit that started a request, the same weights', async () => {
    const o = { replicas: 2, commitEvery: 4, stepsPerRequest: 4, optimizer: 'adam', lr: 0.01, epochs: 3 } as const;
    const local = await run({ ...o, placement: 'local' });
    const transport = counted(new ThreadsTransport());
    let killed = false;
    // onStep runs after its request: the timer fires while the next one runs.
    const s = await run({ ...o, placement: transport, onStep: (r) => { if (r.step === 9 && !killed) { killed = true; setTimeout(() => { void transport.threads[1]!.terminate(); }, 1); } } });
    expect(s.weightsSha256).toBe(local.weightsSha256);
    expect(s.recoveries).toHaveLength(1);
    expect(s.recoveries[0]!.stepsReplayed).toBeLessThanOrEqual(4);
  });

  it('refuses what needs the coordinator between steps, and a runSteps the actor cannot run', async () => {
    expect(() => new Coordinator({ ...base, stepsPerRequest: 4, clipNorm: 1 })).toThrow(/stepsPerRequest 4 cannot be used with options.clipNorm/);
    expect(() => new Coordinator({ ...base, stepsPerRequest: 4, skipNonFinite: true })).toThrow(/skipNonFinite/);
    expect(() => new Coordinator({ ...base, stepsPerRequest: MAX_STEPS_PER_REQUEST + 1 })).toThrow(/stepsPerRequest/);
    const a = new StageActor(0);
    const header = { run: 'r', stage: 0, step: 0, microBatch: -1 };
    expect((await a.handle({ ...header, type: 'configure', config: { model: spec, start: 0, end: spec.layers.length, seed: 1, capacity: 1 } })).type).toBe('configured');
    const bad = async (steps: unknown) => (await a.handle({ ...header, type: 'runSteps', steps } as never)) as Extract<Reply, { type: 'error' }>;
    expect((await bad([])).message).toMatch(/stage 0: runSteps field 'steps' must be a list of 1 to 256 steps/);
    expect((await bad([{ actions: ['0F0', '0B0'] }, 7])).message).toMatch(/runSteps step 1 \(entry 1\) must be a map with a list of actions/);
    const x = new Tensor(new Float32Array(2 * 784), [2, 784]);
    const ok = await a.handle({ ...header, type: 'runSteps', steps: [0, 1].map(() => ({ actions: ['0F0', '0B0'], inputs: [x], targets: [Int32Array.from([1, 2])] })) });
    expect(ok.type).toBe('stepsDone');
    expect((ok as Extract<Reply, { type: 'stepsDone' }>).reports).toHaveLength(2);
  });

  it('a step that overflows in a later step of a request is named, as one step a request names it', async () => {
    const { NonFiniteError } = await import('../coordinator/nonfinite.js');
    // A rate that makes the weights overflow within a few steps.
    const o = { placement: 'threads', lr: 1e37, lrSchedule: undefined, warmupSteps: undefined, epochs: 1 } as const;
    const err = await run({ ...o, stepsPerRequest: 4 }).catch((e: unknown) => e);
    const single = await run({ ...o, stepsPerRequest: 1 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NonFiniteError);
    expect(single).toBeInstanceOf(NonFiniteError);
    expect((err as Error).message).toBe((single as Error).message);
    expect((err as Error).message).toMatch(/^step 2 \(epoch 1\): the loss/); // the third of the request of steps 0-3
  });
});
