/**
 * Cutting a model into K contiguous stages, balanced by parameter count: the cut that
 * minimizes the largest stage, ties broken toward even layer counts.
 */
import { ChainruleError } from '../src/errors.js';
export class PartitionError extends ChainruleError {
  constructor(message: string) {
    super('BAD_PARTITION', message);
  }
}

/** Returns the K+1 boundaries [0, b1, ..., L] of the stages. */
export function balancedPartition(paramCounts: number[], stages: number): number[] {
  const L = paramCounts.length;
  if (!Number.isInteger(stages) || stages < 1) throw new PartitionError(`stages must be a positive integer, got ${stages}`);
  if (stages > L) throw new PartitionError(`cannot cut a model of ${L} layers into ${stages} stages (at most ${L})`);
  const prefix = [0];
  for (const c of paramCounts) prefix.push(prefix[prefix.length - 1]! + c);
  // best[k][i]: the best (max, squares) for the first i layers in k stages.
  type Cost = [number, number];
  const better = (a: Cost, b: Cost) => a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]);
  const best: Cost[][] = Array.from({ length: stages + 1 }, () => new Array<Cost>(L + 1).fill([Infinity, Infinity]));
  const cut: number[][] = Array.from({ length: stages + 1 }, () => new Array<number>(L + 1).fill(-1));
  best[0]![0] = [0, 0];
  for (let k = 1; k <= stages; k++) {
    for (let i = k; i <= L; i++) {
      for (let j = k - 1; j < i; j++) {
        const prev = best[k - 1]![j]!;
        if (prev[0] === Infinity) continue;
        const size = prefix[i]! - prefix[j]!;
        const c: Cost = [Math.max(prev[0], size), prev[1] + (i - j) * (i - j)];
        if (better(c, best[k]![i]!)) { best[k]![i] = c; cut[k]![i] = j; }
      }
    }
  }
  const bounds = [L];
  for (let k = stages, i = L; k > 0; k--) { i = cut[k]![i]!; bounds.unshift(i); }
  return bounds;
}

/** Checks an explicit partition given as boundaries [0, b1, ..., L] or as stage sizes. */
export function explicitPartition(sizes: number[], layers: number): number[] {
  if (!Array.isArray(sizes) || sizes.length === 0 || !sizes.every((s) => Number.isInteger(s) && s > 0)) {
    throw new PartitionError(`a partition must list each stage's number of layers as positive integers, got ${JSON.stringify(sizes)}`);
  }
  const total = sizes.reduce((a, b) => a + b, 0);
  if (total !== layers) throw new PartitionError(`the partition ${sizes.join('+')} covers ${total} layers, the model has ${layers}`);
  const bounds = [0];
  for (const s of sizes) bounds.push(bounds[bounds.length - 1]! + s);
  return bounds;
}
