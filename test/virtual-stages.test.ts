/**
 * Interleaved 1F1B (`--schedule interleaved-1f1b --virtual-stages V`): the schedule as data
 * (per-device lists naming their chunk), its validation and simulation (the bubble is
 * (K-1)/(V·M+K-1)), the option checks, and the runs: K=2 devices × V=2 chunks on the local,
 * threads and gRPC placements train the weights of a plain 4-stage run bit for bit (V=3, R=2
 * and checkpoints across the two layouts too), and each device computes in its schedule's order.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Coordinator, resolveOptions, type CoordinatorOptions } from '../coordinator/index.js';
import {
  byStage, getSchedule, interleaved1F1B, oneFOneB, simulateSchedule, theoreticalBubble, validateSchedule,
} from '../coordinator/schedules/index.js';
import { StageGroup } from '../coordinator/stage-group.js';
import { GrpcTransport, LocalTransport, ThreadsTransport, type Transport } from '../coordinator/transports/index.js';
import { BubbleMeter } from '../coordinator/summary.js';
import { pipelineStep, shardMinibatch } from '../coordinator/pipeline.js';
import { formatAction, type Action, type Schedule } from '../src/wire/index.js';
import { decodeSpans } from '../src/wire/trace.js';
import type { ModelSpec } from '../src/nn/index.js';
import { backend, setBackend } from '../src/tensor/backend.js';
import { Tensor } from '../src/tensor/tensor.js';
import { ChainruleError } from '../src/errors.js';
import { firstDigits } from './helpers.js';
import { startNode } from '../node/server.js';
import { DeviceTurns } from '../node/device-turns.js';
import { scheduleError, scheduleText as text } from './helpers.js';


describe('interleaved-1f1b as data', () => {
  it('K=2, V=2, M=4: Megatron’s order (rounds of K micro-batches per chunk, warm-up (V-1)K + 2(K-1-d))', () => {
    expect(text(interleaved1F1B(2, 4, 2))).toEqual([
      '0F0 0F1 2F0 2F1 0F2 2B0 0F3 2B1 2F2 0B0 2F3 0B1 2B2 2B3 0B2 0B3',
      '1F0 1F1 3F0 3B0 3F1 3B1 1F2 1B0 1F3 1B1 3F2 3B2 3F3 3B3 1B2 1B3',
    ]);
    // What each chunk's actor runs: its own actions in its device's order.
    expect(text(byStage(interleaved1F1B(2, 4, 2), 2))).toEqual([
      '0F0 0F1 0F2 0F3 0B0 0B1 0B2 0B3',
      '1F0 1F1 1F2 1B0 1F3 1B1 1B2 1B3',
      '2F0 2F1 2B0 2B1 2F2 2F3 2B2 2B3',
      '3F0 3B0 3F1 3B1 3F2 3B2 3F3 3B3',
    ]);
  });

  it('V=1 is 1F1B exactly, and the registry’s (K, M) call is V=1', () => {
    for (let K = 1; K <= 4; K++) for (let M = K; M <= 8; M++) expect(interleaved1F1B(K, M, 1)).toEqual(oneFOneB(K, M));
    expect(getSchedule('interleaved-1f1b')(3, 5)).toEqual(oneFOneB(3, 5));
  });

  const cases: [number, number, number][] = [];
  for (let K = 1; K <= 4; K++) for (let V = 1; V <= 4; V++) for (const r of [1, 2, 3]) cases.push([K, V, K * r]);

  it('validates for K ≤ 4, V ≤ 4, M ∈ {K, 2K, 3K}: every chunk on device v mod K, each action once, backwards ascending', () => {
    for (const [K, V, M] of cases) {
      const s = interleaved1F1B(K, M, V);
      expect(s).toHaveLength(K);
      expect(validateSchedule(s, K, M, V).ok).toBe(true);
      for (let d = 0; d < K; d++) {
        const want: string[] = [];
        for (let c = 0; c < V; c++) for (let m = 0; m < M; m++) want.push(`${c * K + d}F${m}`, `${c * K + d}B${m}`);
        expect(s[d]!.map(formatAction).sort()).toEqual(want.sort());
      }
    }
  });

  it('the simulator’s idle fraction is (K-1)/(V·M+K-1) (unit-time chunk actions), and theoreticalBubble gives it', () => {
    for (const [K, V, M] of cases) {
      const want = (K - 1) / (V * M + K - 1);
      const sim = simulateSchedule(interleaved1F1B(K, M, V), { weightTicks: 1 });
      expect(sim.ok).toBe(true);
      // F 1 tick, B 2 (input and weight gradient): 3VM busy ticks per device, 3(K-1) idle.
      expect(sim.ticks, `K=${K} V=${V} M=${M}`).toBe(3 * (V * M + K - 1));
      expect(sim.idleFraction, `K=${K} V=${V} M=${M}`).toBeCloseTo(want, 12);
      expect(theoreticalBubble('interleaved-1f1b', K, M, V)).toBeCloseTo(want, 12);
    }
    // Against 1F1B on the same K·V stages' worth of layers: K=2, M=8 → 1/9 for 1f1b, 1/17 with V=2, 1/25 with V=3.
    expect(theoreticalBubble('1f1b', 2, 8)).toBeCloseTo(1 / 9, 12);
    expect(theoreticalBubble('interleaved-1f1b', 2, 8, 2)).toBeCloseTo(1 / 17, 12);
    expect(theoreticalBubble('interleaved-1f1b', 2, 8, 3)).toBeCloseTo(1 / 25, 12);
  });

  it('the simulator runs one action at a time per device and keeps the chunk dependencies', () => {
    const K = 3, V = 2, M = 6;
    const sim = simulateSchedule(interleaved1F1B(K, M, V), { weightTicks: 1 });
    const end = new Map<string, number>();
    const start = new Map<string, number>();
    sim.timeline.forEach((row, t) => row.forEach((a, d) => {
      if (!a) return;
      expect(a.stage % K).toBe(d);
      const k = formatAction(a);
      if (!start.has(k)) start.set(k, t);
      end.set(k, t);
    }));
    for (let v = 0; v < K * V; v++) {
      for (let m = 0; m < M; m++) {
        if (v > 0) expect(start.get(`${v}F${m}`)!).toBeGreaterThan(end.get(`${v - 1}F${m}`)!);
        if (v < K * V - 1) expect(start.get(`${v}B${m}`)!).toBeGreaterThan(end.get(`${v + 1}B${m}`)!);
        expect(start.get(`${v}B${m}`)!).toBeGreaterThan(end.get(`${v}F${m}`)!);
      }
    }
  });

  it('bad counts: clear errors naming them', () => {
    const e = scheduleError(() => interleaved1F1B(2, 3, 2));
    expect(e.code).toBe('SCHEDULE_MICROBATCH_MULTIPLE');
    expect(e.message).toContain('got 3 micro-batch(es) for 2 stage(s)');
    expect(e.hint).toContain('use 4 micro-batches');
    expect(scheduleError(() => interleaved1F1B(2, 8, 0)).code).toBe('SCHEDULE_BAD_ARGUMENT');
    expect(scheduleError(() => interleaved1F1B(2, 8, 1.5)).message).toContain('virtualStages must be a positive integer, got 1.5');
    expect(scheduleError(() => interleaved1F1B(4, 2, 2)).code).toBe('SCHEDULE_TOO_FEW_MICROBATCHES');
    expect(scheduleError(() => validateSchedule(interleaved1F1B(2, 4, 2), 2, 4, 0)).code).toBe('SCHEDULE_BAD_ARGUMENT');
  });
});

describe('the validator on per-device lists', () => {
  const good = () => interleaved1F1B(2, 4, 2);

  it('an action on the device that does not hold its chunk', () => {
    const s = good();
    s[0]![0] = { stage: 1, kind: 'F', microBatch: 0 };
    const e = scheduleError(() => validateSchedule(s, 2, 4, 2));
    expect(e.code).toBe('SCHEDULE_WRONG_STAGE');
    expect(e.message).toContain("1F0 (an action of virtual stage 1) is on device 0's list at step 0; device 0 of 2 holds the stages 0, 2");
    expect(e.message).toContain('<-- ERROR HERE');
    const out = good();
    out[1]![0] = { stage: 5, kind: 'F', microBatch: 0 };
    expect(scheduleError(() => validateSchedule(out, 2, 4, 2)).hint).toContain('use stages 0..3 (2 device(s) × 2 virtual stage(s))');
  });

  it('a chunk’s action missing, and a chunk’s backwards out of order', () => {
    const s = good();
    s[1] = s[1]!.filter((a) => formatAction(a) !== '3B2');
    const e = scheduleError(() => validateSchedule(s, 2, 4, 2));
    expect(e.code).toBe('SCHEDULE_MISSING_ACTION');
    expect(e.message).toContain('device 1 never runs 3B2');

    const swapped = good();
    const i = swapped[0]!.findIndex((a) => formatAction(a) === '2B0');
    const j = swapped[0]!.findIndex((a) => formatAction(a) === '2B1');
    [swapped[0]![i], swapped[0]![j]] = [swapped[0]![j]!, swapped[0]![i]!];
    const o = scheduleError(() => validateSchedule(swapped, 2, 4, 2));
    expect(o.code).toBe('SCHEDULE_BACKWARD_ORDER');
    expect(o.message).toContain('stage 2 runs 2B0');
  });

  it('a device order that deadlocks: chunk 2 waits for 1F0 that device 1 runs after what needs 2F0', () => {
    // Device 1 runs 3F0 (needs 2F0) before 1F0; device 0 runs 2F0 (needs 1F0) first.
    const s: Schedule = [
      ['2F0', '0F0', '0B0', '2B0'],
      ['3F0', '1F0', '3B0', '1B0'],
    ].map((l) => l.map((t) => ({ stage: Number(t[0]), kind: t[1] as Action['kind'], microBatch: Number(t[2]) })));
    const e = scheduleError(() => validateSchedule(s, 2, 1, 2));
    expect(e.code).toBe('SCHEDULE_DEADLOCK');
    expect(e.message).toContain('which needs 1F0');
  });
});

describe('DeviceTurns (one device’s order over its stages)', () => {
  it('runs the actions in the order given, whoever asks first; finished wakes every stage', async () => {
    const turns = new DeviceTurns('device 0', 5_000);
    const order = ['0F0', '2F0', '4F0', '4B0', '2B0', '0B0'];
    turns.begin(3, order);
    turns.begin(3, [...order]); // the other stages give the same
    const ran: string[] = [];
    const stage = async (v: number) => {
      for (const t of order.filter((x) => Number(x[0]) === v)) {
        await turns.turn(3, t);
        ran.push(t);
        turns.done(3, t);
      }
      await turns.finished(3);
      ran.push(`end ${v}`);
    };
    await Promise.all([stage(4), stage(2), stage(0)]);
    expect(ran.slice(0, 6)).toEqual(order);
    expect(ran.slice(6).sort()).toEqual(['end 0', 'end 2', 'end 4']);
  });

  it('refuses a different order, an action not to come, an older step; a failure stops the others', async () => {
    const turns = new DeviceTurns('device 1', 5_000);
    turns.begin(1, ['1F0', '3F0', '3B0', '1B0']);
    expect(() => turns.begin(1, ['3F0', '1F0', '3B0', '1B0'])).toThrow('device 1: the actors of this device were given different orders for step 1');
    expect(() => turns.begin(0, [])).toThrow('step 0 is older than the current step 1');
    await expect(turns.turn(1, '5F0')).rejects.toThrow('5F0 is not among the device\'s actions still to run in step 1');
    const waiting = turns.turn(1, '3B0');
    turns.fail(1, new Error('boom'), 'stage 1');
    await expect(waiting).rejects.toThrow('device 1: stage 1, on the same device, failed: boom');
    await expect(turns.turn(1, '1F0')).rejects.toThrow('failed: boom');
    // A newer step starts afresh.
    turns.begin(2, ['1F0']);
    await expect(turns.turn(2, '1F0')).resolves.toBeUndefined();
  });
});

describe('options', () => {
  const ok = (o: CoordinatorOptions) => resolveOptions({ batchSize: 32, ...o });
  const bad = (o: CoordinatorOptions, ...texts: string[]) => {
    let err: unknown;
    try { ok(o); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(ChainruleError);
    for (const t of texts) expect((err as Error).message).toContain(t);
  };

  it('defaults to 1; V > 1 with interleaved-1f1b resolves', () => {
    expect(ok({}).virtualStages).toBe(1);
    expect(ok({ stages: 2, virtualStages: 2, schedule: 'interleaved-1f1b', microBatches: 4 }).virtualStages).toBe(2);
    // A partition lists K·V chunks; the stages follow from it.
    expect(ok({ partition: [1, 1, 1, 2], virtualStages: 2, schedule: 'interleaved-1f1b', microBatches: 4 }).stages).toBe(2);
  });

  it('refuses bad values and combinations, naming the options', () => {
    bad({ virtualStages: 0 }, 'options.virtualStages must be a positive integer, got 0');
    bad({ virtualStages: 1.5 }, 'options.virtualStages must be a positive integer');
    bad({ stages: 2, virtualStages: 2, schedule: '1f1b', microBatches: 4 }, 'options.virtualStages 2 needs an interleaved schedule, got options.schedule 1f1b', 'interleaved-1f1b');
    bad({ stages: 4, virtualStages: 2, schedule: 'interleaved-1f1b', microBatches: 2 }, 'options.microBatches 2 is not a multiple of options.stages 4', 'use options.microBatches 4');
    bad({ stages: 2, virtualStages: 2, schedule: 'interleaved-1f1b', microBatches: 4, partition: [1, 1, 3] }, 'options.partition lists 3 chunks but options.stages 2 × options.virtualStages 2 makes 4');
    bad({ virtualStages: 2, schedule: 'interleaved-1f1b', microBatches: 4, partition: [1, 1, 3] }, 'options.partition lists 3 chunks, not a multiple of options.virtualStages 2');
  });

  it('K·V above the layers, and a full-batch optimizer, are refused before any actor starts', () => {
    const data = firstDigits(64, 16);
    expect(() => new Coordinator({ model: spec, dataset: data, stages: 2, virtualStages: 4, schedule: 'interleaved-1f1b', microBatches: 4, batchSize: 32 }))
      .toThrow('options.stages 2 × options.virtualStages 4 makes 8 chunks, but the model has 7 layers to cut');
    expect(() => new Coordinator({ model: spec, dataset: data, stages: 2, virtualStages: 2, schedule: 'interleaved-1f1b', microBatches: 4, batchSize: 32, optimizer: 'lbfgs' }))
      .toThrow('options.virtualStages 2 is not supported with the full-batch optimizer lbfgs');
  });

  it('the CLI flag', async () => {
    const { parseCliOptions, trainUsage } = await import('../coordinator/options.js');
    expect(parseCliOptions(['--stages', '2', '--virtual-stages', '3', '--schedule', 'interleaved-1f1b', '--micro-batches', '4', '--batch-size', '32']).options.virtualStages).toBe(3);
    expect(() => parseCliOptions(['--virtual-stages', '2', '--stages', '2', '--micro-batches', '4'])).toThrow('--virtual-stages 2 needs an interleaved schedule, got --schedule gpipe');
    expect(trainUsage()).toContain('--virtual-stages V');
  });
});

// 7 layers: K=2 devices hold V=2 (4 chunks) or V=3 (6 chunks).
const spec: ModelSpec = {
  inputShape: [784],
  layers: [
    { type: 'dense', inputs: 784, units: 48, init: 'he' }, { type: 'relu' },
    { type: 'dense', inputs: 48, units: 32, init: 'he' }, { type: 'tanh' },
    { type: 'dense', inputs: 32, units: 24, init: 'he' }, { type: 'relu' },
    { type: 'dense', inputs: 24, units: 10, init: 'xavier' },
  ],
  loss: 'softmaxCrossEntropy',
};
const data = firstDigits(256, 64);

const initialBackend = backend();
afterEach(() => setBackend(initialBackend));

async function train(o: CoordinatorOptions): Promise<Awaited<ReturnType<Coordinator['train']>>> {
  const c = new Coordinator({ model: spec, dataset: data, epochs: 1, batchSize: 32, lr: 0.1, seed: 7, microBatches: 4, ...o });
  try {
    return await c.train();
  } finally {
    await c.close();
  }
}

describe('runs: K=2 devices × V chunks train the weights of the plain K·V-stage run', () => {
  const interleaved = { stages: 2, virtualStages: 2, schedule: 'interleaved-1f1b' } as const;

  it('V=2 on local and on threads: bit for bit the plain 4-stage 1f1b run (same partition, same M)', async () => {
    const plain = await train({ stages: 4, schedule: '1f1b' });
    const local = await train({ ...interleaved, placement: 'local' });
    const threads = await train({ ...interleaved, placement: 'threads' });
    expect(local.partition).toEqual(plain.partition);
    expect(local.weightsSha256).toBe(plain.weightsSha256);
    expect(threads.weightsSha256).toBe(plain.weightsSha256);
    for (const s of [local, threads]) {
      expect(s.stages).toBe(4);
      expect(s.virtualStages).toBe(2);
      expect(s.schedule).toBe('interleaved-1f1b');
      expect(s.theoreticalBubbleFraction).toBeCloseTo(1 / (2 * 4 + 1), 12);
      expect(s.bubbleFraction).toBeGreaterThan(0);
      expect(s.bubbleFraction).toBeLessThan(1);
    }
    expect(plain.virtualStages).toBeUndefined();
  });

  it('V=3 (6 chunks) on threads, and R=2 replicas of K=2 × V=2 on threads: the plain runs’ weights', async () => {
    // (1f1b needs M >= 6 on 6 stages; gpipe sums the gradients in the same order.)
    const plain6 = await train({ stages: 6, schedule: 'gpipe' });
    const v3 = await train({ stages: 2, virtualStages: 3, schedule: 'interleaved-1f1b', placement: 'threads' });
    expect(v3.weightsSha256).toBe(plain6.weightsSha256);
    expect(v3.theoreticalBubbleFraction).toBeCloseTo(1 / (3 * 4 + 1), 12);
    const plainR2 = await train({ stages: 4, schedule: '1f1b', replicas: 2 });
    const r2 = await train({ ...interleaved, replicas: 2, placement: 'threads' });
    expect(r2.weightsSha256).toBe(plainR2.weightsSha256);
  });

  it('a (K=2, V=2) checkpoint resumes as a plain 4-stage run and back, to the bit of the uninterrupted run', async () => {
    const whole = await train({ stages: 4, schedule: '1f1b', epochs: 2 });
    const dir = mkdtempSync(join(tmpdir(), 'chainrule-virtual-'));
    try {
      await train({ ...interleaved, placement: 'threads', epochs: 1, checkpoint: join(dir, 'a') });
      expect((await train({ stages: 4, schedule: '1f1b', epochs: 2, resume: join(dir, 'a') })).weightsSha256).toBe(whole.weightsSha256);
      await train({ stages: 4, schedule: '1f1b', epochs: 1, checkpoint: join(dir, 'b') });
      const back = await train({ ...interleaved, epochs: 2, resume: join(dir, 'b') });
      expect(back.resumedFrom).toBeDefined();
      expect(back.weightsSha256).toBe(whole.weightsSha256);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('gRPC nodes: a device’s chunks on one node (two nodes, and both devices on one), the plain run’s weights', async () => {
    const nodes = [await startNode({ host: '127.0.0.1', port: 0 }), await startNode({ host: '127.0.0.1', port: 0 })];
    try {
      const plain = await train({ stages: 4, schedule: '1f1b' });
      const two = await train({ ...interleaved, placement: 'grpc', nodes: nodes.map((n) => n.address) });
      expect(two.weightsSha256).toBe(plain.weightsSha256);
      const one = await train({ ...interleaved, placement: 'grpc', nodes: [nodes[0]!.address] });
      expect(one.weightsSha256).toBe(plain.weightsSha256);
    } finally {
      await Promise.all(nodes.map((n) => n.close()));
    }
  });

  it('a device’s worker thread terminated mid-epoch: its chunks rebuilt from the commit, the uninterrupted run’s weights', async () => {
    const whole = await train({ ...interleaved, epochs: 2 });
    const transport = new ThreadsTransport();
    let killed = false;
    const s = await train({ ...interleaved, epochs: 2, placement: transport, commitEvery: 3,
      onStep: (r) => { if (r.step === 10 && !killed) { killed = true; void transport.threads[1]!.terminate(); } } });
    expect(killed).toBe(true);
    expect(s.recoveries).toHaveLength(1);
    expect(s.recoveries[0]!.failed).toMatch(/worker thread of device 1/);
    expect(s.weightsSha256).toBe(whole.weightsSha256);
  });

  it('a Transport that cannot co-locate chunks is refused, naming --virtual-stages', async () => {
    const t: Transport = { kind: 'elsewhere', open: async () => [], close: async () => {} };
    const c = new Coordinator({ model: spec, dataset: data, ...interleaved, microBatches: 4, batchSize: 32, placement: t });
    try {
      await expect(c.open()).rejects.toThrow('--virtual-stages 2 (options.virtualStages) is not supported with the elsewhere placement');
    } finally {
      await c.close();
    }
  });
});

describe('each device computes in its schedule’s order', () => {
  const nodes: { address: string; close(): Promise<void> }[] = [];
  beforeAll(async () => { for (let i = 0; i < 2; i++) nodes.push(await startNode({ host: '127.0.0.1', port: 0 })); });
  afterAll(async () => { await Promise.all(nodes.map((n) => n.close())); });
  const makers: [string, () => Transport][] = [
    ['local', () => new LocalTransport()], ['threads', () => new ThreadsTransport()], ['grpc', () => new GrpcTransport(nodes.map((n) => n.address))],
  ];
  for (const [kind, make] of makers) {
    it(`${kind}: device d’s forward and backward spans, merged over its chunks, follow schedule[d]`, async () => {
      const K = 2, V = 2, M = 4;
      const bounds = [0, 2, 4, 6, 7];
      const transport = make();
      const group = new StageGroup('run-order-test', 1, K * V, V);
      try {
        await group.open(transport, (k) => ({ model: spec, start: bounds[k]!, end: bounds[k + 1]!, seed: 7, capacity: M, replicas: 1, backend: backend().name }));
        const schedule = interleaved1F1B(K, M, V);
        const x = new Tensor(data.train.inputs.slice(0, 32 * 784), [32, 784]);
        const parts = shardMinibatch(x, data.train.labels!.slice(0, 32), 1, M);
        // One plain step first (warms the layers), then one traced by hand.
        await pipelineStep(group, spec, parts, schedule, new BubbleMeter());
        group.step++;
        const own = byStage(schedule, V);
        const replies = await group.all((_, k) => ({
          type: 'runStep', actions: own[k]!.map(formatAction), order: schedule[k % K]!.map(formatAction),
          inputs: k === 0 ? parts[0]!.map((p) => p.x) : undefined,
          targets: k === K * V - 1 ? parts[0]!.map((p) => p.y) : undefined, trace: true,
        }), 'stepDone');
        for (let d = 0; d < K; d++) {
          const ran: { t0: number; what: string }[] = [];
          for (let v = d; v < K * V; v += K) {
            for (const s of decodeSpans(replies[v]!.report.trace!)!) {
              if (s.kind === 'forward' || s.kind === 'backward') ran.push({ t0: s.t0, what: `${v}${s.kind === 'forward' ? 'F' : 'B'}${s.microBatch}` });
            }
          }
          ran.sort((a, b) => a.t0 - b.t0);
          expect(ran.map((r) => r.what)).toEqual(schedule[d]!.map(formatAction));
        }
      } finally {
        await transport.close();
      }
    });
  }

  it('an actor given a device order on a placement that hosts one stage per device refuses it', async () => {
    const transport = new LocalTransport();
    const group = new StageGroup('run-order-refused', 1, 2);
    try {
      await group.open(transport, (k) => ({ model: spec, start: k === 0 ? 0 : 4, end: k === 0 ? 4 : 7, seed: 7, capacity: 2, replicas: 1, backend: backend().name }));
      await expect(group.request(0, { type: 'runStep', actions: ['0F0'], order: ['0F0'], inputs: [new Tensor(data.train.inputs.slice(0, 4 * 784), [4, 784])] }, 'stepDone'))
        .rejects.toThrow('shares no device with other stages here');
    } finally {
      await transport.close();
    }
  });
});
