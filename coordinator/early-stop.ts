/**
 * `--early-stop PATIENCE`: after each epoch, the validation loss either improves on the best
 * so far (strictly lower: that epoch becomes the best, its state is kept) or does not; after
 * PATIENCE epochs in a row without improvement training stops and the best epoch's state is
 * put back into the actors.
 *
 * What a stop restores: the weights, the buffers (BatchNorm statistics) and the optimizer's
 * state (its slots, such as Adam's moments, and its step count t), all as they were at the end
 * of the best epoch. What goes on counting: the step number (the learning-rate schedule and
 * the dropout streams are functions of it), the epoch number and the data order. So the
 * stopped run's weights are bit for bit those of a run of bestEpoch epochs, and a later
 * `train({ epochs })` trains epoch stopped+1 onwards from the best weights with the optimizer
 * state that belongs to them. The patience counter starts again after a stop, the best so far
 * is kept: a continuation gets PATIENCE more epochs to beat it, or ends on it again.
 *
 * The state is an immutable value kept in the training cursor (checkpoint-keeper.ts), so a
 * checkpoint holds the one of its own step, and a resume stops where the uninterrupted run does.
 *
 * @example
 * let s: EarlyStopState = { wait: 0, best: null };
 * ({ state: s, stopped } = await afterEpoch(s, report, 3, actors));
 */
import { Tensor } from '../src/tensor/tensor.js';
import type { NamedTensors, StageState } from '../src/wire/index.js';
import type { EpochReport } from './summary.js';

/** The best epoch so far: its 1-based number, validation loss, report and state at its end. */
export interface BestEpoch {
  epoch: number;
  valLoss: number;
  /** Its report: the summary's figures once the run ends on its weights. */
  report: EpochReport;
  state: StageState;
  /** The step after which the actors hold exactly `state` (a checkpoint of that step need not store it twice); -1 for none. */
  heldAt: number;
}

export interface EarlyStopState {
  /** Epochs since the best one without improvement. */
  readonly wait: number;
  readonly best: BestEpoch | null;
}

export const noEarlyStop: EarlyStopState = { wait: 0, best: null };

/** What the early stop needs of the actors. */
export interface EarlyStopActors {
  /** Steps done. */
  readonly step: number;
  /** Every stage's state now, merged by name. */
  state(): Promise<StageState>;
  /** Puts a state back into every actor (and into whatever a recovery rebuilds them from). */
  restore(state: StageState): Promise<void>;
}

export interface StoppedEarly { epoch: number; bestEpoch: number; bestValLoss: number }

/**
 * Whether `valLoss` improves on the best: strictly lower. A NaN never improves, and anything
 * but NaN improves on a NaN best; the first epoch is the best so far whatever its loss.
 */
export function improves(valLoss: number, best: BestEpoch | null): boolean {
  if (best === null) return true;
  return valLoss < best.valLoss || (Number.isNaN(best.valLoss) && !Number.isNaN(valLoss));
}

/**
 * The early stop's state after epoch `report.epoch` (its `valLoss` set), and whether training
 * stops now: then the best epoch's state has been restored into the actors.
 */
export async function afterEpoch(s: EarlyStopState, report: EpochReport, patience: number, actors: EarlyStopActors): Promise<{ state: EarlyStopState; stopped: StoppedEarly | null }> {
  const valLoss = report.valLoss ?? NaN;
  if (improves(valLoss, s.best)) {
    return { state: { wait: 0, best: { epoch: report.epoch, valLoss, report, state: frozen(await actors.state()), heldAt: actors.step } }, stopped: null };
  }
  const best = s.best!;
  if (s.wait + 1 < patience) return { state: { wait: s.wait + 1, best }, stopped: null };
  await actors.restore(best.state);
  return {
    state: { wait: 0, best: { ...best, heldAt: actors.step } },
    stopped: { epoch: report.epoch, bestEpoch: best.epoch, bestValLoss: best.valLoss },
  };
}

/** A copy later steps cannot change. NOTE: in-process actors answer getState with views of their live tensors. */
export function frozen(st: StageState): StageState {
  const copy = (m: NamedTensors): NamedTensors => Object.fromEntries(Object.entries(m).map(([k, t]) => [k, new Tensor(t.data.slice(), t.shape)]));
  return {
    params: copy(st.params), buffers: copy(st.buffers), lastStep: st.lastStep,
    optimizer: st.optimizer ? { type: st.optimizer.type, t: st.optimizer.t, slots: Object.fromEntries(Object.entries(st.optimizer.slots).map(([k, s]) => [k, copy(s)])) } : null,
  };
}
