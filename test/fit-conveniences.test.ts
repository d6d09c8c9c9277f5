/**
 * What users expect of Keras' fit: a validation split held out of training, early stopping
 * that ends on the best epoch's weights, and train() called again going on where it stopped.
 * Real runs on every registered placement (local, threads, gRPC nodes started here), checked
 * against plain runs of the same seed: the weights must be bit-identical.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Coordinator, transports, type CoordinatorOptions, type EpochReport, type StepInfo, type TrainSummary } from '../coordinator/index.js';
import { parseCliOptions, resolveOptions } from '../coordinator/options.js';
import { trainMain } from '../coordinator/cli.js';
import { listCheckpoints } from '../coordinator/checkpoint.js';
import { fitTransform, loadMnist, makeDataset, subset, type Dataset } from '../src/data/index.js';
import type { ModelSpec } from '../src/nn/index.js';
import { Rng } from '../src/tensor/rng.js';
import { backend, setBackend } from '../src/tensor/backend.js';
import { startNode } from '../node/server.js';

// Dropout: a resumed or continued run must also continue the per-step dropout streams.
const spec: ModelSpec = {
  inputShape: [784],
  layers: [
    { type: 'dense', inputs: 784, units: 32 }, { type: 'relu' }, { type: 'dropout', rate: 0.2 },
    { type: 'dense', inputs: 32, units: 10, init: 'xavier' },
  ],
  loss: 'softmaxCrossEntropy',
};

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);
const m = loadMnist();
// 320 samples: with validationSplit 0.2 the first 256 train (8 minibatches of 32), the last 64 validate.
const data: { train: Dataset; test: Dataset } = { train: subset(m.train, range(0, 320)), test: subset(m.test, range(0, 100)) };
const first256 = { train: subset(m.train, range(0, 256)), test: data.test };

// Momentum SGD at this rate overfits 256 samples within a few epochs: the validation loss turns up.
const base: CoordinatorOptions = { model: spec, dataset: data, batchSize: 32, optimizer: 'momentum', lr: 0.1, seed: 3, validationSplit: 0.2 };

const dir = mkdtempSync(join(tmpdir(), 'chainrule-fitconv-'));
const nodes: { address: string; close(): Promise<void> }[] = [];
beforeAll(async () => {
  for (let i = 0; i < 2; i++) nodes.push(await startNode({ host: '127.0.0.1', port: 0 }));
});
afterAll(async () => {
  await Promise.all(nodes.map((n) => n.close()));
  rmSync(dir, { recursive: true, force: true });
});

// A Coordinator installs the default backend in this process when it finds the reference one.
const initialBackend = backend();
afterEach(() => setBackend(initialBackend));

const placementOptions = (placement: string): CoordinatorOptions => ({ placement, ...(placement === 'grpc' ? { nodes: nodes.map((n) => n.address) } : {}) });

interface Run { summary: TrainSummary; reports: EpochReport[]; steps: StepInfo[] }

async function run(o: CoordinatorOptions, then?: (c: Coordinator, first: TrainSummary) => Promise<TrainSummary>): Promise<Run> {
  const reports: EpochReport[] = [];
  const steps: StepInfo[] = [];
  const c = new Coordinator({ ...base, onEpoch: (r) => { reports.push(r); }, onStep: (s) => { steps.push(s); }, ...o });
  try {
    const first = await c.train();
    return { summary: then ? await then(c, first) : first, reports, steps };
  } finally {
    await c.close();
  }
}

/** Plain runs (no early stop) of N epochs, each trained once by whichever test asks first. */
const plain = new Map<string, Promise<Run>>();
function reference(epochs: number, o: CoordinatorOptions = {}): Promise<Run> {
  const key = JSON.stringify({ epochs, ...o });
  let r = plain.get(key);
  if (!r) plain.set(key, (r = run({ epochs, ...o })));
  return r;
}

/** The rule, worked out on the losses alone: where "stop after PATIENCE epochs without a strictly lower loss" stops. */
function stopOf(losses: number[], patience: number): { epoch: number; bestEpoch: number; bestValLoss: number } | null {
  let best = 0;
  for (let i = 1; i < losses.length; i++) {
    if (losses[i]! < losses[best]!) best = i;
    else if (i - best >= patience) return { epoch: i + 1, bestEpoch: best + 1, bestValLoss: losses[best]! };
  }
  return null;
}

/** The report fields that must not depend on where or how often training was interrupted. */
const trajectory = (r: EpochReport) => ({ epoch: r.epoch, trainLoss: r.trainLoss, testLoss: r.testLoss, testAccuracy: r.testAccuracy, valLoss: r.valLoss, valAccuracy: r.valAccuracy });

describe('the options', () => {
  it('validationSplit is a fraction in [0, 1); earlyStop a positive integer that needs it; both named as the user wrote them', () => {
    expect(() => resolveOptions({ validationSplit: 1 })).toThrow(/^options.validationSplit must be a number in \[0, 1\), got 1$/);
    expect(() => resolveOptions({ validationSplit: -0.1 })).toThrow(/options.validationSplit must be a number in \[0, 1\), got -0.1/);
    expect(() => parseCliOptions(['--validation-split', '1.5'])).toThrow(/--validation-split must be a number in \[0, 1\), got 1.5/);
    expect(() => resolveOptions({ earlyStop: 0, validationSplit: 0.1 })).toThrow(/options.earlyStop must be a positive integer, got 0/);
    expect(() => resolveOptions({ earlyStop: 3 })).toThrow(/options.earlyStop needs options.validationSplit F > 0/);
    expect(() => parseCliOptions(['--early-stop', '3'])).toThrow(/--early-stop needs --validation-split F > 0/);
    expect(() => parseCliOptions(['--early-stop', '3', '--validation-split', '0'])).toThrow(/--early-stop needs --validation-split F > 0/);
    expect(parseCliOptions(['--early-stop', '3', '--validation-split', '0.1']).options).toEqual({ earlyStop: 3, validationSplit: 0.1 });
    expect(resolveOptions({}).validationSplit).toBe(0);
  });

  it('a split that leaves less than one minibatch, or holds out nothing, is refused naming --validation-split', () => {
    expect(() => new Coordinator({ ...base, validationSplit: 0.95 })).toThrow(
      /options.validationSplit \(--validation-split\) 0.95 leaves 16 of the 320 training samples of .*, less than one minibatch \(batch size 32\)/);
    // 1 - 1e-17 is 1 in floating point: Keras' arithmetic keeps every sample.
    expect(() => new Coordinator({ ...base, validationSplit: 1e-17 })).toThrow(/options.validationSplit \(--validation-split\) 1e-17 holds out no sample of the 320 training samples/);
    expect(() => new Coordinator({ ...base, optimizer: 'cg', earlyStop: 2 })).toThrow(/options.earlyStop is not supported with the full-batch optimizer cg/);
  });

  it('train() takes { epochs }, a positive integer', async () => {
    const c = new Coordinator({ ...base, epochs: 1 });
    try {
      await expect(c.train({ epochs: 0 })).rejects.toThrow(/train\(\{ epochs \}\) must be a positive integer, got 0/);
      await expect(c.train({ epochs: 1.5 })).rejects.toThrow(/must be a positive integer, got 1.5/);
      await expect(c.train({ epoch: 2 } as never)).rejects.toThrow(/train\(\{ epoch \}\): train\(\) takes only \{ epochs \}/);
    } finally {
      await c.close();
    }
  });
});

describe('--validation-split', () => {
  it('holds out the last samples before shuffling; training never sees them: the weights of a run on the first 256 alone', async () => {
    const reports: EpochReport[] = [];
    const c = new Coordinator({ ...base, epochs: 2, onEpoch: (r) => { reports.push(r); } });
    try {
      expect(c.data.train.size).toBe(256);
      expect(c.validation!.size).toBe(64);
      expect(Array.from(c.validation!.inputs)).toEqual(Array.from(data.train.inputs.subarray(256 * 784)));
      expect(Array.from(c.validation!.labels!)).toEqual(Array.from(data.train.labels!.subarray(256)));
      const s = await c.train();
      const alone = await run({ epochs: 2, dataset: first256, validationSplit: 0 });
      expect(s.weightsSha256).toBe(alone.summary.weightsSha256);
      // The training and test figures are those of the run without a split.
      expect(s.history.map((r) => [r.trainLoss, r.testLoss])).toEqual(alone.summary.history.map((r) => [r.trainLoss, r.testLoss]));
      expect(alone.reports.every((r) => !('valLoss' in r))).toBe(true);
      // Every epoch reports the held-out samples' loss and accuracy, computed by evaluate() itself.
      expect(reports.map((r) => r.epoch)).toEqual([1, 2]);
      for (const r of reports) {
        expect(r.valLoss).toBeGreaterThan(0);
        expect(r.valAccuracy).toBeGreaterThan(0.3);
        expect({ mse: r.valMse, mae: r.valMae, labels: r.valLabelAccuracy }).toEqual({ mse: null, mae: null, labels: null });
      }
      const now = await c.evaluate(c.validation!);
      expect({ loss: reports[1]!.valLoss, acc: reports[1]!.valAccuracy }).toEqual({ loss: now.loss, acc: now.accuracy });
      expect({ loss: s.valLoss, acc: s.valAccuracy }).toEqual({ loss: now.loss, acc: now.accuracy });
      expect(s.history).toEqual(reports);
    } finally {
      await c.close();
    }
  });

  it('a transform is fitted on the part that trains, and applied to the held-out part', async () => {
    const c = new Coordinator({ ...base, epochs: 1, transform: 'standardize' });
    try {
      const s = await c.train();
      expect(JSON.stringify(s.transform)).toBe(JSON.stringify(fitTransform('standardize', first256.train)));
      expect(s.history[0]!.valLoss).toBeGreaterThan(0);
    } finally {
      await c.close();
    }
  });

  it('regression targets: valMse and valMae, in metrics.jsonl epoch lines and summary.json too', async () => {
    const rng = new Rng(4);
    const points = (name: string, n: number) => {
      const inputs = new Float32Array(n * 2);
      const targets = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        const [a, b] = [2 * rng.float() - 1, 2 * rng.float() - 1];
        inputs.set([a, b], 2 * i);
        targets[i] = a * b + 0.5 * a;
      }
      return makeDataset({ name, inputShape: [2], targetShape: [1], inputs, targets });
    };
    const logDir = join(dir, 'regression-log');
    const c = new Coordinator({
      model: { inputShape: [2], layers: [{ type: 'dense', inputs: 2, units: 8 }, { type: 'tanh' }, { type: 'dense', inputs: 8, units: 1 }], loss: 'mse' },
      dataset: { train: points('xy', 120), test: points('xy-test', 40) }, epochs: 2, batchSize: 16, optimizer: 'adam', lr: 0.01, validationSplit: 0.25, logDir,
    });
    try {
      const s = await c.train();
      expect(c.validation!.size).toBe(30);
      for (const r of s.history) {
        expect(r.valMse).toBeGreaterThan(0);
        expect(r.valMae).toBeGreaterThan(0);
        expect(r.valAccuracy).toBeNull();
        // MSE loss is the mean squared error per sample; one target per sample.
        expect(r.valMse).toBeCloseTo(r.valLoss!, 6);
      }
      const lines = readFileSync(join(logDir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((l) => l.type === 'epoch');
      expect(lines.map((l) => [l.epoch, l.valLoss, l.valMse, l.valMae])).toEqual(s.history.map((r) => [r.epoch, r.valLoss, r.valMse, r.valMae]));
      const saved = JSON.parse(readFileSync(join(logDir, 'summary.json'), 'utf8'));
      expect(saved.history.map((r: EpochReport) => r.valMse)).toEqual(s.history.map((r) => r.valMse));
      expect(saved.valMse).toBe(s.history[1]!.valMse);
    } finally {
      await c.close();
    }
  });
});

describe('full-batch methods', () => {
  it('report the validation set each epoch, and train once', async () => {
    const c = new Coordinator({ ...base, optimizer: 'lbfgs', lr: 1, epochs: 2, iterationsPerEpoch: 2 });
    try {
      const s = await c.train();
      expect(s.history.map((r) => r.epoch)).toEqual([1, 2]);
      for (const r of s.history) expect(r.valLoss).toBeGreaterThan(0);
      expect(s.valLoss).toBe(s.history[1]!.valLoss);
      expect((await c.evaluate(c.validation!)).loss).toBe(s.valLoss);
      await expect(c.train({ epochs: 1 })).rejects.toThrow(/train\(\) again: the full-batch optimizer lbfgs cannot go on from an earlier train\(\)/);
    } finally {
      await c.close();
    }
  });
});

describe('--early-stop on every placement', () => {
  for (const placement of Object.keys(transports)) {
    it(`${placement}: stops after PATIENCE epochs without a lower validation loss, on the best epoch's weights`, async () => {
      const r = await run({ epochs: 12, earlyStop: 2, ...placementOptions(placement) });
      const s = r.summary;
      const losses = s.history.map((h) => h.valLoss!);
      expect(s.stoppedEarly).toBeDefined();
      expect(s.stoppedEarly).toEqual(stopOf(losses, 2));
      const { epoch, bestEpoch } = s.stoppedEarly!;
      expect(s.history.length).toBe(epoch);
      expect(r.reports.map((x) => x.epoch)).toEqual(range(1, epoch + 1));
      expect(s.epochs).toBe(epoch);
      // The weights of a plain run of bestEpoch epochs: the data order of an epoch does not depend on how many follow.
      const best = await reference(bestEpoch);
      expect(s.weightsSha256).toBe(best.summary.weightsSha256);
      expect(s.history.slice(0, bestEpoch).map(trajectory)).toEqual(best.summary.history.map(trajectory));
      // The summary's figures are the best epoch's: they describe the weights it ends with.
      expect({ test: s.testLoss, val: s.valLoss, acc: s.testAccuracy }).toEqual({ test: best.summary.testLoss, val: best.summary.valLoss, acc: best.summary.testAccuracy });
      expect(s.valLoss).toBe(s.stoppedEarly!.bestValLoss);
    });
  }

  it('a patience longer than the run never stops it', async () => {
    const r = await run({ epochs: 3, earlyStop: 5 });
    expect(r.summary.stoppedEarly).toBeUndefined();
    expect(r.summary.weightsSha256).toBe((await reference(3)).summary.weightsSha256);
  });

  it('the console line says so; --json has stoppedEarly', async () => {
    const out: string[] = [];
    const err: string[] = [];
    // The built-in digits at a rate that overshoots: the validation loss turns up at once.
    const code = await trainMain(['--epochs', '4', '--validation-split', '0.2', '--early-stop', '1', '--lr', '0.5', '--json'],
      { out: (s) => out.push(s), err: (s) => err.push(s), tty: null });
    expect(code).toBe(0);
    const s = JSON.parse(out.join('\n')) as TrainSummary;
    expect(s.stoppedEarly).toBeDefined();
    const { epoch, bestEpoch, bestValLoss } = s.stoppedEarly!;
    expect(err.join('\n')).toContain('(6400 train / 1600 validation / 2000 test)');
    expect(err.filter((l) => l.startsWith('epoch ')).every((l) => /val loss \d+\.\d{4}  val acc \d+\.\d\d%/.test(l))).toBe(true);
    expect(err).toContain(`chainrule: stopped early after epoch ${epoch}: the validation loss has not improved for 1 epoch(s); restored epoch ${bestEpoch}'s weights and optimizer state (val loss ${bestValLoss.toFixed(4)})`);
  });
});

describe('train() called again goes on where it stopped', () => {
  // Adam's slots and t, a step schedule, dropout streams and early stopping's best so far must all go on.
  const cont: CoordinatorOptions = { optimizer: 'adam', lr: 0.01, lrSchedule: 'step', gamma: 0.5, earlyStop: 5 };
  for (const placement of Object.keys(transports)) {
    it(`${placement}: train() for 2 epochs, then train({ epochs: 1 }), gives the weights and reports of one 3-epoch run`, async () => {
      const three = await reference(3, cont);
      const r = await run({ ...cont, epochs: 2, ...placementOptions(placement) }, async (c, first) => {
        expect(first.epochs).toBe(2);
        const again = await c.train({ epochs: 1 });
        await expect(c.train()).rejects.toThrow('nothing to train: training has 3 epochs done and epochs is 2\nHow to fix: train({ epochs: N }) trains N more');
        return again;
      });
      expect(r.summary.weightsSha256).toBe(three.summary.weightsSha256);
      expect(r.summary.epochs).toBe(3);
      expect(r.reports.map((x) => x.epoch)).toEqual([1, 2, 3]);
      expect(r.summary.history.map(trajectory)).toEqual(three.summary.history.map(trajectory));
      expect(r.steps.map((x) => [x.step, x.epoch, x.lr])).toEqual(three.steps.map((x) => [x.step, x.epoch, x.lr]));
      expect(r.steps.at(-1)!.lr).toBe(0.01 * 0.25);
    });
  }

  it('stopped mid-epoch (Coordinator.stop), train() finishes the run from that step', async () => {
    const full = await reference(3, cont);
    let c: Coordinator | null = null;
    c = new Coordinator({ ...base, ...cont, epochs: 3, onStep: (x) => { if (x.step === 13) c!.stop(); } });
    try {
      const first = await c.train();
      expect(first.stopped!.step).toBe(13);
      const rest = await c.train();
      expect(rest.weightsSha256).toBe(full.summary.weightsSha256);
      expect(rest.history.map(trajectory)).toEqual(full.summary.history.map(trajectory));
    } finally {
      await c.close();
    }
  });

  it('with --log-dir the second call appends to metrics.jsonl', async () => {
    const logDir = join(dir, 'again-log');
    await run({ epochs: 1, logDir }, (c) => c.train({ epochs: 2 }));
    const epochs = readFileSync(join(logDir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((l) => l.type === 'epoch').map((l) => l.epoch);
    expect(epochs).toEqual([1, 2, 3]);
    expect(JSON.parse(readFileSync(join(logDir, 'summary.json'), 'utf8')).history.length).toBe(3);
  });
});

describe('early stopping with checkpoints', () => {
  let straight: Run;
  const every4 = join(dir, 'every4');
  beforeAll(async () => {
    straight = await run({ epochs: 12, earlyStop: 2, checkpoint: every4, checkpointEvery: 4, keep: 100 });
  });

  it('checkpointing changes nothing; a checkpoint after the best epoch keeps that epoch\'s state beside its own', async () => {
    const plainStop = await run({ epochs: 12, earlyStop: 2 });
    expect(straight.summary.weightsSha256).toBe(plainStop.summary.weightsSha256);
    expect(straight.summary.stoppedEarly).toEqual(plainStop.summary.stoppedEarly);
    const { bestEpoch } = straight.summary.stoppedEarly!;
    const after = join(every4, `step-${bestEpoch * 8 + 4}`);
    expect(readdirSync(after).sort()).toEqual(['best-buffers.safetensors', 'best-optimizer.safetensors', 'best-weights.safetensors',
      'buffers.safetensors', 'manifest.json', 'optimizer.safetensors', 'state.json', 'weights.safetensors']);
    const state = JSON.parse(readFileSync(join(after, 'state.json'), 'utf8'));
    expect({ wait: state.earlyStop.wait, epoch: state.earlyStop.best.epoch, stored: state.earlyStop.best.stored }).toEqual({ wait: 0, epoch: bestEpoch, stored: true });
  });

  const cases: [string, 'before' | 'after'][] = [['local', 'before'], ['threads', 'after'], ['grpc', 'after']];
  for (const [placement, when] of cases) {
    it(`resumed on ${placement} from ${when} the best epoch: stops where the uninterrupted run does, on the same weights`, async () => {
      const { bestEpoch } = straight.summary.stoppedEarly!;
      // Mid-epoch: the one before the best epoch, or the one after it.
      const step = when === 'before' ? (bestEpoch - 1) * 8 + 4 : bestEpoch * 8 + 4;
      const r = await run({ epochs: 12, earlyStop: 2, resume: join(every4, `step-${step}`), ...placementOptions(placement) });
      expect(r.summary.resumedFrom!.step).toBe(step);
      expect(r.summary.stoppedEarly).toEqual(straight.summary.stoppedEarly);
      expect(r.summary.weightsSha256).toBe(straight.summary.weightsSha256);
      expect(r.reports.map(trajectory)).toEqual(straight.summary.history.slice(Math.floor(step / 8)).map(trajectory));
    });
  }

  it('the epoch-end checkpoint of a stopped run holds the restored state: going on from it is going on in the process', async () => {
    const d = join(dir, 'epoch-end');
    const inProcess = await run({ epochs: 12, earlyStop: 2, checkpoint: d, keep: 100 }, (c) => c.train({ epochs: 2 }));
    const { epoch, bestEpoch } = straight.summary.stoppedEarly!;
    const stoppedAt = join(d, `step-${epoch * 8}`);
    const state = JSON.parse(readFileSync(join(stoppedAt, 'state.json'), 'utf8'));
    // The best epoch's state is the checkpoint's own: stored once.
    expect({ wait: state.earlyStop.wait, epoch: state.earlyStop.best.epoch, stored: state.earlyStop.best.stored }).toEqual({ wait: 0, epoch: bestEpoch, stored: false });
    expect(existsSync(join(stoppedAt, 'best-weights.safetensors'))).toBe(false);
    const c = new Coordinator({ ...base, epochs: 12, earlyStop: 2 });
    try {
      await c.loadCheckpoint(stoppedAt);
      expect(await c.weightsSha256()).toBe((await reference(bestEpoch)).summary.weightsSha256);
      const s = await c.train({ epochs: 2 });
      expect(s.weightsSha256).toBe(inProcess.summary.weightsSha256);
      expect(s.history.map((h) => h.epoch)).toEqual([epoch + 1, epoch + 2]);
      expect(s.history.map(trajectory)).toEqual(inProcess.summary.history.slice(epoch).map(trajectory));
    } finally {
      await c.close();
    }
  });

  it('a state restored and not yet stepped on keeps its optimizer slots in the next checkpoint', async () => {
    const { bestEpoch } = straight.summary.stoppedEarly!;
    const c = new Coordinator({ ...base, epochs: 12, earlyStop: 2 });
    try {
      await c.loadCheckpoint(join(every4, `step-${bestEpoch * 8 + 4}`));
      const again = await c.saveCheckpoint(join(dir, 'again'));
      const state = (p: string) => JSON.parse(readFileSync(join(p, 'state.json'), 'utf8'));
      expect(state(again).optimizerState).toEqual(state(join(every4, `step-${bestEpoch * 8 + 4}`)).optimizerState);
      expect(readFileSync(join(again, 'optimizer.safetensors'))).toEqual(readFileSync(join(every4, `step-${bestEpoch * 8 + 4}`, 'optimizer.safetensors')));
      expect(readFileSync(join(again, 'best-weights.safetensors'))).toEqual(readFileSync(join(every4, `step-${bestEpoch * 8 + 4}`, 'best-weights.safetensors')));
    } finally {
      await c.close();
    }
  });

  it('a checkpoint missing a best-*.safetensors file is refused, naming it', async () => {
    const { bestEpoch } = straight.summary.stoppedEarly!;
    const ck = listCheckpoints(every4).find((x) => x.step === bestEpoch * 8 + 4)!.path;
    const copy = join(dir, 'torn', `step-${bestEpoch * 8 + 4}`);
    cpSync(ck, copy, { recursive: true });
    unlinkSync(join(copy, 'best-optimizer.safetensors'));
    const c = new Coordinator({ ...base, epochs: 12, earlyStop: 2 });
    try {
      await expect(c.loadCheckpoint(copy)).rejects.toThrow(/best-optimizer\.safetensors is missing/);
    } finally {
      await c.close();
    }
  });
});
