/**
 * A run's side of its checkpoints: where training is (the cursor), the cursors of the last
 * steps (a recovery's commit lags by up to commitEvery steps, and a checkpoint written from it
 * needs that step's position), the identity a checkpoint must share with the run that resumes
 * it, and the restore. The files themselves are checkpoint.ts's.
 *
 * @example
 * const keeper = new CheckpointKeeper(plan, () => group);
 * keeper.moveTo({ epoch: 0, batch: 1, lossSum: 2.3, samples: 64 });
 * await keeper.save('ckpt');   // ckpt/step-N
 */
import type { StageState } from '../src/wire/index.js';
import { createOptimizer } from '../src/optim/index.js';
import { checkStateFits, datasetSha256, readCheckpoint, writeCheckpoint, type RunIdentity } from './checkpoint.js';
import type { RunPlan } from './run-plan.js';
import type { StageGroup } from './stage-group.js';
import type { ResumedFrom } from './summary.js';
import type { EarlyStopState } from './early-stop.js';

/**
 * A position in training: epoch, the next minibatch in it, and that epoch's summed loss and
 * samples so far; with early stopping, its state there (it changes at epoch ends only).
 */
export interface Cursor { epoch: number; batch: number; lossSum: number; samples: number; earlyStop?: EarlyStopState }

export class CheckpointKeeper {
  /** Where training goes on: epoch, next minibatch in it, and that epoch's loss and samples so far. */
  private at: Cursor = { epoch: 0, batch: 0, lossSum: 0, samples: 0 };
  /** The cursor after each of the last steps, by steps done. */
  private readonly cursors = new Map<number, Cursor>();
  private trainSha256: string | null = null;
  /** The checkpoint this run resumed from, once loaded. */
  resumedFrom: ResumedFrom | null = null;

  /** `group`: the stage group now (a recovery replaces it). */
  constructor(private readonly plan: RunPlan, private readonly group: () => StageGroup) {}

  get cursor(): Cursor { return this.at; }

  /** Training is at `cursor` now (after the group's current step). */
  moveTo(cursor: Cursor): void {
    this.at = cursor;
    this.remember();
  }

  /** Keeps the cursor of the steps a recovery's commit may still be at. */
  remember(): void {
    if (this.plan.commitLag === 0) return;
    const step = this.group().step;
    this.cursors.set(step, this.at);
    for (const k of this.cursors.keys()) if (k < step - this.plan.commitLag) this.cursors.delete(k);
  }

  /** What a checkpoint must share with the run that resumes it. */
  private runIdentity(): RunIdentity {
    const { spec, options: o, optimizerSpec, data } = this.plan;
    this.trainSha256 ??= datasetSha256(data.train);
    return { model: spec, seed: o.seed, optimizer: optimizerSpec, batchSize: o.batchSize, trainSize: data.train.size, trainSha256: this.trainSha256 };
  }

  /** Commits the group's state now as `dir/step-N`; returns the committed directory. */
  async save(dir: string): Promise<string> {
    const group = this.group();
    return this.commit(dir, group.step, await group.state());
  }

  /** Writes the state of step `step` (now, or a recovery's commit) with the cursor of that step. */
  commit(dir: string, step: number, state: StageState): string {
    const { options: o, stepsPerEpoch: spe, stages, placementName } = this.plan;
    const at = step === this.group().step ? this.at : this.cursors.get(step) ?? { epoch: Math.floor(step / spe), batch: step % spe, lossSum: 0, samples: 0 };
    return writeCheckpoint(dir, {
      run: this.runIdentity(), step, epoch: at.epoch, batch: at.batch, batchesPerEpoch: spe, droppedPerEpoch: this.plan.data.train.size % o.batchSize,
      epochLossSum: at.lossSum, epochSamples: at.samples, lrSchedule: this.plan.lrSchedule,
      writtenBy: { placement: placementName, replicas: o.replicas, stages, microBatches: o.microBatches },
      state, earlyStop: at.earlyStop ?? null,
    }, { keep: o.keep }).path;
  }

  /** Restores the newest complete checkpoint in `dir` into the group, and the training position. */
  async restore(dir: string): Promise<ResumedFrom> {
    const group = this.group();
    const { path, content: cp, ignored } = readCheckpoint(dir, this.runIdentity());
    const slotNames = createOptimizer(this.plan.optimizerSpec).slotNames;
    const model = await group.state();
    checkStateFits(cp.state, model, slotNames, path);
    const best = cp.earlyStop?.best;
    if (best && best.heldAt === -1) checkStateFits(best.state, model, slotNames, `${path} (best-*.safetensors)`);
    await group.setState(cp.state);
    group.step = cp.step;
    this.at = { epoch: cp.epoch, batch: cp.batch, lossSum: cp.epochLossSum, samples: cp.epochSamples, ...(cp.earlyStop ? { earlyStop: cp.earlyStop } : {}) };
    this.resumedFrom = { path, step: cp.step, epoch: cp.epoch, batch: cp.batch, ignored };
    return this.resumedFrom;
  }
}
