/**
 * Minibatches for training (seeded shuffle per epoch, partial last minibatch dropped)
 * and for evaluation (every sample once, in order).
 */
import { Rng } from '../tensor/rng.js';
import { type Batch, type Dataset, type Targets, type TargetsOf, batchOf } from './dataset.js';
import { DataError, checkPositiveInt, describe } from './errors.js';

export interface BatcherOptions {
  batchSize: number;
  seed: number;
  /** Shuffle each epoch (default true); false keeps dataset order. */
  shuffle?: boolean;
}

export interface IndexedBatch<Y extends Targets = Targets> extends Batch<Y> {
  /** Dataset indices of the samples, in batch order. */
  indices: Int32Array;
}

/**
 * Keys the batcher's stream apart from other users of (seed, epoch), such as dropout.
 * Epoch e's order is `Rng.derive(seed, BATCHER_STREAM, e)`'s shuffle of 0..size-1.
 */
export const BATCHER_STREAM = 0x62617463; // 'batc'

/**
 * Training minibatches of exactly `batchSize` samples (`y`: labels, or the targets tensor).
 * NOTE: the partial last minibatch is dropped, never padded or reused; each epoch drops
 * `droppedPerEpoch` samples (different ones each epoch when shuffling).
 * @example
 * const b = new Batcher(train, { batchSize: 64, seed: 1 });
 * for (const { x, y } of b.epoch(0)) step(x, y);   // b.batchesPerEpoch steps
 */
export class Batcher<D extends Dataset = Dataset> {
  readonly dataset: D;
  readonly batchSize: number;
  readonly seed: number;
  readonly shuffle: boolean;

  constructor(ds: D, options: BatcherOptions) {
    if (options === null || typeof options !== 'object') {
      throw new DataError('BAD_OPTION', `Batcher: options must be an object with batchSize and seed, got ${describe(options)}`);
    }
    const { batchSize, seed, shuffle = true } = options;
    checkPositiveInt(batchSize, 'Batcher: options.batchSize');
    if (batchSize > ds.size) {
      throw new DataError('BAD_OPTION',
        `Batcher: options.batchSize ${batchSize} is larger than dataset ${JSON.stringify(ds.name)} of size ${ds.size}`,
        'use a batchSize of at most the dataset size');
    }
    if (typeof seed !== 'number' || !Number.isFinite(seed)) {
      throw new DataError('BAD_OPTION', `Batcher: options.seed must be a finite number, got ${describe(seed)}`);
    }
    if (typeof shuffle !== 'boolean') {
      throw new DataError('BAD_OPTION', `Batcher: options.shuffle must be a boolean, got ${describe(shuffle)}`);
    }
    this.dataset = ds;
    this.batchSize = batchSize;
    this.seed = seed;
    this.shuffle = shuffle;
  }

  get batchesPerEpoch(): number { return Math.floor(this.dataset.size / this.batchSize); }

  /** Samples left out of each epoch by dropping the partial last minibatch. */
  get droppedPerEpoch(): number { return this.dataset.size % this.batchSize; }

  /** The sample order of epoch `e` (all samples, including the ones dropped at the end). */
  order(e: number): Int32Array {
    if (!Number.isSafeInteger(e) || e < 0) {
      throw new DataError('BAD_OPTION', `Batcher: epoch must be a non-negative integer, got ${describe(e)}`);
    }
    const n = this.dataset.size;
    const order = new Int32Array(n);
    for (let i = 0; i < n; i++) order[i] = i;
    if (this.shuffle) Rng.derive(this.seed, BATCHER_STREAM, e).shuffle(order);
    return order;
  }

  /**
   * Epoch `e`'s minibatches from minibatch `from` on (a resume mid-epoch); reproducible on
   * its own from (seed, e), so skipping the first `from` costs nothing.
   */
  *epoch(e: number, from = 0): Generator<IndexedBatch<TargetsOf<D>>, void, undefined> {
    if (!Number.isSafeInteger(from) || from < 0 || from > this.batchesPerEpoch) {
      throw new DataError('BAD_OPTION', `Batcher: from must be an integer in [0, ${this.batchesPerEpoch}], got ${describe(from)}`);
    }
    const order = this.order(e);
    const bs = this.batchSize;
    for (let b = from; b < this.batchesPerEpoch; b++) {
      const indices = order.slice(b * bs, (b + 1) * bs);
      yield { ...batchOf(this.dataset, indices), indices };
    }
  }
}

/**
 * Every sample once, in dataset order, `batchSize` at a time; the last batch may be short.
 * @example for (const { x, y } of evalBatches(test, 500)) correct += countCorrect(model(x), y);
 */
export function* evalBatches<D extends Dataset>(ds: D, batchSize: number): Generator<IndexedBatch<TargetsOf<D>>, void, undefined> {
  checkPositiveInt(batchSize, 'evalBatches: batchSize');
  for (let start = 0; start < ds.size; start += batchSize) {
    const end = Math.min(start + batchSize, ds.size);
    const indices = new Int32Array(end - start);
    for (let i = 0; i < indices.length; i++) indices[i] = start + i;
    yield { ...batchOf(ds, indices), indices };
  }
}
