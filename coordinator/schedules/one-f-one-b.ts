import type { Action, Schedule } from '../../src/wire/action.js';
import { checkCounts, ScheduleError } from './validate.js';

/**
 * 1F1B (PipeDream-Flush): stage s of K runs min(K-1-s, M) warm-up forwards, then alternates one
 * forward and one backward, then the cool-down backwards; backwards in ascending micro-batch
 * order. Same bubble as GPipe, (K-1)/(M+K-1), but at most K-s tapes alive on stage s.
 * Needs M >= K.
 * @example oneFOneB(2, 2) // [[0F0, 0F1, 0B0, 0B1], [1F0, 1B0, 1F1, 1B1]]
 */
export function oneFOneB(stages: number, microBatches: number): Schedule {
  checkCounts('1f1b', stages, microBatches);
  if (microBatches < stages) {
    throw new ScheduleError(
      'SCHEDULE_TOO_FEW_MICROBATCHES',
      `1f1b needs at least as many micro-batches as stages (M >= K): got ${microBatches} micro-batch(es) for ${stages} stage(s)`,
      `use ${stages} or more micro-batches, fewer stages, or the gpipe schedule`,
    );
  }
  return Array.from({ length: stages }, (_, stage) => {
    const warmUp = Math.min(stages - 1 - stage, microBatches);
    const list: Action[] = [];
    let f = 0;
    let b = 0;
    while (f < warmUp) list.push({ stage, kind: 'F', microBatch: f++ });
    while (f < microBatches) {
      list.push({ stage, kind: 'F', microBatch: f++ });
      list.push({ stage, kind: 'B', microBatch: b++ });
    }
    while (b < microBatches) list.push({ stage, kind: 'B', microBatch: b++ });
    return list;
  });
}
