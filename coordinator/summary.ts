/** What a run reports: per step, per epoch, and the summary (the `--json` object). */
import type { TransformSpec } from '../src/data/index.js';
import type { Metrics } from '../src/nn/index.js';
import { nativeKernel } from '../src/tensor/native/index.js';
import type { RecoveryReport } from './recovery.js';
import { chainruleVersion } from './saved-model.js';
import { theoreticalBubble as scheduleBubble } from './schedules/index.js';

export interface StepInfo {
  /** Steps done so far in this run (1 after the first). */
  step: number;
  epoch: number;
  /** Mean training loss of this step's minibatch. */
  loss: number;
  /** Over the epoch so far. */
  samplesPerSecond: number;
  /** This step's place in its epoch (1 after the epoch's first step) and the epoch's steps. */
  batch: number;
  batches: number;
  /** The learning rate this step used. */
  lr: number;
  /** The global gradient norm before clipping: only with clipNorm (where it is computed anyway). */
  gradNorm?: number;
}

export interface EpochReport {
  epoch: number;
  trainLoss: number;
  testLoss: number;
  testAccuracy: number | null;
  /** Regression (loss mse): mean squared and absolute error per target element; else null. */
  testMse: number | null;
  testMae: number | null;
  /** Multi-label (loss bce): share of right label decisions (sigmoid > 0.5); else null. */
  testLabelAccuracy: number | null;
  /**
   * With validationSplit: the loss and metrics on the held-out samples, as the test ones
   * (accuracy for classifiers, MSE/MAE for regression, label accuracy for multi-label; the
   * others null). Absent without a validation set.
   */
  valLoss?: number;
  valAccuracy?: number | null;
  valMse?: number | null;
  valMae?: number | null;
  valLabelAccuracy?: number | null;
  samplesPerSecond: number;
  droppedSamples: number;
  seconds: number;
  /** The measured bubble over this epoch's steps (see BubbleMeter). */
  bubbleFraction: number;
}

/** The checkpoint a run resumed from: its directory and the position it held. */
export interface ResumedFrom {
  /** DIR/step-N. */
  path: string;
  step: number;
  /** 0-based epoch and the next minibatch in it. */
  epoch: number;
  batch: number;
  /** Leftovers of interrupted checkpoint writes that were passed over. */
  ignored: string[];
}

/** The test metrics an EpochReport carries, from an evaluation. */
export function testMetrics(m: Metrics): Pick<EpochReport, 'testMse' | 'testMae' | 'testLabelAccuracy'> {
  return { testMse: m.mse, testMae: m.mae, testLabelAccuracy: m.labelAccuracy };
}

/** The validation figures an EpochReport carries, from an evaluation of the held-out samples. */
export function valMetrics(ev: Metrics & { loss: number }): Required<Pick<EpochReport, ValKey>> {
  return { valLoss: ev.loss, valAccuracy: ev.accuracy, valMse: ev.mse, valMae: ev.mae, valLabelAccuracy: ev.labelAccuracy };
}

type ValKey = 'valLoss' | 'valAccuracy' | 'valMse' | 'valMae' | 'valLabelAccuracy';
const VAL_KEYS: readonly ValKey[] = ['valLoss', 'valAccuracy', 'valMse', 'valMae', 'valLabelAccuracy'];

/**
 * The last epoch's losses and metrics (with early stopping: the best epoch's, whose weights the
 * run ends with); samplesPerSecond over the run, droppedSamples over every epoch.
 */
type EpochFigures = Pick<EpochReport, 'trainLoss' | 'testLoss' | 'testAccuracy' | 'testMse' | 'testMae' | 'testLabelAccuracy' | ValKey | 'samplesPerSecond' | 'droppedSamples'>;

export interface TrainSummary extends EpochFigures {
  epochs: number;
  droppedPerEpoch: number;
  weightsSha256: string;
  placement: string;
  replicas: number;
  /** The stage actors of a replica: K·V chunks with virtual stages. */
  stages: number;
  /** With an interleaved schedule: chunks per device (so stages / virtualStages devices); absent for 1. */
  virtualStages?: number;
  /** Threads each actor split its large products among; absent for 1. */
  kernelThreads?: number;
  partition: number[];
  /** With `--partition auto`: each stage's measured compute per step (ms) under the cut, and under the cut by parameters. */
  timedPartition?: { stageMs: number[]; byParameters: { partition: number[]; stageMs: number[] } };
  microBatches: number;
  schedule: string;
  bubbleFraction: number;
  theoreticalBubbleFraction: number;
  backend: string;
  /** The native backend's sgemm microkernel ('avx512', 'avx2+fma', 'generic'); null for the others. */
  backendKernel: string | null;
  optimizer: string;
  seed: number;
  batchSize: number;
  lr: number;
  parameters: number;
  /** Full-batch methods: gradient and loss evaluations. */
  gradEvals?: number;
  lossEvals?: number;
  transform?: TransformSpec;
  /** Each lost actor the run survived: what, when, how long detection and recovery took, steps replayed. */
  recoveries: RecoveryReport[];
  /** Steps dropped by every actor because a NaN or infinity appeared in them (skipNonFinite). */
  skippedSteps: number;
  /** Every epoch's report, in order. */
  history: EpochReport[];
  /** From train() to the summary, opening the actors included. */
  wallSeconds: number;
  versions: { chainrule: string; node: string };
  /** Set when the run resumed from a checkpoint. */
  resumedFrom?: ResumedFrom;
  /** Set when the run was stopped early (Coordinator.stop, Ctrl-C): after which step, and the checkpoint written then. */
  stopped?: { step: number; checkpoint: string | null };
  /**
   * Set when early stopping ended the run: the epoch it stopped after, and the best epoch
   * (lowest validation loss), whose weights, buffers and optimizer state the run ends with.
   */
  stoppedEarly?: { epoch: number; bestEpoch: number; bestValLoss: number };
}

/** What a summary tells of a run besides its last epoch: the configuration, the state at the end, the epochs so far. */
export type RunFacts = Pick<TrainSummary, 'epochs' | 'weightsSha256' | 'placement' | 'replicas' | 'stages' | 'virtualStages' | 'kernelThreads' | 'partition' | 'microBatches' | 'schedule'
  | 'bubbleFraction' | 'backend' | 'optimizer' | 'seed' | 'batchSize' | 'lr' | 'parameters' | 'transform' | 'recoveries' | 'skippedSteps'>
  & { history: readonly EpochReport[]; started: number; resumedFrom: ResumedFrom | null };

/**
 * The summary of a run (the `--json` object) from its facts and its last epoch; `extra`
 * overrides what a full-batch run counts otherwise (epochs, micro-batches, evaluations).
 * @example summarize(facts, lastEpoch, 5400, 32).testAccuracy
 */
export function summarize(
  run: RunFacts, last: EpochReport, samplesPerSecond: number, droppedPerEpoch: number, extra: Partial<TrainSummary> = {},
): TrainSummary {
  return {
    epochs: run.epochs, trainLoss: last.trainLoss, testLoss: last.testLoss, testAccuracy: last.testAccuracy,
    testMse: last.testMse, testMae: last.testMae, testLabelAccuracy: last.testLabelAccuracy,
    ...Object.fromEntries(VAL_KEYS.filter((k) => last[k] !== undefined).map((k) => [k, last[k]])), samplesPerSecond,
    droppedSamples: droppedPerEpoch * run.epochs, droppedPerEpoch, weightsSha256: run.weightsSha256,
    placement: run.placement, replicas: run.replicas, stages: run.stages, ...((run.virtualStages ?? 1) > 1 ? { virtualStages: run.virtualStages } : {}),
    ...((run.kernelThreads ?? 1) > 1 ? { kernelThreads: run.kernelThreads } : {}),
    partition: run.partition, microBatches: run.microBatches, schedule: run.schedule, bubbleFraction: run.bubbleFraction,
    // (A full-batch run's extra gives its own: its micro-batch count is not the option's.)
    theoreticalBubbleFraction: extra.theoreticalBubbleFraction ?? theoreticalBubble(run.stages, run.microBatches, run.schedule, run.virtualStages),
    backend: run.backend, backendKernel: run.backend === 'native' ? nativeKernel() : null,
    optimizer: run.optimizer, seed: run.seed, batchSize: run.batchSize, lr: run.lr,
    parameters: run.parameters, transform: run.transform, recoveries: run.recoveries, skippedSteps: run.skippedSteps, ...extra,
    history: [...run.history], wallSeconds: (performance.now() - run.started) / 1000,
    versions: { chainrule: chainruleVersion(), node: process.versions.node },
    ...(run.resumedFrom ? { resumedFrom: run.resumedFrom } : {}),
  };
}

const fmt = (v: number) => (Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(3) : v.toFixed(4));

/** The regression and multi-label part of a progress line: `  test mse 0.0123  mae 0.0871`, `  label acc 93.10%`, or ''. */
export function metricsText(r: Pick<EpochReport, 'testMse' | 'testMae' | 'testLabelAccuracy'>): string {
  return (r.testMse === null || r.testMse === undefined ? '' : `  test mse ${fmt(r.testMse)}  mae ${fmt(r.testMae ?? NaN)}`)
    + (r.testLabelAccuracy === null || r.testLabelAccuracy === undefined ? '' : `  label acc ${(r.testLabelAccuracy * 100).toFixed(2)}%`);
}

/** The validation part of a progress line: `  val loss 0.3120  val acc 91.25%` (or val mse/mae, label acc), or ''. */
export function valText(r: Pick<EpochReport, ValKey>): string {
  if (r.valLoss === undefined) return '';
  return `  val loss ${fmt(r.valLoss)}`
    + (r.valAccuracy === null || r.valAccuracy === undefined ? '' : `  val acc ${(r.valAccuracy * 100).toFixed(2)}%`)
    + (r.valMse === null || r.valMse === undefined ? '' : `  val mse ${fmt(r.valMse)}  mae ${fmt(r.valMae ?? NaN)}`)
    + (r.valLabelAccuracy === null || r.valLabelAccuracy === undefined ? '' : `  val label acc ${(r.valLabelAccuracy * 100).toFixed(2)}%`);
}

/**
 * The schedule's bubble in theory (GPipe's when none is named): the share of stage time idle
 * while the pipeline fills and drains, with equal forward, backward and weight-gradient times.
 * `stages` counts every stage actor: with `virtualStages` V, K·V chunks on K devices.
 * @example theoreticalBubble(2, 8, 'zb-h1') // 1/25, against 1/9 for '1f1b'
 * @example theoreticalBubble(4, 8, 'interleaved-1f1b', 2) // 1/17: K=2 devices, V=2
 */
export function theoreticalBubble(stages: number, microBatches: number, schedule = 'gpipe', virtualStages = 1): number {
  return scheduleBubble(schedule, stages / virtualStages, microBatches, virtualStages);
}

/** Totals of a BubbleMeter at one moment (to measure the bubble between two moments). */
export interface BubbleMark { busyMs: number; actorWallMs: number }

/**
 * Busy and wall time of every actor, summed over steps: the measured bubble is the share of
 * actor time (each step's slowest actor's wall time, times the actors) not spent computing.
 */
export class BubbleMeter {
  /** Milliseconds the actors computed, summed over actors and steps. */
  busyMs = 0;
  /** The slowest actor's wall time of each step, times the number of actors, summed over steps. */
  actorWallMs = 0;
  private stepWallMs = 0;
  private perActor: number[] = [];
  /** The most kernel threads an actor ran the last step on (null before a step). */
  kernelThreads: number | null = null;

  /**
   * One step's reports: each actor's busy time against the slowest actor's wall time, over
   * `devices` devices (fewer than the actors when each hosts several virtual stages).
   */
  add(reports: readonly { busyMs: number; wallMs: number; kernelThreads?: number }[], devices = reports.length): void {
    const wall = Math.max(...reports.map((r) => r.wallMs));
    let threads = 1;
    for (const [a, r] of reports.entries()) {
      this.busyMs += r.busyMs;
      this.perActor[a] = (this.perActor[a] ?? 0) + r.busyMs;
      threads = Math.max(threads, r.kernelThreads ?? 1);
    }
    this.kernelThreads = threads;
    this.actorWallMs += wall * devices;
    this.stepWallMs += wall;
  }

  get fraction(): number {
    return BubbleMeter.between({ busyMs: 0, actorWallMs: 0 }, this.mark());
  }

  mark(): BubbleMark {
    return { busyMs: this.busyMs, actorWallMs: this.actorWallMs };
  }

  /** The measured bubble over the steps between two marks. */
  static between(from: BubbleMark, to: BubbleMark): number {
    const wall = to.actorWallMs - from.actorWallMs;
    return wall > 0 ? Math.max(0, 1 - (to.busyMs - from.busyMs) / wall) : 0;
  }

  /** Each actor's busy time and the steps' wall time (the same for all), summed over steps. */
  actors(): { busyMs: number; wallMs: number }[] {
    return this.perActor.map((busyMs) => ({ busyMs, wallMs: this.stepWallMs }));
  }
}
