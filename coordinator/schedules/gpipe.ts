import type { Action, Schedule } from '../../src/wire/action.js';
import { checkCounts } from './validate.js';

/**
 * GPipe: every stage runs all forwards 0..M-1, then all backwards 0..M-1 in ascending order
 * (not reversed: gradients accumulate in micro-batch order under every schedule).
 * Keeps up to M tapes per stage alive; bubble (K-1)/(M+K-1).
 * @example gpipe(2, 2) // [[0F0, 0F1, 0B0, 0B1], [1F0, 1F1, 1B0, 1B1]]
 */
export function gpipe(stages: number, microBatches: number): Schedule {
  checkCounts('gpipe', stages, microBatches);
  return Array.from({ length: stages }, (_, stage) => {
    const list: Action[] = [];
    for (let m = 0; m < microBatches; m++) list.push({ stage, kind: 'F', microBatch: m });
    for (let m = 0; m < microBatches; m++) list.push({ stage, kind: 'B', microBatch: m });
    return list;
  });
}
