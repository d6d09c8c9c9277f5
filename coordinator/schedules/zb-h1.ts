import type { Action, Schedule } from '../../src/wire/action.js';
import { checkCounts, ScheduleError } from './validate.js';

/**
 * ZB-H1 (Qi et al. 2024, "Zero Bubble Pipeline Parallelism", the schedule with 1F1B's memory):
 * the backward is split into B, the input gradient (what the previous stage waits for), and W,
 * the weight gradient, which no other stage waits for. The F and B actions are 1F1B's, in
 * 1F1B's order (so at most K-s tapes alive on stage s); stage s holds back the W of its first
 * s backwards, then runs each W right after a B, oldest first, and the W still held back after
 * its last B fill the cool-down, where 1F1B idles. With equal F, B and W times the bubble
 * shrinks from 1F1B's (K-1)/(M+K-1) to (K-1)/(3M+K-1): a third of the idle time over the
 * same work. At most s+1 micro-batches wait for their W on stage s (their inputs and output
 * gradients are kept for it), at most K have a forward but no W yet: 1F1B's bound on stage 0.
 * Needs M >= K, as 1F1B.
 * @example zbH1(2, 2) // [[0F0, 0F1, 0B0, 0W0, 0B1, 0W1], [1F0, 1B0, 1F1, 1B1, 1W0, 1W1]]
 */
export function zbH1(stages: number, microBatches: number): Schedule {
  checkCounts('zb-h1', stages, microBatches);
  if (microBatches < stages) {
    throw new ScheduleError(
      'SCHEDULE_TOO_FEW_MICROBATCHES',
      `zb-h1 needs at least as many micro-batches as stages (M >= K): got ${microBatches} micro-batch(es) for ${stages} stage(s)`,
      `use ${stages} or more micro-batches, fewer stages, or the gpipe schedule`,
    );
  }
  return Array.from({ length: stages }, (_, stage) => {
    const list: Action[] = [];
    let f = 0;
    let b = 0;
    let w = 0;
    const backward = () => {
      list.push({ stage, kind: 'B', microBatch: b++ });
      // Stage s runs its W s backwards late: W right after each B would put a W before every
      // cool-down B of the later stages, which the earlier ones wait for (K=4, M=8 with unit
      // times: 30 ticks instead of 27, the bubble of 1F1B's cool-down back on stage 0).
      if (b > stage) list.push({ stage, kind: 'W', microBatch: w++ });
    };
    while (f < stages - 1 - stage) list.push({ stage, kind: 'F', microBatch: f++ });
    while (f < microBatches) {
      list.push({ stage, kind: 'F', microBatch: f++ });
      backward();
    }
    while (b < microBatches) backward();
    while (w < microBatches) list.push({ stage, kind: 'W', microBatch: w++ });
    return list;
  });
}
