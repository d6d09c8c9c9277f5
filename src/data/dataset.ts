/**
 * A dataset is plain typed arrays: every sample's inputs, row-major, and an integer label.
 * Nothing here copies per element through JS arrays; batches are built with `set`.
 */
import { Tensor } from '../tensor/tensor.js';
import { DataError, describe } from './errors.js';

export { DataError } from './errors.js';
export type { DataErrorCode } from './errors.js';

export interface Dataset {
  /** For messages and reports, e.g. `mnist/train` or `iris.csv/test`. */
  name: string;
  /** Shape of one sample, e.g. `[784]` or `[1, 28, 28]`. */
  inputShape: number[];
  numClasses: number;
  size: number;
  /** `size × prod(inputShape)` values, row-major, sample after sample. */
  inputs: Float32Array;
  /** One class index in `[0, numClasses)` per sample. */
  labels: Int32Array;
}

/** A minibatch: inputs `[n, ...inputShape]` and their labels. */
export interface Batch {
  x: Tensor;
  y: Int32Array;
}

/** Elements per sample: the product of `inputShape`. */
export function sampleSize(ds: Pick<Dataset, 'inputShape'>): number {
  let n = 1;
  for (const d of ds.inputShape) n *= d;
  return n;
}

/**
 * Builds a dataset and checks that its fields agree (lengths, shape, label range).
 * @example makeDataset({ name: 'xor', inputShape: [2], numClasses: 2, inputs, labels })
 */
export function makeDataset(fields: Omit<Dataset, 'size'> & { size?: number }): Dataset {
  const ds: Dataset = { ...fields, inputShape: [...fields.inputShape], size: fields.size ?? fields.labels.length };
  validateDataset(ds);
  return ds;
}

/** Throws `BAD_DATASET` naming the dataset and the field that disagrees. */
export function validateDataset(ds: Dataset): void {
  const where = `dataset ${JSON.stringify(ds.name)}`;
  for (const d of ds.inputShape) {
    if (!Number.isSafeInteger(d) || d <= 0) {
      throw new DataError('BAD_DATASET', `${where}: inputShape [${ds.inputShape.join(', ')}] must hold positive integers`);
    }
  }
  if (!Number.isSafeInteger(ds.size) || ds.size < 0) {
    throw new DataError('BAD_DATASET', `${where}: size must be a non-negative integer, got ${describe(ds.size)}`);
  }
  if (!Number.isSafeInteger(ds.numClasses) || ds.numClasses <= 0) {
    throw new DataError('BAD_DATASET', `${where}: numClasses must be a positive integer, got ${describe(ds.numClasses)}`);
  }
  if (ds.labels.length !== ds.size) {
    throw new DataError('BAD_DATASET', `${where}: ${ds.labels.length} labels for size ${ds.size}`);
  }
  const per = sampleSize(ds);
  if (ds.inputs.length !== ds.size * per) {
    throw new DataError('BAD_DATASET',
      `${where}: inputs hold ${ds.inputs.length} values, expected size × prod(inputShape) = ${ds.size} × ${per} = ${ds.size * per}`);
  }
  for (let i = 0; i < ds.size; i++) {
    const l = ds.labels[i]!;
    if (l < 0 || l >= ds.numClasses) {
      throw new DataError('BAD_DATASET', `${where}: label ${l} of sample ${i} is outside [0, ${ds.numClasses})`);
    }
  }
}

function checkIndices(ds: Dataset, indices: ArrayLike<number>, fn: string): void {
  for (let i = 0; i < indices.length; i++) {
    const k = indices[i]!;
    if (!Number.isInteger(k) || k < 0 || k >= ds.size) {
      throw new DataError('BAD_INDEX', `${fn}: index ${describe(k)} at position ${i} is outside dataset ${JSON.stringify(ds.name)} of size ${ds.size}`);
    }
  }
}

function gather(ds: Dataset, indices: ArrayLike<number>): { inputs: Float32Array; labels: Int32Array } {
  const per = sampleSize(ds);
  const n = indices.length;
  const inputs = new Float32Array(n * per);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const k = indices[i]!;
    inputs.set(ds.inputs.subarray(k * per, (k + 1) * per), i * per);
    labels[i] = ds.labels[k]!;
  }
  return { inputs, labels };
}

/**
 * A new dataset holding copies of the chosen samples, in the given order.
 * @example const firstHundred = subset(train, Array.from({ length: 100 }, (_, i) => i));
 */
export function subset(ds: Dataset, indices: ArrayLike<number>, name = ds.name): Dataset {
  checkIndices(ds, indices, 'subset');
  const { inputs, labels } = gather(ds, indices);
  return { name, inputShape: [...ds.inputShape], numClasses: ds.numClasses, size: labels.length, inputs, labels };
}

/**
 * The chosen samples as a batch: `x` of shape `[n, ...inputShape]` (a fresh buffer the
 * caller owns and may transfer) and `y` their labels.
 * @example const { x, y } = batchOf(train, [0, 1, 2]); // x.shape = [3, 784]
 */
export function batchOf(ds: Dataset, indices: ArrayLike<number>): Batch {
  checkIndices(ds, indices, 'batchOf');
  const { inputs, labels } = gather(ds, indices);
  return { x: new Tensor(inputs, [labels.length, ...ds.inputShape]), y: labels };
}
