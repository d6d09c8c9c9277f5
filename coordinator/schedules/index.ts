/**
 * Pipeline schedules by name. A schedule is a pure function (stages, microBatches) → Action[][];
 * a new one is one file plus one line here, and the tests iterate this registry.
 */
import type { Schedule } from '../../src/wire/action.js';
import { gpipe } from './gpipe.js';
import { oneFOneB } from './one-f-one-b.js';
import { ScheduleError } from './validate.js';

/** Builds the per-stage action lists for `stages` stages and `microBatches` micro-batches. */
export type ScheduleFn = (stages: number, microBatches: number) => Schedule;

export const schedules: Record<string, ScheduleFn> = {
  gpipe,
  '1f1b': oneFOneB,
};

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

export { gpipe } from './gpipe.js';
export { oneFOneB } from './one-f-one-b.js';
export {
  ScheduleError,
  checkCounts,
  formatScheduleGrid,
  formatTimeline,
  simulateSchedule,
  validateSchedule,
} from './validate.js';
export type {
  BlockedStage,
  GridMark,
  ScheduleErrorCode,
  SimulationOptions,
  SimulationResult,
} from './validate.js';
