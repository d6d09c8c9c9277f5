/** What a run reports: per step, per epoch, and the summary (the `--json` object). */
import type { TransformSpec } from '../src/data/index.js';
import type { RecoveryReport } from './recovery.js';

export interface StepInfo {
  /** Steps done so far in this run (1 after the first). */
  step: number;
  epoch: number;
  /** Mean training loss of this step's minibatch. */
  loss: number;
  samplesPerSecond: number;
}

export interface EpochReport {
  epoch: number;
  trainLoss: number;
  testLoss: number;
  testAccuracy: number | null;
  samplesPerSecond: number;
  droppedSamples: number;
  seconds: number;
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

export interface TrainSummary {
  epochs: number;
  trainLoss: number;
  testLoss: number;
  testAccuracy: number | null;
  samplesPerSecond: number;
  droppedSamples: number;
  droppedPerEpoch: number;
  weightsSha256: string;
  placement: string;
  replicas: number;
  stages: number;
  partition: number[];
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
  /** Set when the run resumed from a checkpoint. */
  resumedFrom?: ResumedFrom;
}

/** GPipe's bubble: the share of stage time idle while the pipeline fills and drains. */
export function theoreticalBubble(stages: number, microBatches: number): number {
  return (stages - 1) / (microBatches + stages - 1);
}

/** Busy and wall time of every actor, summed over steps: the measured bubble. */
export class BubbleMeter {
  /** Milliseconds the actors computed, summed over actors and steps. */
  busyMs = 0;
  /** The slowest actor's wall time of each step, times the number of actors, summed over steps. */
  actorWallMs = 0;

  /** One step's reports: each actor's busy time against the slowest actor's wall time. */
  add(reports: readonly { busyMs: number; wallMs: number }[]): void {
    const wall = Math.max(...reports.map((r) => r.wallMs));
    for (const r of reports) this.busyMs += r.busyMs;
    this.actorWallMs += wall * reports.length;
  }

  get fraction(): number {
    return this.actorWallMs > 0 ? Math.max(0, 1 - this.busyMs / this.actorWallMs) : 0;
  }
}
