/**
 * `chainrule plan`: the simulator on hand-computed cases (no real timings), the search space,
 * and the command line on a tiny model (a real process). No timing assertions on measurements.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  candidateConfigs, neededKernelThreads, neededSizes, parsePlanArgs, placementLayout, planFromProfile, profileModel, simulate, simulateStep,
  type Command, type MessageCost, type PlanConfig, type StepModel,
} from '../coordinator/plan.js';
import { getSchedule } from '../coordinator/schedules/index.js';
import { OptionError } from '../coordinator/options.js';
import { Rng } from '../src/tensor/rng.js';
import { mlpSpec } from '../src/nn/index.js';
import { measureContention } from '../coordinator/plan-contention.js';
import { backend, setBackend } from '../src/tensor/backend.js';
import { createNativeBackend, nativeAvailable } from '../src/tensor/native/index.js';

const bin = join(import.meta.dirname, '..', 'coordinator', 'bin.ts');
const dir = mkdtempSync(join(tmpdir(), 'chainrule-plan-'));

interface Hand {
  R?: number; K?: number; M?: number; schedule?: string; placement?: PlanConfig['placement'];
  F?: number; B?: number; delay?: number; cores?: number; reduce?: StepModel['reduce'];
  parameters?: number; copyMsPerByte?: number; addMsPerFloat?: number; optimizerMs?: number; contention?: number;
}

/** A step model with hand-chosen durations: every stage alike, every message `delay` ms and free of CPU. */
function hand(h: Hand): StepModel {
  const R = h.R ?? 1;
  const K = h.K ?? 1;
  const M = h.M ?? 1;
  const config: PlanConfig = { placement: h.placement ?? 'threads', replicas: R, stages: K, microBatches: M, schedule: h.schedule ?? 'gpipe' };
  const layout = placementLayout(config, { cores: h.cores ?? 64, hosts: 0, coresPerHost: 1, link: { latencyMs: 0, gbps: 1 } });
  const peer: MessageCost = { senderMs: 0, delayMs: h.delay ?? 0, receiverMs: 0 };
  const free: MessageCost = { senderMs: 0, delayMs: 0, receiverMs: 0 };
  return {
    config, batchSize: R * M, schedule: getSchedule(config.schedule)(K, M),
    stage: Array.from({ length: K }, () => ({
      forwardMs: h.F ?? 1, backwardMs: h.B ?? 1, backwardFirstMs: h.B ?? 1, optimizerMs: h.optimizerMs ?? 0,
      parameters: h.parameters ?? 0, outBytes: 0, requestBytes: 0,
    })),
    ...layout, coordinatorThread: 'main',
    link: (_from, _to, _bytes, kind) => (kind === 'peer' ? peer : free),
    reduce: h.reduce ?? 'shared',
    memory: { copyMsPerByte: h.copyMsPerByte ?? 0, addMsPerFloat: h.addMsPerFloat ?? 0 },
    prepareMs: 0, actionOverheadMs: 0, replyBytes: 0, flushAfterSend: false, contention: h.contention,
  };
}

describe('the event simulator', () => {
  const work = (ms: number) => (function* (): Generator<Command, void, void> { yield { work: ms }; })();

  it('runs one thread at full speed and shares a core between two busy threads', () => {
    expect(simulate({ cores: [1], threads: [{ name: 't', host: 0 }], programs: [{ name: 'p', thread: 't', body: work(2) }] }).makespanMs).toBeCloseTo(2, 12);
    const two = simulate({
      cores: [1], threads: [{ name: 'a', host: 0 }, { name: 'b', host: 0 }],
      programs: [{ name: 'p', thread: 'a', body: work(2) }, { name: 'q', thread: 'b', body: work(1) }],
    });
    // Both at half speed until q ends at 2 (1 ms of work), then p alone: 1 ms left at full speed.
    expect(two.programs['q']!.endMs).toBeCloseTo(2, 12);
    expect(two.programs['p']!.endMs).toBeCloseTo(3, 12);
  });

  it('delivers a message after the sender CPU, the delay and the receiver CPU, and acknowledges it', () => {
    const r = simulate({
      cores: [2], threads: [{ name: 'a', host: 0 }, { name: 'b', host: 0 }],
      programs: [
        { name: 'p', thread: 'a', body: (function* (): Generator<Command, void, void> {
          yield { send: { to: 'q', signal: 'x', cost: { senderMs: 0.5, delayMs: 2, receiverMs: 0.25, ackDelayMs: 1 }, ack: 'ok' } };
          yield { wait: ['ok'] };
          yield { mark: 'acked' };
        })() },
        { name: 'q', thread: 'b', body: (function* (): Generator<Command, void, void> { yield { wait: ['x'] }; yield { mark: 'got' }; })() },
      ],
    });
    expect(r.programs['q']!.marks['got']![0]).toBeCloseTo(2.75, 12);
    expect(r.programs['p']!.marks['acked']![0]).toBeCloseTo(3.75, 12);
  });

  it('queues messages on a host link in order: the second waits for the first to leave', () => {
    const cost: MessageCost = { senderMs: 0, delayMs: 0.5, receiverMs: 0, egress: { host: 0, ms: 3 } };
    const r = simulate({
      cores: [1, 1], threads: [{ name: 'a', host: 0 }, { name: 'b', host: 1 }],
      programs: [
        { name: 'p', thread: 'a', body: (function* (): Generator<Command, void, void> {
          yield { send: { to: 'q', signal: 'one', cost } };
          yield { send: { to: 'q', signal: 'two', cost } };
        })() },
        { name: 'q', thread: 'b', body: (function* (): Generator<Command, void, void> {
          yield { wait: ['one'] }; yield { mark: 'one' }; yield { wait: ['two'] }; yield { mark: 'two' };
        })() },
      ],
    });
    expect(r.programs['q']!.marks['one']![0]).toBeCloseTo(3.5, 12);
    expect(r.programs['q']!.marks['two']![0]).toBeCloseTo(6.5, 12);
  });

  it('reports a deadlock naming who waits for what', () => {
    expect(() => simulate({
      cores: [1], threads: [{ name: 't', host: 0 }],
      programs: [{ name: 'p', thread: 't', body: (function* (): Generator<Command, void, void> { yield { wait: ['never'] }; })() }],
    })).toThrow(/p waits for never/);
  });
});

describe('one simulated step', () => {
  it.each([[2, 4], [3, 8], [4, 4], [4, 1]])('K=%i stages, M=%i micro-batches, unit F and B, free messages: GPipe makespan 2(M+K−1) and bubble (K−1)/(M+K−1) exactly', (K, M) => {
    const p = simulateStep(hand({ K, M }));
    expect(p.stepMs).toBeCloseTo(2 * (M + K - 1), 9);
    expect(p.bubble).toBeCloseTo((K - 1) / (M + K - 1), 12);
    expect(p.theoreticalBubble).toBeCloseTo((K - 1) / (M + K - 1), 12);
  });

  it('1F1B has the same bubble as GPipe with unit times', () => {
    const p = simulateStep(hand({ K: 4, M: 8, schedule: '1f1b' }));
    expect(p.bubble).toBeCloseTo(3 / 11, 12);
    expect(p.stepMs).toBeCloseTo(22, 9);
  });

  it('a message delay d adds 2(K−1)·d: the forward wave and the backward wave each cross K−1 links', () => {
    const K = 3;
    const M = 4;
    const d = 0.25;
    const p = simulateStep(hand({ K, M, delay: d }));
    expect(p.stepMs).toBeCloseTo(2 * (M + K - 1) + 2 * (K - 1) * d, 9);
  });

  it('replicas add the all-reduce: shared memory sums one chunk each; messages also copy the whole gradient in and out', () => {
    const N = 1000;
    const copy = 0.001 / 4; // 0.001 ms per float
    const add = 0.002;
    const one = simulateStep(hand({ R: 1, F: 1, B: 2, parameters: N, copyMsPerByte: copy, addMsPerFloat: add }));
    expect(one.stepMs).toBeCloseTo(3, 9);
    const shared = simulateStep(hand({ R: 2, F: 1, B: 2, parameters: N, copyMsPerByte: copy, addMsPerFloat: add }));
    // Each replica copies its half of the sum and adds the other replica's half into it.
    expect(shared.allReduceMs).toBeCloseTo((N / 2) * 0.001 + (N / 2) * add, 9);
    expect(shared.stepMs).toBeCloseTo(3 + (N / 2) * 0.001 + (N / 2) * add, 9);
    const messages = simulateStep(hand({ R: 2, F: 1, B: 2, parameters: N, copyMsPerByte: copy, addMsPerFloat: add, reduce: 'messages' }));
    // Flatten N, add the peer's half, copy the peer's summed half back, unflatten N.
    expect(messages.allReduceMs).toBeCloseTo(N * 0.001 + (N / 2) * add + (N / 2) * 0.001 + N * 0.001, 9);
  });

  it('actors beyond the cores share them: 2 replicas on 1 core take twice as long', () => {
    const p = simulateStep(hand({ R: 2, cores: 1, F: 1, B: 1 }));
    expect(p.stepMs).toBeCloseTo(4, 9);
    expect(simulateStep(hand({ R: 2, cores: 2, F: 1, B: 1 })).stepMs).toBeCloseTo(2, 9);
    // With memory contention 0.5, two threads computing at once each run at 1/1.5 of their speed.
    expect(simulateStep(hand({ R: 2, cores: 2, F: 1, B: 1, contention: 0.5 })).stepMs).toBeCloseTo(3, 9);
  });

  it('the optimizer comes after the reduce and before the answer; it is outside the bubble', () => {
    const p = simulateStep(hand({ K: 2, M: 2, optimizerMs: 5 }));
    expect(p.stepMs).toBeCloseTo(2 * 3 + 5, 9);
    expect(p.bubble).toBeCloseTo(1 / 3, 12);
    expect(p.optimizerMs).toBeCloseTo(5, 12);
  });

  it('the local placement runs every actor on one thread: no overlap', () => {
    const p = simulateStep(hand({ K: 2, M: 4, placement: 'local' }));
    expect(p.stepMs).toBeCloseTo(2 * 2 * 4, 9);
  });
});

describe('the search space', () => {
  const machine = { cores: 2, hosts: 0, coresPerHost: 2, link: { latencyMs: 0.1, gbps: 1 } };

  it('keeps what fits: R·M divides the batch, 1F1B with M ≥ K, one actor in-process and many on threads', () => {
    const configs = candidateConfigs(5, { batchSize: 12, machine, microBatches: [1, 2, 4, 8] });
    for (const c of configs) {
      expect(12 % (c.replicas * c.microBatches)).toBe(0);
      if (c.schedule === '1f1b') expect(c.microBatches).toBeGreaterThanOrEqual(c.stages);
      expect(c.placement === 'local').toBe(c.replicas * c.stages === 1);
      expect(c.replicas * c.stages).toBeLessThanOrEqual(4);
    }
    expect(configs.some((c) => c.microBatches === 8)).toBe(false);
    expect(configs.filter((c) => c.stages === 1 && c.replicas === 1 && c.microBatches === 2)).toHaveLength(1);
    expect(neededSizes(configs, 12)).toEqual([12, 6, 4, 3, 2, 1]);
  });

  it('plans for remote hosts: nodes one per core, never more actors than nodes', () => {
    const configs = candidateConfigs(11, { batchSize: 256, machine: { ...machine, hosts: 8 }, placements: ['hosts'] });
    expect(Math.max(...configs.map((c) => c.replicas * c.stages))).toBe(16);
    const layout = placementLayout({ placement: 'hosts', replicas: 2, stages: 2, microBatches: 1, schedule: 'gpipe' }, { ...machine, hosts: 8 });
    expect(layout.cores).toEqual([2, 2, 2, 2, 2, 2, 2, 2, 2]);
    expect(layout.actorThread).toEqual(['node0', 'node1', 'node2', 'node3']);
    expect(layout.threads.find((t) => t.name === 'node3')!.host).toBe(2);
  });

  it('rejects bad flags naming them', () => {
    const bad = (argv: string[], what: RegExp) => {
      expect(() => parsePlanArgs(argv)).toThrow(OptionError);
      expect(() => parsePlanArgs(argv)).toThrow(what);
    };
    bad(['--cores', '0'], /--cores must be a positive integer/);
    bad(['--micro-batches', '2,x'], /--micro-batches/);
    bad(['--schedules', 'zigzag'], /unknown schedule 'zigzag'/);
    bad(['--placements', 'cloud'], /unknown placement 'cloud'/);
    bad(['--link-gbps', '0'], /--link-gbps must be a positive number/);
    bad(['--bogus'], /--bogus/);
    bad(['--placements', 'hosts'], /needs --hosts/);
  });
});

describe('the profile', () => {
  it('times every layer at every size asked for, and the optimizer of the layers with parameters', async () => {
    const spec = { inputShape: [4], layers: [{ type: 'dense', inputs: 4, units: 8 }, { type: 'relu' }, { type: 'dense', inputs: 8, units: 3 }], loss: 'softmaxCrossEntropy' };
    const p = await profileModel({ spec, microBatchSizes: [8, 2], optimizer: { type: 'sgd', lr: 0.1 }, repeats: 2, measureLinks: false });
    expect(p.microBatchSizes).toEqual([8, 2]);
    expect(p.layers.map((l) => l.parameters)).toEqual([40, 0, 27]);
    expect(p.layers.map((l) => l.outputSize)).toEqual([8, 8, 3]);
    for (const l of p.layers) for (const mb of ['8', '2']) for (const k of ['forwardMs', 'backwardMs', 'backwardFirstMs'] as const) expect(l[k][mb]).toBeGreaterThanOrEqual(0);
    expect(p.links.source.grpc).toBe('default');
    // Micro-batch mode, as a stage runs: the dense layers' weight gradients are timed as the W pass.
    for (const i of [0, 2]) expect(p.layers[i]!.weightMs['8']!).toBeGreaterThan(0);
    expect(p.layers[1]!.weightMs['8']).toBe(0);
    expect(p.contention).toBeUndefined(); // not measured without the links
    expect(p.threaded).toBeUndefined();
  });

  it('times the layers again with kernel threads, and predicts one process on them from those times', async () => {
    const spec = mlpSpec([64], 784, 10);
    const machine = { cores: 2, hosts: 0, coresPerHost: 2, link: { latencyMs: 0.1, gbps: 1 } };
    const o = { batchSize: 64, machine, placements: ['local' as const], microBatches: [1, 2], kernelThreads: [2, 3] };
    const configs = candidateConfigs(3, o);
    // One per thread count that fits the cores, at M=1 only.
    expect(configs.filter((c) => (c.kernelThreads ?? 1) > 1)).toEqual([{ placement: 'local', replicas: 1, stages: 1, microBatches: 1, schedule: 'gpipe', kernelThreads: 2 }]);
    expect(candidateConfigs(3, { ...o, placements: ['threads'] }).some((c) => c.kernelThreads)).toBe(false);
    // Remote hosts: one node per T cores, so 4 hosts of 2 cores have 4 nodes of 2 threads.
    const hosts = candidateConfigs(3, { ...o, machine: { ...machine, hosts: 4 }, placements: ['hosts'], microBatches: [1] }).filter((c) => c.kernelThreads === 2);
    expect(Math.max(...hosts.map((c) => c.replicas * c.stages))).toBe(4);
    expect(placementLayout(hosts.find((c) => c.replicas === 4)!, { ...machine, hosts: 4 }).actorThread).toEqual(['node0', 'node1', 'node2', 'node3']);
    expect(placementLayout(hosts.find((c) => c.replicas === 4)!, { ...machine, hosts: 4 }).threads.filter((t) => t.host === 1)).toHaveLength(1);
    expect(neededKernelThreads(configs)).toEqual([2]);
    // On the native backend where it is built (the one with kernel threads).
    const was = backend();
    const native = nativeAvailable() ? createNativeBackend() : null;
    if (native) setBackend(native);
    const p = await profileModel({ spec, microBatchSizes: neededSizes(configs, 64), optimizer: { type: 'sgd', lr: 0.1 }, repeats: 1, measureLinks: false,
      ...(native ? { kernelThreads: { counts: [2], microBatchSizes: [64] } } : {}) }).finally(() => setBackend(was));
    if (native) {
      expect(p.threaded!.map((t) => [t.kernelThreads, t.microBatchSizes])).toEqual([[2, [64]]]);
      expect(p.threaded![0]!.layers[0]!.soloForwardMs['64']).toBeGreaterThan(0);
    }
    // The T=2 prediction is the one from the threaded times: halve them, and its step is shorter.
    const half = (ls: typeof p.layers) => ls.map((l) => ({ ...l, soloForwardMs: { 64: l.soloForwardMs['64']! / 2 }, soloBackwardMs: { 64: l.soloBackwardMs['64']! / 2 } }));
    const faked = { ...p, threaded: [{ kernelThreads: 2, microBatchSizes: [64], layers: half(p.layers), loss: p.loss }] };
    const [two, one] = [configs.find((c) => c.kernelThreads === 2)!, configs.find((c) => !c.kernelThreads && c.microBatches === 1)!];
    const [pTwo, pOne] = [two, one].map((c) => planFromProfile(faked, spec, o, [c])[0]!);
    expect(pTwo.stepMs).toBeLessThan(pOne.stepMs);
    expect(() => planFromProfile({ ...p, threaded: undefined }, spec, o, [two])).toThrow(/no layers timed with 2 kernel threads/);
  });

  it('measures how two threads running the model at once slow each other, and predicts R=2 with it', async () => {
    const spec = mlpSpec([64], 784, 10);
    const c = await measureContention(spec, 32, 'js', 0.2);
    expect(Number.isFinite(c) && c >= 0).toBe(true);
    const p = await profileModel({ spec, microBatchSizes: [64, 32], optimizer: { type: 'sgd', lr: 0.1 }, repeats: 2, measureLinks: false });
    const machine = { cores: 2, hosts: 0, coresPerHost: 2, link: { latencyMs: 0.1, gbps: 1 } };
    const r2 = [{ placement: 'threads' as const, replicas: 2, stages: 1, microBatches: 1, schedule: 'gpipe' }];
    const at = (contention: number | undefined, given?: number) => planFromProfile({ ...p, contention }, spec, { batchSize: 64, machine: { ...machine, contention: given } }, r2)[0]!.samplesPerSecond;
    expect(at(1)).toBeLessThan(at(0));
    expect(at(1, 0)).toBeCloseTo(at(0), 6); // --contention overrides the measured one
  });
});

describe('chainrule plan', () => {
  const rng = new Rng(5);
  const rows = ['a,b,c,d,label'];
  for (let i = 0; i < 120; i++) rows.push([0, 1, 2, 3].map(() => rng.normal().toFixed(3)).join(',') + `,${i % 3}`);
  const csv = join(dir, 'toy.csv');
  writeFileSync(csv, rows.join('\n') + '\n');
  const model = join(dir, 'model.json');
  writeFileSync(model, JSON.stringify({ inputShape: [4], layers: [{ type: 'dense', inputs: 4, units: 16 }, { type: 'relu' }, { type: 'dense', inputs: 16, units: 3 }], loss: 'softmaxCrossEntropy' }));
  const plan = (...args: string[]) => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', bin, 'plan', ...args], { encoding: 'utf8', timeout: 120_000 });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };

  it('profiles a tiny model and prints the best configurations as a table', () => {
    const r = plan('--model', model, '--dataset', `csv:${csv}`, '--batch-size', '16', '--cores', '2', '--micro-batches', '1,2', '--top', '5', '--repeats', '2');
    expect(r.stderr).not.toMatch(/Error/);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    const head = lines.findIndex((l) => l.startsWith('#'));
    expect(lines[head]).toMatch(/placement\s+R\s+K\s+M\s+T\s+schedule.*samples\/s.*bubble/);
    expect(lines.length - head - 2).toBe(5);
    expect(r.stdout).toMatch(/\blocal\b/);
  });

  it('--json gives every prediction, fastest first, and on paper for remote hosts', () => {
    const r = plan('--model', model, '--dataset', `csv:${csv}`, '--batch-size', '16', '--hosts', '4', '--micro-batches', '1,4', '--repeats', '1', '--default-links', '--json');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(j.predictions.length).toBeGreaterThan(5);
    const rates = j.predictions.map((p: { samplesPerSecond: number }) => p.samplesPerSecond);
    expect(rates).toEqual([...rates].sort((a: number, b: number) => b - a));
    expect(j.predictions.some((p: { config: PlanConfig }) => p.config.placement === 'hosts' && p.config.replicas * p.config.stages === 8)).toBe(true);
  });

  it('a bad flag exits 2 with one line naming it', () => {
    for (const [args, what] of [[['--kernel-threads', '2', '--backend', 'wasm'], /plan: --kernel-threads: 2 kernel threads were asked for, but backend 'wasm'/], [['--cores', '-1'], /--cores/], [['--top', 'many'], /--top/], [['--schedules', 'zigzag'], /zigzag/], [['--wat'], /--wat/]] as const) {
      const r = plan(...args);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(what);
      expect(r.stderr).not.toMatch(/at .*\.ts:\d+/);
    }
  });
});
