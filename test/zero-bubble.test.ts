/**
 * ZB-H1 (coordinator/schedules/zb-h1.ts): the backward split into B (input gradient) and W
 * (weight gradient), W filling the bubbles. The schedule as data and its bubble in the
 * simulator against the paper's figures; validateSchedule's W rules; the stage runtime's W
 * (SharedWeight's deferred products, one GEMM per W); and real training on every placement:
 * the same bits everywhere, and 1F1B's weights to 1e-5.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Coordinator, transports, type CoordinatorOptions } from '../coordinator/index.js';
import {
  getSchedule,
  oneFOneB,
  simulateSchedule,
  splitsBackward,
  theoreticalBubble,
  validateSchedule,
  zbH1,
} from '../coordinator/schedules/index.js';
import { Tape } from '../src/autograd/index.js';
import { loadMnist, subset, type Dataset } from '../src/data/index.js';
import { Dense, Sequential, getLoss, mlpSpec, type ModelSpec } from '../src/nn/index.js';
import { Rng } from '../src/tensor/rng.js';
import { Tensor } from '../src/tensor/tensor.js';
import { formatAction, parseAction, type Action, type Schedule } from '../src/wire/action.js';
import type { NamedTensors } from '../src/wire/index.js';
import { startNode, type RunningNode } from '../node/server.js';
import { readRunLog, renderReport } from '../coordinator/report.js';
import type { ChromeTrace } from '../coordinator/trace.js';
import { worstRelativeError } from './helpers.js';
import { scheduleError, scheduleText as text } from './helpers.js';

const grid = (...rows: string[]): Schedule => rows.map((r) => r.split(/\s+/).filter(Boolean).map(parseAction));

const row = (message: string, stage: number): string =>
  message.split('\n').find((l) => l.startsWith(`stage ${stage}:`)) ?? '';

/** Idle ticks of each stage in a simulation. */
const idlePerStage = (timeline: (Action | null)[][], stages: number): number[] =>
  Array.from({ length: stages }, (_, s) => timeline.filter((r) => r[s] === null).length);

describe('the zb-h1 schedule', () => {
  it('is registered, and splits the backward where 1f1b and gpipe do not', () => {
    expect(getSchedule('zb-h1')).toBe(zbH1);
    expect(splitsBackward(zbH1(2, 2))).toBe(true);
    expect(splitsBackward(oneFOneB(2, 2))).toBe(false);
    expect(splitsBackward(getSchedule('gpipe')(2, 2))).toBe(false);
  });

  it('K=2, M=4 and K=3, M=3: 1F1B with a W after each B, stage s holding back s of them to the end', () => {
    expect(text(zbH1(2, 4))).toEqual([
      '0F0 0F1 0B0 0W0 0F2 0B1 0W1 0F3 0B2 0W2 0B3 0W3',
      '1F0 1B0 1F1 1B1 1W0 1F2 1B2 1W1 1F3 1B3 1W2 1W3',
    ]);
    expect(text(zbH1(3, 3))).toEqual([
      '0F0 0F1 0F2 0B0 0W0 0B1 0W1 0B2 0W2',
      '1F0 1F1 1B0 1F2 1B1 1W0 1B2 1W1 1W2',
      '2F0 2B0 2F1 2B1 2F2 2B2 2W0 2W1 2W2',
    ]);
  });

  it("without its W actions it is 1F1B, action for action (1F1B's tapes, K-s on stage s)", () => {
    for (let K = 1; K <= 6; K++) {
      for (const M of [K, K + 1, 2 * K, 16]) {
        const noW = zbH1(K, M).map((list) => list.filter((a) => a.kind !== 'W'));
        expect(noW).toEqual(oneFOneB(K, M));
      }
    }
  });

  it("memory: at most s+1 micro-batches wait for their W on stage s, at most K have a forward and no W (1F1B's bound)", () => {
    const K = 4;
    const M = 8;
    zbH1(K, M).forEach((list, s) => {
      let waitingW = 0;
      let open = 0;
      let maxW = 0;
      let maxOpen = 0;
      for (const a of list) {
        if (a.kind === 'F') open++;
        if (a.kind === 'B') waitingW++;
        if (a.kind === 'W') { waitingW--; open--; }
        maxW = Math.max(maxW, waitingW);
        maxOpen = Math.max(maxOpen, open);
      }
      expect(maxW, `stage ${s}`).toBe(s + 1);
      expect(maxOpen, `stage ${s}`).toBeLessThanOrEqual(K);
    });
  });

  it('needs M >= K, as 1f1b, and positive integer counts', () => {
    const e = scheduleError(() => zbH1(4, 3));
    expect(e.code).toBe('SCHEDULE_TOO_FEW_MICROBATCHES');
    expect(e.message).toContain('zb-h1 needs at least as many micro-batches as stages');
    expect(e.hint).toContain('gpipe');
    expect(scheduleError(() => zbH1(0, 3)).code).toBe('SCHEDULE_BAD_ARGUMENT');
  });
});

describe('simulated bubble', () => {
  const cases: [number, number][] = [];
  for (let K = 1; K <= 6; K++) for (const M of [K, K + 1, 2 * K, 8, 16]) if (M >= K) cases.push([K, M]);

  it('equal F, B and W times: makespan 3M+K-1 and bubble (K-1)/(3M+K-1), a third of 1F1B\'s idle time', () => {
    for (const [K, M] of cases) {
      const zb = simulateSchedule(zbH1(K, M), { weightTicks: 1 });
      const f1b = simulateSchedule(oneFOneB(K, M), { weightTicks: 1 }); // B = the whole backward, 2 ticks
      expect(zb.ok).toBe(true);
      expect(zb.ticks, `K=${K} M=${M}`).toBe(3 * M + K - 1);
      expect(zb.idleFraction, `K=${K} M=${M}`).toBeCloseTo((K - 1) / (3 * M + K - 1), 12);
      expect(f1b.ticks).toBe(3 * (M + K - 1));
      expect(f1b.idleFraction).toBeCloseTo((K - 1) / (M + K - 1), 12);
      // Per stage: K-1 idle ticks against 1F1B's 3(K-1).
      expect(idlePerStage(zb.timeline, K)).toEqual(new Array(K).fill(K - 1));
      expect(idlePerStage(f1b.timeline, K)).toEqual(new Array(K).fill(3 * (K - 1)));
      expect(theoreticalBubble('zb-h1', K, M)).toBe(zb.idleFraction);
      expect(theoreticalBubble('1f1b', K, M)).toBe(f1b.idleFraction);
    }
  });

  it("the paper's bubble (K-1)(T_F + T_B - T_W) per stage, for W no longer than F or B", () => {
    for (const [F, B, W] of [[1, 1, 1], [2, 2, 2], [2, 2, 1], [1, 2, 1], [2, 1, 1], [3, 2, 1], [1, 3, 1], [3, 1, 1]] as const) {
      for (const [K, M] of cases) {
        if (K === 1) continue;
        const sim = simulateSchedule(zbH1(K, M), { forwardTicks: F, backwardTicks: B, weightTicks: W });
        expect(sim.ticks, `F=${F} B=${B} W=${W} K=${K} M=${M}`).toBe(M * (F + B + W) + (K - 1) * (F + B - W));
      }
    }
  });

  it("against chainrule's own 1F1B, whose W all come after the step's last backward: (K-1)·W shorter", () => {
    for (const [F, B, W] of [[1, 1, 1], [2, 1, 1], [1, 2, 1], [3, 1, 1], [2, 2, 1]] as const) {
      for (const [K, M] of cases) {
        const trailing = oneFOneB(K, M).map((list, stage) => [...list, ...Array.from({ length: M }, (_, m): Action => ({ stage, kind: 'W', microBatch: m }))]);
        const ticks = { forwardTicks: F, backwardTicks: B, weightTicks: W };
        expect(simulateSchedule(trailing, ticks).ticks - simulateSchedule(zbH1(K, M), ticks).ticks, `F=${F} B=${B} W=${W} K=${K} M=${M}`).toBe((K - 1) * W);
      }
    }
  });

  it("the paper's figure (K=4, M=8): stage 0 idles once, after its warm-up; the last stage only before its first forward", () => {
    const sim = simulateSchedule(zbH1(4, 8), { weightTicks: 1 });
    const rows = [0, 3].map((s) => sim.timeline.map((r) => (r[s] ? formatAction(r[s]!) : '.')).join(' '));
    expect(rows).toEqual([
      '0F0 0F1 0F2 0F3 . . . 0B0 0W0 0F4 0B1 0W1 0F5 0B2 0W2 0F6 0B3 0W3 0F7 0B4 0W4 0B5 0W5 0B6 0W6 0B7 0W7',
      '. . . 3F0 3B0 3F1 3B1 3F2 3B2 3F3 3B3 3W0 3F4 3B4 3W1 3F5 3B5 3W2 3F6 3B6 3W3 3F7 3B7 3W4 3W5 3W6 3W7',
    ]);
  });

  it('a W of no ticks (the default) takes none: the timeline is 1F1B\'s', () => {
    for (const [K, M] of cases) {
      const zb = simulateSchedule(zbH1(K, M));
      const f1b = simulateSchedule(oneFOneB(K, M));
      expect(zb.timeline).toEqual(f1b.timeline);
    }
  });

  it('refuses a negative or fractional weightTicks', () => {
    for (const bad of [-1, 0.5, NaN]) {
      const e = scheduleError(() => simulateSchedule(zbH1(2, 2), { weightTicks: bad }));
      expect(e.code).toBe('SCHEDULE_BAD_ARGUMENT');
      expect(e.message).toContain('options.weightTicks must be a non-negative integer');
    }
  });

  it('W needs only its own B: a W first in a list deadlocks, naming the B it waits for', () => {
    const sim = simulateSchedule(grid('0W0 0F0 0B0'), { weightTicks: 1 });
    expect(sim.ok).toBe(false);
    expect(sim.deadlock!.blocked.map((b) => [formatAction(b.action), formatAction(b.waitingFor)])).toEqual([['0W0', '0B0']]);
  });
});

describe('validateSchedule and W', () => {
  it('accepts zb-h1 and returns the unit-time simulation with W', () => {
    const sim = validateSchedule(zbH1(4, 8), 4, 8);
    expect(sim.idleFraction).toBeCloseTo(3 / 27, 12);
  });

  it('W before its B', () => {
    const e = scheduleError(() => validateSchedule(grid('0F0 0F1 0B0 0W0 0W1 0B1', '1F0 1B0 1W0 1F1 1B1 1W1'), 2, 2));
    expect(e.code).toBe('SCHEDULE_WEIGHT_BEFORE_BACKWARD');
    expect(e.message).toContain('stage 0 runs 0W1 at step 4, before its backward 0B1 at step 5');
    expect(row(e.message, 0)).toContain('[0W1]');
    expect(row(e.message, 0)).toMatch(/<-- ERROR HERE$/);
    expect(e.where).toEqual({ stage: 0, step: 4 });
  });

  it('W out of micro-batch order', () => {
    const e = scheduleError(() => validateSchedule(grid('0F0 0F1 0B0 0B1 0W1 0W0', '1F0 1B0 1F1 1B1 1W0 1W1'), 2, 2));
    expect(e.code).toBe('SCHEDULE_WEIGHT_ORDER');
    expect(e.message).toContain('stage 0 runs 0W0 at step 5 after 0W1 at step 4');
    expect(e.hint).toContain('0W0 before 0W1');
  });

  it('a schedule with W on one stage needs them on every stage, one per micro-batch', () => {
    const e = scheduleError(() => validateSchedule(grid('0F0 0F1 0B0 0W0 0B1 0W1', '1F0 1B0 1F1 1B1'), 2, 2));
    expect(e.code).toBe('SCHEDULE_MISSING_ACTION');
    expect(e.message).toContain('stage 1 never runs 1W0, 1W1');
    expect(e.message).toContain('splits the backward');
    const twice = scheduleError(() => validateSchedule(grid('0F0 0F1 0B0 0W0 0B1 0W1 0W1', '1F0 1B0 1F1 1B1 1W0 1W1'), 2, 2));
    expect(twice.code).toBe('SCHEDULE_REPEATED_ACTION');
    expect(twice.message).toContain('stage 0 runs 0W1 twice');
  });

  it('a W of a micro-batch out of range', () => {
    const e = scheduleError(() => validateSchedule(grid('0F0 0B0 0W0 0W1'), 1, 1));
    expect(e.code).toBe('SCHEDULE_BAD_ACTION');
    expect(e.message).toContain('0W1 is not a forward, backward or weight gradient of a micro-batch in 0..0');
  });
});

describe('W in the stage runtime: flushDeferredGrads(m), one product per W', () => {
  /**
   * M micro-batches through a micro-batching MLP as a stage runs them, backwards ascending,
   * and `w(m)` after each backward m: the hook that runs W actions. Returns the first
   * dense layer's gradient (read past the deferral hook) and the model.
   */
  function run(order: 'zb' | 'after-each' | 'none', M = 4, hold = 2): { grads: Float32Array[]; afterEndFlush: Float32Array[] } {
    const model = Sequential.fromSpec(mlpSpec([24, 16], 12, 5), 9);
    model.microBatching = true;
    const loss = getLoss('softmaxCrossEntropy');
    const rng = new Rng(4);
    for (const [, p] of model.parameters()) p.zeroGrad();
    let w = 0;
    for (let mb = 0; mb < M; mb++) {
      const x = new Tensor(Float32Array.from({ length: 6 * 12 }, () => rng.float() * 2 - 1), [6, 12]);
      const y = Int32Array.from({ length: 6 }, () => Math.floor(rng.float() * 5));
      const tape = new Tape();
      const out = tape.run(() => model.forward(x, { training: true, seed: 9, step: 0, microBatch: mb }));
      tape.backward(tape.run(() => loss.compute(out, y, 'sum')));
      if (order === 'after-each') model.flushDeferredGrads(mb);
      // ZB-H1 on a later stage: W of micro-batch mb - hold after backward mb.
      if (order === 'zb' && mb >= hold) model.flushDeferredGrads(w++);
    }
    if (order === 'zb') while (w < M) model.flushDeferredGrads(w++);
    const dense = model.layers.filter((l): l is Dense => l instanceof Dense);
    const grads = dense.map((d) => Float32Array.from(d.weight.ownGrad().data));
    model.flushDeferredGrads(); // the end of the step
    return { grads, afterEndFlush: dense.map((d) => Float32Array.from(d.weight.ownGrad().data)) };
  }

  it('a W for every micro-batch leaves nothing for the end-of-step flush', () => {
    const r = run('zb');
    expect(r.afterEndFlush).toEqual(r.grads);
  });

  it('held back or not, each W adds its own micro-batch: the same bits (so every placement and stage count agree)', () => {
    expect(run('zb').grads).toEqual(run('after-each').grads);
    expect(run('zb', 4, 3).grads).toEqual(run('after-each').grads);
  });

  it('without W the end-of-step flush does all (one product), equal to per-W products to rounding', () => {
    const zb = run('zb');
    const one = run('none');
    for (const [i, g] of one.afterEndFlush.entries()) {
      let num = 0;
      let den = 0;
      for (let j = 0; j < g.length; j++) { num += (g[j]! - zb.grads[i]![j]!) ** 2; den += g[j]! ** 2; }
      expect(Math.sqrt(num / den)).toBeLessThan(1e-6);
    }
  });
});

describe('training with zb-h1', () => {
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
    // 264 samples in batches of 24: 11 steps a epoch.
    data = { train: subset(m.train, Array.from({ length: 264 }, (_, i) => i)), test: subset(m.test, Array.from({ length: 120 }, (_, i) => i)) };
    for (let i = 0; i < 3; i++) nodes.push(await startNode({ host: '127.0.0.1', port: 0 }));
  });
  afterAll(async () => {
    await Promise.all(nodes.map((n) => n.close()));
  });

  type Trained = { summary: Awaited<ReturnType<Coordinator['train']>>; params: NamedTensors };
  async function train(o: CoordinatorOptions): Promise<Trained> {
    const c = new Coordinator({ model: spec, dataset: data, epochs: 2, batchSize: 24, lr: 0.1, seed: 5, ...o, nodes: o.placement === 'grpc' ? nodes.map((n) => n.address) : undefined });
    try {
      const summary = await c.train();
      return { summary, params: await c.parameters() };
    } finally {
      await c.close();
    }
  }
  const runs = new Map<string, Promise<Trained>>();
  /** Each configuration trained once, by whichever test asks first. */
  const once = (o: CoordinatorOptions): Promise<Trained> => {
    const key = JSON.stringify(o);
    if (!runs.has(key)) runs.set(key, train(o));
    return runs.get(key)!;
  };

  for (const replicas of [1, 2]) {
    for (const stages of [2, 3]) {
      const o = { replicas, stages, microBatches: 4 };
      for (const placement of Object.keys(transports)) {
        it(`${placement}, R=${replicas}, K=${stages}, M=4: the local run's weights, bit for bit`, async () => {
          const r = await once({ ...o, placement, schedule: 'zb-h1' });
          expect(r.summary.schedule).toBe('zb-h1');
          expect(r.summary.theoreticalBubbleFraction).toBeCloseTo((stages - 1) / (3 * 4 + stages - 1), 12);
          expect(r.summary.bubbleFraction).toBeGreaterThan(0);
          expect(r.summary.bubbleFraction).toBeLessThan(1);
          expect(r.summary.weightsSha256).toBe((await once({ ...o, placement: 'local', schedule: 'zb-h1' })).summary.weightsSha256);
        });
      }
      it(`R=${replicas}, K=${stages}, M=4: agrees with 1f1b to 1e-5 relative`, async () => {
        const zb = await once({ ...o, placement: 'local', schedule: 'zb-h1' });
        const f1b = await once({ ...o, placement: 'local', schedule: '1f1b' });
        const worst = worstRelativeError(f1b.params, zb.params);
        expect(worst.value, worst.name).toBeLessThan(1e-5);
        expect(zb.summary.testAccuracy!).toBeGreaterThan(0.5);
      });
    }
  }

  it('one stage of zb-h1 gives the weights of K=2 and K=3 (each W adds its own micro-batch wherever it runs)', async () => {
    const one = await once({ replicas: 1, stages: 1, microBatches: 4, placement: 'local', schedule: 'zb-h1' });
    for (const stages of [2, 3]) {
      expect((await once({ replicas: 1, stages, microBatches: 4, placement: 'local', schedule: 'zb-h1' })).summary.weightsSha256).toBe(one.summary.weightsSha256);
    }
  });

  it('the trace has a weight span per W action, after its backward, and the report draws them', async () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'chainrule-zb-')), 'log');
    await train({ placement: 'threads', stages: 2, microBatches: 4, schedule: 'zb-h1', epochs: 1, logDir: dir, traceSteps: 2 });
    const trace = JSON.parse(readFileSync(join(dir, 'trace.json'), 'utf8')) as ChromeTrace;
    const step = trace.otherData.steps[trace.otherData.steps.length - 1]!.step;
    for (const pid of [1, 2]) {
      const own = trace.traceEvents.filter((e) => e.ph === 'X' && e.pid === pid && (e.args as { step?: number }).step === step);
      const of = (kind: string) => own.filter((e) => e.cat === kind).map((e) => ({ mb: (e.args as { microBatch: number }).microBatch, ts: e.ts! }));
      expect(of('weight').map((w) => w.mb)).toEqual([0, 1, 2, 3]);
      for (const w of of('weight')) expect(w.ts).toBeGreaterThanOrEqual(of('backward').find((b) => b.mb === w.mb)!.ts);
    }
    const html = renderReport(readRunLog(dir));
    expect(html).toContain('data-kind="weight"');
    expect(html).toContain('weight gradient (W)');
    expect(html).toContain('theoretical (K−1)/(3M+K−1), K=2, M=4');
  });
});
