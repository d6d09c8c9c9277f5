/**
 * Learning-rate schedules as pure functions of the optimizer step (0-based: the
 * step about to be taken) and the number of steps per epoch, so the coordinator can
 * compute the rate for any step, including after a resume, without schedule state.
 * Each one follows the PyTorch scheduler of the same name, evaluated in closed form.
 *
 * @example
 * const lr = createLrSchedule({ type: 'warmup', warmupSteps: 100, startFactor: 0.01,
 *   schedule: { type: 'cosine', lr: 0.1, minLr: 1e-4, totalSteps: 10_000 } });
 * lr(0, 125); // 0.001
 */
import { describeValue, lookup } from '../errors.js';
import { OptimizerError } from './optimizer.js';

export type LrScheduleSpec =
  /** lr at every step. */
  | { type: 'constant'; lr: number }
  /** StepLR: lr·gamma^⌊epoch / everyEpochs⌋. */
  | { type: 'step'; lr: number; everyEpochs: number; gamma: number }
  /** ExponentialLR: lr·gamma^epoch. */
  | { type: 'exponential'; lr: number; gamma: number }
  /** CosineAnnealingLR: minLr + (lr − minLr)(1 + cos(π·step/totalSteps))/2, then minLr after totalSteps. */
  | { type: 'cosine'; lr: number; minLr?: number; totalSteps: number }
  /**
   * LinearLR on top of another schedule: the wrapped rate times a factor rising linearly
   * from startFactor at step 0 to 1 at warmupSteps (default startFactor 1/3, as PyTorch).
   */
  | { type: 'warmup'; warmupSteps: number; startFactor?: number; schedule: LrScheduleSpec };

/** The rate for a 0-based step; epoch = ⌊step / stepsPerEpoch⌋. */
export type LrSchedule = (step: number, stepsPerEpoch: number) => number;

type Spec<T extends LrScheduleSpec['type']> = Extract<LrScheduleSpec, { type: T }>;

function num(spec: LrScheduleSpec, key: string, ok: (v: number) => boolean, what: string, fallback?: number): number {
  const v = (spec as unknown as Record<string, unknown>)[key] ?? fallback;
  if (typeof v !== 'number' || !ok(v)) throw new OptimizerError(`schedule ${spec.type}.${key} must be ${what}, got ${JSON.stringify((spec as unknown as Record<string, unknown>)[key])}`);
  return v;
}
const positive = (v: number): boolean => Number.isFinite(v) && v > 0;
const positiveInt = (v: number): boolean => Number.isInteger(v) && v > 0;

function known(spec: LrScheduleSpec, keys: readonly string[]): void {
  for (const k of Object.keys(spec)) {
    if (k !== 'type' && !keys.includes(k)) throw new OptimizerError(`schedule ${spec.type} has no option '${k}'; known: ${keys.join(', ')}`);
  }
}

function epochOf(step: number, stepsPerEpoch: number): number {
  return Math.floor(step / stepsPerEpoch);
}

/** Schedules by name: a new one is one entry here. */
export const lrSchedules: { [T in LrScheduleSpec['type']]: (spec: Spec<T>) => LrSchedule } = {
  constant(spec) {
    known(spec, ['lr']);
    const lr = num(spec, 'lr', positive, 'a positive number');
    return () => lr;
  },
  step(spec) {
    known(spec, ['lr', 'everyEpochs', 'gamma']);
    const lr = num(spec, 'lr', positive, 'a positive number');
    const every = num(spec, 'everyEpochs', positiveInt, 'a positive integer');
    const gamma = num(spec, 'gamma', positive, 'a positive number');
    return (step, spe) => lr * gamma ** Math.floor(epochOf(step, spe) / every);
  },
  exponential(spec) {
    known(spec, ['lr', 'gamma']);
    const lr = num(spec, 'lr', positive, 'a positive number');
    const gamma = num(spec, 'gamma', positive, 'a positive number');
    return (step, spe) => lr * gamma ** epochOf(step, spe);
  },
  cosine(spec) {
    known(spec, ['lr', 'minLr', 'totalSteps']);
    const lr = num(spec, 'lr', positive, 'a positive number');
    const minLr = num(spec, 'minLr', (v) => Number.isFinite(v) && v >= 0 && v <= lr, `in [0, lr = ${lr}]`, 0);
    const total = num(spec, 'totalSteps', positiveInt, 'a positive integer');
    // NOTE: PyTorch's CosineAnnealingLR climbs back up after T_max; a run that overshoots stays at minLr here.
    return (step) => minLr + (lr - minLr) * (1 + Math.cos(Math.PI * Math.min(step, total) / total)) / 2;
  },
  warmup(spec) {
    known(spec, ['warmupSteps', 'startFactor', 'schedule']);
    const warm = num(spec, 'warmupSteps', positiveInt, 'a positive integer');
    const start = num(spec, 'startFactor', (v) => v >= 0 && v <= 1, 'in [0, 1]', 1 / 3);
    if (typeof spec.schedule !== 'object' || spec.schedule === null) throw new OptimizerError(`schedule warmup.schedule must be a schedule spec, got ${JSON.stringify(spec.schedule)}`);
    const inner = createLrSchedule(spec.schedule);
    return (step, spe) => inner(step, spe) * (step < warm ? start + (1 - start) * step / warm : 1);
  },
};

/**
 * Builds a schedule from its spec, validating every option; the returned function
 * checks its arguments too (a non-integer step or stepsPerEpoch is a caller's bug).
 */
export function createLrSchedule(spec: LrScheduleSpec): LrSchedule {
  const type = (spec as { type?: unknown } | null)?.type;
  const make = lookup(lrSchedules as Record<string, (s: LrScheduleSpec) => LrSchedule>, type);
  if (make === undefined) {
    throw new OptimizerError(`unknown learning-rate schedule ${describeValue(type, 80)}; known schedules: ${Object.keys(lrSchedules).join(', ')}`);
  }
  const f = make(spec);
  return (step, stepsPerEpoch) => {
    if (!(Number.isInteger(step) && step >= 0)) throw new OptimizerError(`schedule ${type}: step must be a non-negative integer, got ${step}`);
    if (!(Number.isInteger(stepsPerEpoch) && stepsPerEpoch > 0)) throw new OptimizerError(`schedule ${type}: stepsPerEpoch must be a positive integer, got ${stepsPerEpoch}`);
    return f(step, stepsPerEpoch);
  };
}
