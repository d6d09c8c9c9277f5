/**
 * Checkpoints: committed crash-safely, verified byte for byte on resume, and resumable
 * mid-epoch to the bit on any placement, stage count and replica count; a trainer killed
 * at random moments always resumes from the newest complete checkpoint.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Coordinator, cli, isUserError, type CoordinatorOptions, type EpochReport } from '../coordinator/index.js';
import { CheckpointError, listCheckpoints, unfinishedEntries } from '../coordinator/checkpoint.js';
import { loadMnist, subset, type Dataset } from '../src/data/index.js';
import { optimizers } from '../src/optim/index.js';
import type { ModelSpec } from '../src/nn/index.js';
import type { NamedTensors } from '../src/wire/index.js';
import { startNode } from '../node/server.js';
import { killFixture, killLoop, type KillFigures } from '../scripts/checkpoint-kill.js';
import { startNodeProcess, worstRelativeError } from './helpers.js';

// Every kind of state a resume must carry: BatchNorm buffers, dropout streams, Adam's slots and t.
const spec: ModelSpec = {
  inputShape: [784],
  layers: [
    { type: 'dense', inputs: 784, units: 32 }, { type: 'batchNorm', channels: 32 }, { type: 'relu' }, { type: 'dropout', rate: 0.3 },
    { type: 'dense', inputs: 32, units: 10, init: 'xavier' },
  ],
  loss: 'softmaxCrossEntropy',
};
const dir = mkdtempSync(join(tmpdir(), 'chainrule-ckpt-'));
let data: { train: Dataset; test: Dataset };
const nodes: { address: string; close(): Promise<void> }[] = [];

/**
 * The kill test spends its time in child processes (starting, writing, being killed):
 * it starts first and runs beside the other tests; its own test at the end awaits it.
 */
let killed: Promise<KillFigures | Error>;

beforeAll(async () => {
  const work = join(dir, 'kill');
  killed = killLoop({ kills: 10, dir: join(work, 'ck'), train: killFixture(work, { epochs: 40 }), maxDelayMs: 300, seed: 2 }).catch((e: Error) => e);
  const m = loadMnist();
  // 8 minibatches of 32 per epoch; augmentation (shift, noise) and an lr schedule per step.
  data = { train: subset(m.train, Array.from({ length: 256 }, (_, i) => i)), test: subset(m.test, Array.from({ length: 100 }, (_, i) => i)) };
  for (let i = 0; i < 2; i++) nodes.push(await startNode({ host: '127.0.0.1', port: 0 }));
});

afterAll(async () => {
  await killed;
  await Promise.all(nodes.map((n) => n.close()));
  rmSync(dir, { recursive: true, force: true });
});

interface Run { sha: string; params: NamedTensors; reports: EpochReport[]; resumedFrom?: string }

const base: CoordinatorOptions = {
  model: spec, batchSize: 32, microBatches: 2, optimizer: 'adam', seed: 5,
  lrSchedule: { type: 'exponential', lr: 0.01, gamma: 0.5 }, augmentShift: 1, noise: 0.02,
};

async function run(o: CoordinatorOptions): Promise<Run> {
  const reports: EpochReport[] = [];
  const c = new Coordinator({ dataset: data, ...base, onEpoch: (r) => { reports.push(r); }, ...o });
  try {
    const s = await c.train();
    return { sha: s.weightsSha256, params: await c.parameters(), reports, resumedFrom: s.resumedFrom?.path };
  } finally {
    await c.close();
  }
}

const relativeError = (a: NamedTensors, b: NamedTensors) => worstRelativeError(a, b).value;

/** The report fields that must not depend on where the run was interrupted. */
const trajectory = (r: EpochReport) => ({ epoch: r.epoch, trainLoss: r.trainLoss, testLoss: r.testLoss, testAccuracy: r.testAccuracy, droppedSamples: r.droppedSamples });

describe('mid-epoch resume is bit-exact', () => {
  let straight: Run;
  const every2 = join(dir, 'every2');
  /** The run that writes a checkpoint every 2 steps into every2, once, for whichever test needs it first. */
  let every2Run: Promise<Run> | null = null;
  const written = () => (every2Run ??= run({ epochs: 2, checkpoint: every2, checkpointEvery: 2, keep: 8 }));

  beforeAll(async () => {
    straight = await run({ epochs: 2 });
  });

  it('checkpointing every 2 steps changes nothing, and keeps what --keep says', async () => {
    const r = await written();
    expect(r.sha).toBe(straight.sha);
    expect(r.reports.map(trajectory)).toEqual(straight.reports.map(trajectory));
    expect(listCheckpoints(every2).map((c) => c.step)).toEqual([2, 4, 6, 8, 10, 12, 14, 16]);
    expect(unfinishedEntries(every2)).toEqual([]);
    expect(readdirSync(join(every2, 'step-2')).sort()).toEqual(['buffers.safetensors', 'manifest.json', 'optimizer.safetensors', 'state.json', 'weights.safetensors']);
    const state = JSON.parse(readFileSync(join(every2, 'step-10', 'state.json'), 'utf8'));
    expect({ step: state.step, epoch: state.epoch, batch: state.batch, t: state.optimizerState.t }).toEqual({ step: 10, epoch: 1, batch: 2, t: 10 });
  });

  // step 8 is the end of epoch 1 before its evaluation: the resumed run trains nothing more in it, evaluates and reports it.
  const cases: [string, number, CoordinatorOptions][] = [
    ['local, 1 stage', 4, {}],
    ['threads, 2 stages, 1f1b', 8, { placement: 'threads', stages: 2, schedule: '1f1b' }],
    ['grpc, 3 stages', 10, { placement: 'grpc', stages: 3 }],
    ['local, 2 stages', 14, { stages: 2 }],
  ];
  for (const [where, step, o] of cases) {
    const epoch = Math.ceil(step / 8) - 1;
    it(`from step ${step} (epoch ${epoch + 1}, after minibatch ${step - 8 * epoch}) on ${where}: the uninterrupted weights and epoch reports`, async () => {
      await written();
      const r = await run({ epochs: 2, resume: join(every2, `step-${step}`), ...o, nodes: o.placement === 'grpc' ? nodes.map((n) => n.address) : undefined });
      expect(r.resumedFrom).toBe(join(every2, `step-${step}`));
      expect(r.sha).toBe(straight.sha);
      // The resumed epoch's report covers all of it, the part before the checkpoint included.
      expect(r.reports.map(trajectory)).toEqual(straight.reports.slice(epoch).map(trajectory));
    });
  }

  it('--resume DIR takes the newest, and an epoch-end checkpoint resumes to more epochs', async () => {
    const d = join(dir, 'epochs');
    await run({ epochs: 1, checkpoint: d, stages: 3 });
    expect(listCheckpoints(d).map((c) => c.step)).toEqual([8]);
    const r = await run({ epochs: 2, resume: d });
    expect(r.resumedFrom).toBe(join(d, 'step-8'));
    expect(r.sha).toBe(straight.sha);
  });
});

describe('every element-wise optimizer resumes mid-epoch to the bit', () => {
  for (const name of Object.keys(optimizers)) {
    it(name, async () => {
      const d = join(dir, `opt-${name}`);
      const o: CoordinatorOptions = { epochs: 1, optimizer: name, lr: 0.01, lrSchedule: undefined, ...(name === 'rmsprop' ? { centered: true, momentum: 0.5 } : {}) };
      const written = await run({ ...o, checkpoint: d, checkpointEvery: 3 });
      expect((await run({ ...o, resume: join(d, 'step-3') })).sha).toBe(written.sha);
    });
  }
});

describe('resume across replica counts', () => {
  it('R=2 resumes mid-epoch with R=2 bit-exactly (other placement and stages) and with R=1 to 1e-5', async () => {
    const r2 = { replicas: 2, microBatches: 1 };
    const straight = await run({ epochs: 2, ...r2 });
    const d = join(dir, 'r2');
    await run({ epochs: 1, ...r2, placement: 'grpc', nodes: nodes.map((n) => n.address), checkpoint: d, checkpointEvery: 3 });
    const same = await run({ epochs: 2, ...r2, stages: 2, resume: join(d, 'step-3') });
    expect(same.sha).toBe(straight.sha);
    const one = await run({ epochs: 2, replicas: 1, microBatches: 2, resume: join(d, 'step-3') });
    expect(relativeError(one.params, straight.params)).toBeLessThan(1e-5);
  });
});

describe('a torn, truncated or altered checkpoint is refused, naming the file', () => {
  let good: string;
  let c: Coordinator;
  const copy = (name: string): string => {
    const d = join(dir, 'tamper', name);
    cpSync(good, join(d, 'step-4'), { recursive: true });
    return d;
  };
  const refusal = async (d: string): Promise<CheckpointError> => {
    try {
      await c.loadCheckpoint(d);
    } catch (e) {
      expect(e).toBeInstanceOf(CheckpointError);
      expect(isUserError(e)).toBe(true);
      return e as CheckpointError;
    }
    throw new Error(`${d} was loaded`);
  };
  const flip = (file: string, bit: number) => {
    const b = readFileSync(file);
    b[bit >> 3]! ^= 1 << (bit & 7);
    writeFileSync(file, b);
  };

  beforeAll(async () => {
    const d = join(dir, 'good');
    await run({ epochs: 1, checkpoint: d, checkpointEvery: 4 });
    good = join(d, 'step-4');
    c = new Coordinator({ dataset: data, ...base, epochs: 2 });
    await c.open();
  });
  afterAll(() => c.close());

  it('a flipped bit, a truncated file, an extra file, a missing file, an altered manifest', async () => {
    let d = copy('bit');
    flip(join(d, 'step-4', 'weights.safetensors'), 8 * 200 + 3);
    expect((await refusal(d)).message).toMatch(/step-4: weights\.safetensors has SHA-256 [0-9a-f]{16}…, the manifest says [0-9a-f]{16}…: the file was altered or torn/);

    d = copy('truncated');
    const opt = join(d, 'step-4', 'optimizer.safetensors');
    truncateSync(opt, readFileSync(opt).length - 100);
    expect((await refusal(d)).message).toMatch(/optimizer\.safetensors is \d+ bytes, the manifest says \d+: truncated/);

    d = copy('extra');
    writeFileSync(join(d, 'step-4', 'notes.txt'), 'hello');
    expect((await refusal(d)).message).toMatch(/holds notes\.txt, which its manifest does not list/);

    d = copy('missing');
    unlinkSync(join(d, 'step-4', 'state.json'));
    expect((await refusal(d)).message).toMatch(/state\.json is missing/);

    d = copy('manifest');
    const m = join(d, 'step-4', 'manifest.json');
    writeFileSync(m, readFileSync(m, 'utf8').replace(/"bytes": (\d)/, '"bytes": 9$1'));
    expect((await refusal(d)).message).toMatch(/manifest\.json does not match its own SHA-256/);

    d = copy('no-manifest');
    unlinkSync(join(d, 'step-4', 'manifest.json'));
    expect((await refusal(d)).message).toMatch(/step-4: manifest\.json is missing: not a complete checkpoint/);
  });

  it('10 random bit flips anywhere in a checkpoint: refused each time (6 of 6)', async () => {
    let seed = 12345;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const files = readdirSync(good);
    for (let trial = 0; trial < 6; trial++) {
      const d = copy(`flips-${trial}`);
      for (let i = 0; i < 10; i++) {
        const f = join(d, 'step-4', files[Math.floor(random() * files.length)]!);
        flip(f, Math.floor(random() * readFileSync(f).length * 8));
      }
      expect((await refusal(d)).code).toBe('BAD_CHECKPOINT');
    }
  });

  it('a corrupt newest checkpoint is refused, not passed over; temporary directories are passed over and named', async () => {
    const d = copy('newest');
    cpSync(good, join(d, 'step-8'), { recursive: true });
    writeFileSync(join(d, 'step-8', 'manifest.json'), readFileSync(join(d, 'step-8', 'manifest.json'), 'utf8').replace('"step": 4', '"step": 8'));
    const e = await refusal(d);
    expect(e.message).toMatch(/step-8: manifest\.json does not match its own SHA-256/);
    expect(e.hint).toMatch(/to resume from the one before it, remove .*step-8 \(or pass --resume .*step-4\)/);

    const t = copy('temp');
    cpSync(good, join(t, '.tmp-step-9-abcdef'), { recursive: true });
    unlinkSync(join(t, '.tmp-step-9-abcdef', 'manifest.json'));
    expect(await c.loadCheckpoint(t)).toMatchObject({ path: join(t, 'step-4'), step: 4, epoch: 0, batch: 4, ignored: ['.tmp-step-9-abcdef'] });

    const empty = join(dir, 'tamper', 'empty');
    mkdirSync(join(empty, '.tmp-step-1-aaaa'), { recursive: true });
    expect((await refusal(empty)).message).toMatch(/empty holds no complete checkpoint \(only \.tmp-step-1-aaaa, left by interrupted writes\)/);
    expect((await refusal(join(good, 'weights.safetensors'))).message).toMatch(/weights\.safetensors is a file, not a checkpoint directory/);
  });

  it('a checkpoint of another model, batch size or training set is refused', async () => {
    const other = new Coordinator({ dataset: data, ...base, model: { ...spec, layers: [...spec.layers.slice(0, 4), { type: 'dense', inputs: 32, units: 10 }] } });
    await expect(other.loadCheckpoint(good)).rejects.toThrow(/written for another model/);
    await other.close();
    await expect(run({ epochs: 2, batchSize: 16, resume: good })).rejects.toThrow(/written with batch size 32; this run's is 16/);
    await expect(run({ epochs: 2, dataset: { train: subset(data.train, Array.from({ length: 128 }, (_, i) => i)), test: data.test }, resume: good })).rejects.toThrow(/written for another training set/);
  });

  it('the CLI exits 2 naming the file', async () => {
    const work = join(dir, 'cli');
    const train = killFixture(work, { epochs: 2 });
    const errors: string[] = [];
    const spy = vi.spyOn(console, 'error').mockImplementation((s: unknown) => { errors.push(String(s)); });
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    try {
      expect(await cli(['train', ...train, '--checkpoint', join(work, 'ck'), '--checkpoint-every', '5', '--keep', '1'])).toBe(0);
      expect(listCheckpoints(join(work, 'ck')).map((x) => x.step)).toEqual([40]);
      flip(join(work, 'ck', 'step-40', 'buffers.safetensors'), 100);
      expect(await cli(['train', ...train, '--resume', join(work, 'ck')])).toBe(2);
    } finally {
      spy.mockRestore();
      log.mockRestore();
    }
    expect(errors.join('\n')).toMatch(/^chainrule: checkpoint .*step-40: buffers\.safetensors has SHA-256/);
  });
});

describe('writing', () => {
  it('--keep K leaves the newest K, deletes leftovers of interrupted writes, and a fresh run will not write over a later checkpoint', async () => {
    const d = join(dir, 'keep');
    mkdirSync(join(d, '.tmp-step-99-dead'), { recursive: true });
    await run({ epochs: 1, checkpoint: d, checkpointEvery: 2, keep: 2 });
    expect(readdirSync(d).sort()).toEqual(['step-6', 'step-8']);
    await expect(run({ epochs: 1, checkpoint: d })).rejects.toThrow(/--checkpoint .*keep already holds .*step-8, past this run's step 0/);
    // Resumed there, it goes on writing there.
    await run({ epochs: 2, checkpoint: d, resume: d, keep: 1 });
    expect(readdirSync(d)).toEqual(['step-16']);
  });

  it('options: --checkpoint-every and --keep need --checkpoint; full-batch optimizers refuse checkpoints', () => {
    expect(() => new Coordinator({ dataset: data, ...base, checkpointEvery: 2 })).toThrow(/options.checkpointEvery is only used with options.checkpoint DIR/);
    expect(() => new Coordinator({ dataset: data, ...base, keep: 2 })).toThrow(/options.keep is only used with options.checkpoint DIR/);
    expect(() => new Coordinator({ dataset: data, ...base, checkpoint: join(dir, 'x'), keep: 0 })).toThrow(/options.keep must be a positive integer, got 0/);
    expect(() => new Coordinator({ dataset: data, ...base, optimizer: 'lbfgs', checkpoint: join(dir, 'x') })).toThrow(/options.checkpoint is not supported with the full-batch optimizer lbfgs/);
    expect(existsSync(join(dir, 'x'))).toBe(false);
  });
});

describe('the checkpoint a run writes when it cannot recover', () => {
  it('a second node loss with no spare: the commit of a step behind, written with that step\'s position, resumes to the bit', async () => {
    const procs = await Promise.all([0, 1].map(() => startNodeProcess(['--port', '0'])));
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    try {
      const d = join(dir, 'lost');
      let kills = 0;
      const err = await run({
        epochs: 2, placement: 'grpc', stages: 2, nodes: procs.map((p) => p.address), commitEvery: 4, checkpoint: d,
        // Commits after steps 4, 8, 12: the second loss, at step 14, leaves step 12's commit.
        onStep: (r) => { if (r.step === 3 && kills === 0) { kills++; procs[1]!.child.kill('SIGKILL'); } else if (r.step === 14 && kills === 1) { kills++; procs[0]!.child.kill('SIGKILL'); } },
      }).catch((e: Error) => e);
      expect((err as Error).message).toMatch(/no spare is left .*the checkpoint of step 12 written to .*lost[\\/]step-12/);
      const straight = await run({ epochs: 2 });
      const r = await run({ epochs: 2, resume: d });
      expect(r.resumedFrom).toBe(join(d, 'step-12'));
      expect(r.sha).toBe(straight.sha);
      expect(r.reports.map(trajectory)).toEqual(straight.reports.slice(1).map(trajectory));
    } finally {
      warn.mockRestore();
      for (const p of procs) p.child.kill('SIGKILL');
    }
  });
});

describe('a trainer killed at random moments while it writes', () => {
  it('10 SIGKILLs: each resume loads the newest complete checkpoint, 0 corrupt loads, the uninterrupted weights at the end', async () => {
    const f = await killed;
    if (f instanceof Error) throw f;
    expect(f.kills).toBe(10);
    expect(f.finishedEarly).toBe(0);
    expect(f.corruptLoads).toBe(0);
    expect(f.loadedNewest + f.refused).toBe(f.resumes);
    expect(f.refusals).toEqual([]);
    expect(f.maxComplete).toBeLessThanOrEqual(4);
    expect(f.finalSha256).toBe(f.referenceSha256);
  });
});
