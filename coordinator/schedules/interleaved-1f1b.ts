import type { Action, Schedule } from '../../src/wire/action.js';
import { checkCounts, ScheduleError } from './validate.js';

/**
 * Interleaved 1F1B (Narayanan et al. 2021, Megatron-LM's virtual pipeline): the model is cut
 * into K·V chunks ("virtual stages"); device d of K holds the V non-adjacent chunks d, d+K,
 * d+2K, …, so every micro-batch goes round the ring of devices V times. The lists are per
 * DEVICE (index = device), and each action names its chunk: `{ stage: v, ... }` with
 * v mod K = d.
 *
 * Order on device d, as Megatron's and PyTorch's: forwards go in rounds of K micro-batches
 * per chunk (micro-batches 0..K-1 through the device's first chunk, then the same K through
 * its second chunk, …, then micro-batches K..2K-1 through the first chunk again), backwards
 * in the same rounds but from the device's last chunk to its first. Device d warms up with
 * (V-1)·K + 2·(K-1-d) forwards (at most V·M), then alternates one forward and one backward,
 * then drains the backwards. Each chunk runs its backwards in ascending micro-batch order,
 * so its gradients add up in the order they do in a plain K·V-stage run.
 *
 * With unit-time forwards and backwards per chunk the bubble is (K-1)/(V·M+K-1), against
 * 1F1B's (K-1)/(M+K-1) for chunks V times larger; the price is V times more messages.
 * With V = 1 it is exactly {@link oneFOneB}. Needs M >= K, and for V > 1 M a multiple of K
 * (the rounds of K micro-batches, Megatron's rule).
 *
 * @example interleaved1F1B(2, 2, 2)
 * // [[0F0, 0F1, 2F0, 2F1, 2B0, 2B1, 0B0, 0B1],
 * //  [1F0, 1F1, 3F0, 3B0, 3F1, 3B1, 1B0, 1B1]]
 */
export function interleaved1F1B(devices: number, microBatches: number, virtualStages = 1): Schedule {
  checkCounts('interleaved-1f1b', devices, microBatches);
  const K = devices;
  const M = microBatches;
  const V = virtualStages;
  if (!Number.isSafeInteger(V) || V < 1) {
    throw new ScheduleError('SCHEDULE_BAD_ARGUMENT', `interleaved-1f1b: virtualStages must be a positive integer, got ${String(V)}`, 'pass virtualStages >= 1 (model chunks per device)');
  }
  if (M < K) {
    throw new ScheduleError(
      'SCHEDULE_TOO_FEW_MICROBATCHES',
      `interleaved-1f1b needs at least as many micro-batches as devices (M >= K): got ${M} micro-batch(es) for ${K} device(s)`,
      `use ${K} or more micro-batches, fewer stages, or the gpipe schedule`,
    );
  }
  if (V > 1 && M % K !== 0) {
    throw new ScheduleError(
      'SCHEDULE_MICROBATCH_MULTIPLE',
      `interleaved-1f1b with ${V} virtual stages needs the micro-batches to be a multiple of the stages (devices): got ${M} micro-batch(es) for ${K} stage(s)`,
      `use ${Math.ceil(M / K) * K} micro-batches (a multiple of ${K}), or ${K} stages dividing ${M}`,
    );
  }
  const total = V * M;
  // The k-th forward (backward) of a device: its chunk and micro-batch (Megatron's get_model_chunk_id).
  const at = (d: number, k: number, forward: boolean): Action => {
    const inRound = k % (K * V);
    const local = Math.floor(inRound / K);
    const chunk = forward ? local : V - 1 - local;
    return { stage: chunk * K + d, kind: forward ? 'F' : 'B', microBatch: Math.floor(k / (K * V)) * K + (k % K) };
  };
  return Array.from({ length: K }, (_, d) => {
    const warmUp = Math.min((V - 1) * K + 2 * (K - 1 - d), total);
    const list: Action[] = [];
    let f = 0;
    let b = 0;
    // V = 1: 1F1B's warm-up is K-1-d, not 2(K-1-d); Megatron's formula assumes V > 1.
    const first = V === 1 ? Math.min(K - 1 - d, total) : warmUp;
    while (f < first) list.push(at(d, f++, true));
    while (f < total) {
      list.push(at(d, f++, true));
      list.push(at(d, b++, false));
    }
    while (b < total) list.push(at(d, b++, false));
    return list;
  });
}

/**
 * The lists of chunk (virtual stage) v, in its device's order, from a per-device schedule:
 * what the actor of chunk v runs. For a plain schedule (V = 1) the lists themselves.
 * @example byStage(interleaved1F1B(2, 2, 2), 2)[3] // [3F0, 3B0, 3F1, 3B1]
 */
export function byStage(schedule: Schedule, virtualStages: number): Schedule {
  if (virtualStages === 1) return schedule;
  const K = schedule.length;
  return Array.from({ length: K * virtualStages }, (_, v) => schedule[v % K]!.filter((a) => a.stage === v));
}
