/**
 * Pipeline schedules by name. A schedule is a pure function (stages, microBatches) → Action[][];
 * a new one is one file plus one line here, and the tests iterate this registry.
 */
import type { Schedule } from '../../src/wire/action.js';
import { gpipe } from './gpipe.js';
import { oneFOneB } from './one-f-one-b.js';
import { zbH1 } from './zb-h1.js';
import { interleaved1F1B } from './interleaved-1f1b.js';
import { ScheduleError, simulateSchedule } from './validate.js';

/**
 * Builds the per-stage action lists for `stages` stages and `microBatches` micro-batches. A
 * schedule that interleaves takes `virtualStages` V too and returns one list per device (K =
 * `stages` of them) holding the actions of its V stages; the others have no third parameter.
 */
export type ScheduleFn = (stages: number, microBatches: number, virtualStages?: number) => Schedule;

export const schedules: Record<string, ScheduleFn> = {
  gpipe,
  '1f1b': oneFOneB,
  'zb-h1': zbH1,
  'interleaved-1f1b': interleaved1F1B,
};

/** Whether the registered schedule `name` can put several virtual stages on a device (`--virtual-stages V`). */
export function interleaves(name: string): boolean {
  return name === 'interleaved-1f1b';
}

/**
 * The registered schedule called `name`.
 * @example getSchedule('1f1b')(4, 8)
 * @throws ScheduleError (code SCHEDULE_UNKNOWN_NAME) listing the registered names.
 */
export function getSchedule(name: string): ScheduleFn {
  const fn = Object.hasOwn(schedules, name) ? schedules[name] : undefined;
  if (fn === undefined) {
    const choices = Object.keys(schedules).join(', ');
    throw new ScheduleError(
      'SCHEDULE_UNKNOWN_NAME',
      `unknown schedule ${JSON.stringify(name)}; choose one of: ${choices}`,
      `pass one of ${choices}`,
    );
  }
  return fn;
}

/**
 * The bubble of the registered schedule `name` in theory: its idle share simulated with equal
 * F, B and W times (the whole backward, 2 units, where the schedule does not split it), which
 * is (K-1)/(M+K-1) for gpipe and 1f1b, (K-1)/(3M+K-1) for zb-h1 and (K-1)/(V·M+K-1) for
 * interleaved-1f1b with V virtual stages per device (K devices; each action of a chunk, a V-th
 * of the device's layers, takes one unit).
 * @example theoreticalBubble('zb-h1', 2, 8) // 1/25
 * @example theoreticalBubble('interleaved-1f1b', 2, 8, 2) // 1/17
 * @throws ScheduleError as the schedule does for (stages, microBatches), or for an unknown name.
 */
export function theoreticalBubble(name: string, stages: number, microBatches: number, virtualStages = 1): number {
  const fn = getSchedule(name);
  return simulateSchedule(virtualStages === 1 ? fn(stages, microBatches) : fn(stages, microBatches, virtualStages), { weightTicks: 1 }).idleFraction;
}

/** {@link theoreticalBubble} as a formula, for reports; a schedule without one is described instead. */
export function bubbleFormula(name: string): string {
  const known: Record<string, string> = { gpipe: '(K−1)/(M+K−1)', '1f1b': '(K−1)/(M+K−1)', 'zb-h1': '(K−1)/(3M+K−1)', 'interleaved-1f1b': '(K−1)/(V·M+K−1)' };
  return Object.hasOwn(known, name) ? known[name]! : 'simulated with equal F, B and W times';
}

export { gpipe } from './gpipe.js';
export { oneFOneB } from './one-f-one-b.js';
export { zbH1 } from './zb-h1.js';
export { interleaved1F1B, byStage } from './interleaved-1f1b.js';
export {
  ScheduleError,
  checkCounts,
  formatScheduleGrid,
  formatTimeline,
  simulateSchedule,
  splitsBackward,
  validateSchedule,
} from './validate.js';
export type {
  BlockedStage,
  GridMark,
  ScheduleErrorCode,
  SimulationOptions,
  SimulationResult,
} from './validate.js';
