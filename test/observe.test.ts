/**
 * Seeing a run: the run log of --log-dir (metrics, Chrome trace, summary, run record) on real
 * threads, in-process replicas and a real gRPC node; awaited callbacks and the error a
 * throwing one ends train() with.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Coordinator, type CoordinatorOptions } from '../coordinator/index.js';
import type { TrainSummary } from '../coordinator/summary.js';
import type { ChromeTrace, TraceEvent } from '../coordinator/trace.js';
import type { RunRecord } from '../coordinator/run-log.js';
import { readRunLog, renderReport, writeReport } from '../coordinator/report.js';
import { startNode, type RunningNode } from '../node/server.js';
import { Rng } from '../src/tensor/rng.js';
import { isUserError } from '../src/errors.js';
import type { Dataset } from '../src/data/index.js';

const root = mkdtempSync(join(tmpdir(), 'chainrule-observe-'));

/** Three separable classes in four features. */
function toy(name: string, n: number, seed: number): Dataset {
  const rng = new Rng(seed);
  const inputs = new Float32Array(n * 4);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    labels[i] = i % 3;
    for (let j = 0; j < 4; j++) inputs[i * 4 + j] = rng.normal() * 0.3 + (j === labels[i] ? 2 : 0);
  }
  return { name, inputs, labels, size: n, inputShape: [4], numClasses: 3 };
}
const data = { train: toy('toy/train', 256, 1), test: toy('toy/test', 60, 2) };
const model = {
  inputShape: [4],
  layers: [{ type: 'dense', inputs: 4, units: 16 }, { type: 'relu' }, { type: 'dense', inputs: 16, units: 16 }, { type: 'relu' }, { type: 'dense', inputs: 16, units: 3 }],
  loss: 'softmaxCrossEntropy',
};
const base: CoordinatorOptions = { model, dataset: data, epochs: 2, batchSize: 32, lr: 0.05, seed: 3 };

async function run(opts: CoordinatorOptions): Promise<{ summary: TrainSummary; dir: string }> {
  const dir = join(root, `run-${Math.random().toString(36).slice(2)}`);
  const c = new Coordinator({ ...base, logDir: dir, ...opts });
  try {
    return { summary: await c.train(), dir };
  } finally {
    await c.close();
  }
}

const read = <T>(dir: string, f: string) => JSON.parse(readFileSync(join(dir, f), 'utf8')) as T;
const spans = (t: ChromeTrace) => t.traceEvents.filter((e): e is TraceEvent & { ts: number; dur: number } => e.ph === 'X');

/** No two spans of one track (pid, tid) overlap: what Perfetto needs to show them all. */
function expectNoOverlaps(t: ChromeTrace): void {
  const tracks = new Map<string, { ts: number; dur: number; name: string }[]>();
  for (const e of spans(t)) {
    const k = `${e.pid}/${e.tid}`;
    tracks.set(k, [...(tracks.get(k) ?? []), e]);
  }
  for (const [k, list] of tracks) {
    list.sort((a, b) => a.ts - b.ts);
    for (let i = 1; i < list.length; i++) {
      expect(list[i]!.ts, `${k}: ${list[i]!.name} starts inside ${list[i - 1]!.name}`).toBeGreaterThanOrEqual(list[i - 1]!.ts + list[i - 1]!.dur);
    }
  }
}

function kindsOf(t: ChromeTrace, pid: number, step: number): Record<string, number[]> {
  const out: Record<string, number[]> = {};
  for (const e of spans(t)) {
    const a = e.args as { step: number; microBatch: number };
    if (e.pid === pid && a.step === step) (out[e.cat!] ??= []).push(a.microBatch);
  }
  for (const v of Object.values(out)) v.sort((x, y) => x - y);
  return out;
}

describe('--log-dir on worker threads (2 stages, 4 micro-batches)', () => {
  let summary: TrainSummary, dir: string, trace: ChromeTrace, record: RunRecord;
  beforeAll(async () => {
    ({ summary, dir } = await run({ placement: 'threads', stages: 2, microBatches: 4, traceSteps: 3 }));
    trace = read<ChromeTrace>(dir, 'trace.json');
    record = read<RunRecord>(dir, 'run.json');
  });

  it('the summary gains history, wall time and versions; summary.json is the very summary', () => {
    expect(summary.history.map((h) => h.epoch)).toEqual([1, 2]);
    expect(summary.history[1]!.testAccuracy).toBe(summary.testAccuracy);
    expect(summary.wallSeconds).toBeGreaterThan(0);
    expect(summary.versions).toEqual({ chainrule: JSON.parse(readFileSync(join(import.meta.dirname, '..', 'package.json'), 'utf8')).version, node: process.versions.node });
    expect(read(dir, 'summary.json')).toEqual(JSON.parse(JSON.stringify(summary)));
  });

  it('metrics.jsonl has one line per step and one per epoch', () => {
    const lines = readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const steps = lines.filter((l) => l.type === 'step');
    const epochs = lines.filter((l) => l.type === 'epoch');
    expect(steps.length).toBe(2 * 8); // 256 samples in batches of 32, two epochs
    expect(steps.map((s) => s.step)).toEqual(Array.from({ length: 16 }, (_, i) => i + 1));
    for (const s of steps) {
      expect(s).toMatchObject({ lr: 0.05, batches: 8 });
      for (const k of ['loss', 'samplesPerSecond', 'stepMs']) expect(Number.isFinite(s[k])).toBe(true);
      expect(s.gradNorm).toBeUndefined(); // computed only when clipping
    }
    expect(epochs).toEqual(JSON.parse(JSON.stringify(summary.history)).map((h: object) => ({ type: 'epoch', ...h })));
    for (const e of epochs) expect(e.bubbleFraction).toBeGreaterThanOrEqual(0);
  });

  it('traces the last 3 steps: every actor forward, backward, wait, send and optimizer per micro-batch', () => {
    expect(trace.otherData.steps.map((s) => s.step)).toEqual([13, 14, 15]);
    expect(trace.otherData.actors).toEqual(['stage 0 (threads)', 'stage 1 (threads)']);
    const mbs = [0, 1, 2, 3];
    for (const step of [13, 14, 15]) {
      expect(kindsOf(trace, 1, step)).toEqual({ forward: mbs, backward: mbs, send: mbs, wait: mbs, optimizer: [-1] });
      expect(kindsOf(trace, 2, step)).toEqual({ forward: mbs, backward: mbs, send: mbs, wait: mbs, optimizer: [-1] });
    }
    // Named processes (one per actor, and the coordinator) and named threads (one per activity and lane).
    const names = trace.traceEvents.filter((e) => e.ph === 'M' && e.name === 'process_name').map((e) => (e.args as { name: string }).name);
    expect(names.sort()).toEqual(['coordinator', 'stage 0 (threads)', 'stage 1 (threads)']);
    expectNoOverlaps(trace);
  });

  it('the clocks of the threads are one: each activation is received after it was computed, each gradient likewise', () => {
    for (const o of trace.otherData.offsets) expect(o.applied).toBe(false);
    const at = (pid: number, kind: string, step: number, mb: number) => spans(trace).find((e) => e.pid === pid && e.cat === kind && (e.args as { step: number }).step === step && (e.args as { microBatch: number }).microBatch === mb)!;
    for (const step of [13, 14, 15]) {
      for (let mb = 0; mb < 4; mb++) {
        const f0 = at(1, 'forward', step, mb);
        const wait1 = at(2, 'wait', step, mb);
        expect(wait1.ts + wait1.dur).toBeGreaterThanOrEqual(f0.ts + f0.dur);
        const b1 = at(2, 'backward', step, mb);
        const b0 = at(1, 'backward', step, mb);
        expect(b0.ts).toBeGreaterThanOrEqual(b1.ts + b1.dur);
      }
    }
  });

  it('run.json: per-actor busy time whose idle shares average to the summary bubble, and the test confusion matrix', () => {
    expect(record.actors.map((a) => [a.name, a.stage, a.replica])).toEqual([['stage 0 (threads)', 0, 0], ['stage 1 (threads)', 1, 0]]);
    const idle = record.actors.reduce((s, a) => s + (1 - a.busyMs / a.wallMs), 0) / record.actors.length;
    expect(idle).toBeCloseTo(summary.bubbleFraction, 9);
    const m = record.confusion!;
    expect(m.length).toBe(3);
    expect(m.flat().reduce((a, b) => a + b, 0)).toBe(60);
    expect(m.reduce((s, row, i) => s + row[i]!, 0) / 60).toBe(summary.testAccuracy);
    expect(record.tracedSteps).toEqual([13, 16]);
    expect(record.options).toMatchObject({ placement: 'threads', stages: 2, microBatches: 4, epochs: 2, dataset: '(datasets given in the API)' });
  });

  it('the report reads the same bubble and has one timeline row per actor', () => {
    const html = renderReport(readRunLog(dir));
    expect(html).toContain(`id="measured-bubble" data-value="${summary.bubbleFraction}"`);
    expect(html.match(/<g class="row"/g)!.length).toBe(2);
    expect(html).not.toMatch(/<script|https?:\/\//);
    expect(writeReport(dir)).toBe(join(dir, 'report.html'));
  });
});

describe('--log-dir with data-parallel replicas and clipping (in-process)', () => {
  it('every actor records its replica all-reduce; clipping gives each step its gradient norm', async () => {
    const { summary, dir } = await run({ placement: 'local', replicas: 2, stages: 2, microBatches: 2, clipNorm: 1, traceSteps: 2 });
    const trace = read<ChromeTrace>(dir, 'trace.json');
    expect(trace.otherData.actors.length).toBe(4);
    for (let pid = 1; pid <= 4; pid++) {
      const k = kindsOf(trace, pid, 15);
      expect(k.reduce).toEqual([-1]);
      expect(k.forward).toEqual([0, 1]);
      // With clipping the optimizer runs in a request of its own, outside the traced runStep.
      expect(k.optimizer).toBeUndefined();
    }
    expectNoOverlaps(trace);
    const steps = readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((l) => l.type === 'step');
    for (const s of steps) expect(s.gradNorm).toBeGreaterThan(0);
    expect(summary.replicas).toBe(2);
  });
});

describe('--log-dir on a gRPC node', () => {
  let node: RunningNode;
  beforeAll(async () => { node = await startNode({ port: 0 }); });
  afterAll(() => node.close());

  it('the trace crosses the wire; on one host no clock offset is applied', async () => {
    const { dir } = await run({ placement: 'grpc', nodes: [node.address], stages: 2, microBatches: 2, epochs: 1, traceSteps: 2 });
    const trace = read<ChromeTrace>(dir, 'trace.json');
    expect(trace.otherData.steps.map((s) => s.step)).toEqual([6, 7]);
    for (const pid of [1, 2]) expect(Object.keys(kindsOf(trace, pid, 7)).sort()).toEqual(['backward', 'forward', 'optimizer', 'send', 'wait']);
    for (const o of trace.otherData.offsets) {
      expect(o.applied).toBe(false);
      expect(Math.abs(o.offsetMs)).toBeLessThanOrEqual(o.boundMs);
    }
    expectNoOverlaps(trace);
  });
});

describe('callbacks', () => {
  it('async onStep and onEpoch are awaited, one at a time, before training goes on', async () => {
    const events: string[] = [];
    const sleep = () => new Promise((r) => setTimeout(r, 2));
    const c = new Coordinator({
      ...base, epochs: 2,
      onStep: async (s) => { events.push(`step ${s.step}`); await sleep(); events.push(`step ${s.step} done`); },
      onEpoch: async (r) => { events.push(`epoch ${r.epoch}`); await sleep(); events.push(`epoch ${r.epoch} done`); },
    });
    try {
      await c.train();
    } finally {
      await c.close();
    }
    const want: string[] = [];
    for (let e = 1; e <= 2; e++) {
      for (let s = (e - 1) * 8 + 1; s <= e * 8; s++) want.push(`step ${s}`, `step ${s} done`);
      want.push(`epoch ${e}`, `epoch ${e} done`);
    }
    expect(events).toEqual(want);
  });

  it('an onEpoch that throws ends train() with that error and the summary so far (also in the log dir)', async () => {
    const boom = new Error('stop after epoch 1');
    const dir = join(root, 'throwing-epoch');
    const c = new Coordinator({ ...base, epochs: 3, logDir: dir, onEpoch: (r) => { if (r.epoch === 1) throw boom; } });
    let caught: unknown;
    try {
      await c.train();
    } catch (e) {
      caught = e;
    } finally {
      await c.close();
    }
    expect(caught).toBe(boom);
    const s = (caught as { summary: TrainSummary }).summary;
    expect(s.epochs).toBe(1);
    expect(s.history.length).toBe(1);
    expect(s.testAccuracy).toBe(s.history[0]!.testAccuracy);
    expect(s.weightsSha256).toMatch(/^[0-9a-f]{64}$/);
    expect(read(dir, 'summary.json')).toEqual(JSON.parse(JSON.stringify(s)));
  });

  it('an onStep that throws mid-epoch ends train() with that error; the summary has no finished epoch', async () => {
    const c = new Coordinator({ ...base, onStep: async (s) => { if (s.step === 3) throw new RangeError('enough'); } });
    const e = await c.train().then(() => null, (err: unknown) => err).finally(() => c.close());
    expect(e).toBeInstanceOf(RangeError);
    const s = (e as { summary: TrainSummary }).summary;
    expect(s.history).toEqual([]);
    expect(s.epochs).toBe(0);
    expect(Number.isFinite(s.trainLoss)).toBe(true);
  });
});

describe('chainrule report DIR, as a user error', () => {
  it('a directory without a run log names the file and says how to make one', () => {
    const dir = join(root, 'empty');
    let err: unknown;
    try { readRunLog(dir); } catch (e) { err = e; }
    expect(isUserError(err)).toBe(true);
    expect((err as Error).message).toMatch(/summary\.json.*\n.*--log-dir/s);
    expect(existsSync(join(dir, 'report.html'))).toBe(false);
  });
});
