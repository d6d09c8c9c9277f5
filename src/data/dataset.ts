/**
 * A dataset is plain typed arrays: every sample's inputs, row-major, and what the loss
 * compares the model's output with: an integer class label (classification) or float
 * targets of a fixed shape (regression, multi-label). Nothing here copies per element
 * through JS arrays; batches are built with `set`.
 */
import { Tensor } from '../tensor/tensor.js';
import { DataError, describe } from './errors.js';

export { DataError } from './errors.js';
export type { DataErrorCode } from './errors.js';

interface DatasetBase {
  /** For messages and reports, e.g. `mnist/train` or `iris.csv/test`. */
  name: string;
  /** Shape of one sample, e.g. `[784]` or `[1, 28, 28]`. */
  inputShape: number[];
  size: number;
  /** `size × prod(inputShape)` values, row-major, sample after sample. */
  inputs: Float32Array;
}

/** Classification: one integer class per sample. */
export interface LabeledDataset extends DatasetBase {
  numClasses: number;
  /** One class index in `[0, numClasses)` per sample. */
  labels: Int32Array;
  targets?: undefined;
  targetShape?: undefined;
}

/**
 * Float targets per sample: regression (`mse`), or multi-label (`bce`, values in [0, 1]).
 * @example makeDataset({ name: 'xy', inputShape: [2], targetShape: [1], inputs, targets })
 */
export interface TargetDataset extends DatasetBase {
  /** Shape of one sample's targets, e.g. `[1]` or `[3]`. */
  targetShape: number[];
  /** `size × prod(targetShape)` finite values, row-major, sample after sample. */
  targets: Float32Array;
  labels?: undefined;
  numClasses?: undefined;
}

/** Tell them apart with `hasTargets(ds)` (or `ds.targets !== undefined`). */
export type Dataset = LabeledDataset | TargetDataset;

/** A batch's `y`: class labels `[n]`, or float targets as a tensor `[n, ...targetShape]`. */
export type Targets = Int32Array | Tensor;

/** The `y` of a dataset's batches. */
export type TargetsOf<D extends Dataset> = D extends TargetDataset ? Tensor : D extends LabeledDataset ? Int32Array : Targets;

/** A minibatch: inputs `[n, ...inputShape]` and their labels or targets. */
export interface Batch<Y extends Targets = Targets> {
  x: Tensor;
  y: Y;
}

/** Whether the dataset holds float targets (else integer labels). */
export function hasTargets(ds: Dataset): ds is TargetDataset {
  return ds.targets !== undefined;
}

function prod(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Elements per sample: the product of `inputShape`. */
export function sampleSize(ds: Pick<DatasetBase, 'inputShape'>): number {
  return prod(ds.inputShape);
}

/** Target values per sample: the product of `targetShape` (1 for a labeled dataset: its label). */
export function targetSize(ds: Dataset): number {
  return hasTargets(ds) ? prod(ds.targetShape) : 1;
}

/** The number of samples in `y`: labels or rows of a targets tensor. */
export function targetRows(y: Targets): number {
  return y instanceof Tensor ? (y.shape[0] ?? 0) : y.length;
}

type Fields<D> = Omit<D, 'size'> & { size?: number };

/**
 * Builds a dataset and checks that its fields agree (lengths, shapes, label range, finite targets).
 * @example makeDataset({ name: 'xor', inputShape: [2], numClasses: 2, inputs, labels })
 * @example makeDataset({ name: 'line', inputShape: [1], targetShape: [1], inputs, targets })
 */
export function makeDataset(fields: Fields<LabeledDataset>): LabeledDataset;
export function makeDataset(fields: Fields<TargetDataset>): TargetDataset;
export function makeDataset(fields: Fields<Dataset>): Dataset;
export function makeDataset(fields: Fields<Dataset>): Dataset {
  const inputShape = Array.isArray(fields.inputShape) ? [...fields.inputShape] : fields.inputShape;
  let ds: Dataset;
  if (fields.targets !== undefined) {
    const f = fields as Fields<TargetDataset>;
    const targetShape = Array.isArray(f.targetShape) ? [...f.targetShape] : f.targetShape;
    const per = Array.isArray(targetShape) ? prod(targetShape) : 1;
    ds = { ...f, inputShape, targetShape, size: f.size ?? (per > 0 ? Math.floor(f.targets.length / per) : 0) };
  } else {
    const f = fields as Fields<LabeledDataset>;
    ds = { ...f, inputShape, size: f.size ?? f.labels?.length ?? 0 };
  }
  validateDataset(ds);
  return ds;
}

/** Throws `BAD_DATASET` naming the dataset and the field that disagrees (`NOT_A_NUMBER` for a non-finite target). */
export function validateDataset(ds: Dataset): void {
  const where = `dataset ${JSON.stringify(ds.name)}`;
  const shapeOk = (s: unknown): s is number[] => Array.isArray(s) && s.length > 0 && s.every((d) => Number.isSafeInteger(d) && d > 0);
  if (!shapeOk(ds.inputShape)) {
    throw new DataError('BAD_DATASET', `${where}: inputShape ${describe(ds.inputShape)} must be a non-empty array of positive integers`);
  }
  const withLabels = ds.labels !== undefined;
  if (withLabels === hasTargets(ds)) {
    throw new DataError('BAD_DATASET', `${where}: give either labels (with numClasses) or targets (with targetShape), ${withLabels ? 'not both' : 'got neither'}`);
  }
  if (!Number.isSafeInteger(ds.size) || ds.size < 0) {
    throw new DataError('BAD_DATASET', `${where}: size must be a non-negative integer, got ${describe(ds.size)}`);
  }
  const per = sampleSize(ds);
  if (!(ds.inputs instanceof Float32Array) || ds.inputs.length !== ds.size * per) {
    throw new DataError('BAD_DATASET',
      `${where}: inputs hold ${ds.inputs?.length} values, expected a Float32Array of size × prod(inputShape) = ${ds.size} × ${per} = ${ds.size * per}`);
  }
  if (hasTargets(ds)) {
    if (!shapeOk(ds.targetShape)) {
      throw new DataError('BAD_DATASET', `${where}: targetShape ${describe(ds.targetShape)} must be a non-empty array of positive integers`);
    }
    const tper = prod(ds.targetShape);
    if (!(ds.targets instanceof Float32Array) || ds.targets.length !== ds.size * tper) {
      throw new DataError('BAD_DATASET',
        `${where}: targets hold ${ds.targets.length} values, expected a Float32Array of size × prod(targetShape) = ${ds.size} × ${tper} = ${ds.size * tper}`);
    }
    const t = ds.targets;
    for (let k = 0; k < t.length; k++) {
      // NOTE: t - t is 0 for every finite value and NaN for NaN and ±Infinity.
      if (t[k]! - t[k]! !== 0) {
        throw new DataError('NOT_A_NUMBER', `${where}: target ${k % tper} of sample ${Math.floor(k / tper)} is ${t[k]}`,
          'every target must be a finite number');
      }
    }
    return;
  }
  const lds = ds as LabeledDataset;
  if (!Number.isSafeInteger(lds.numClasses) || lds.numClasses <= 0) {
    throw new DataError('BAD_DATASET', `${where}: numClasses must be a positive integer, got ${describe(lds.numClasses)}`);
  }
  if (!(lds.labels instanceof Int32Array) || lds.labels.length !== ds.size) {
    throw new DataError('BAD_DATASET', `${where}: ${lds.labels.length} labels for size ${ds.size}`);
  }
  for (let i = 0; i < ds.size; i++) {
    const l = lds.labels[i]!;
    if (l < 0 || l >= lds.numClasses) {
      throw new DataError('BAD_DATASET', `${where}: label ${l} of sample ${i} is outside [0, ${lds.numClasses})`);
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

/** Copies the chosen rows (`per` values each) of `from`, in order. */
function gatherRows<A extends Float32Array | Int32Array>(from: A, per: number, indices: ArrayLike<number>, make: (n: number) => A): A {
  const out = make(indices.length * per);
  if (per === 1) {
    for (let i = 0; i < indices.length; i++) out[i] = from[indices[i]!]!;
  } else {
    for (let i = 0; i < indices.length; i++) {
      const k = indices[i]!;
      out.set(from.subarray(k * per, (k + 1) * per), i * per);
    }
  }
  return out;
}

/**
 * A new dataset holding copies of the chosen samples (inputs and labels or targets), in the given order.
 * @example const firstHundred = subset(train, Array.from({ length: 100 }, (_, i) => i));
 */
export function subset<D extends Dataset>(ds: D, indices: ArrayLike<number>, name = ds.name): D {
  checkIndices(ds, indices, 'subset');
  const inputs = gatherRows(ds.inputs, sampleSize(ds), indices, (n) => new Float32Array(n));
  const base = { name, inputShape: [...ds.inputShape], size: indices.length, inputs };
  if (hasTargets(ds)) {
    const targets = gatherRows(ds.targets, targetSize(ds), indices, (n) => new Float32Array(n));
    return { ...base, targetShape: [...ds.targetShape], targets } as TargetDataset as D;
  }
  const lds = ds as LabeledDataset;
  return { ...base, numClasses: lds.numClasses, labels: gatherRows(lds.labels, 1, indices, (n) => new Int32Array(n)) } as LabeledDataset as D;
}

/**
 * The chosen samples as a batch: `x` of shape `[n, ...inputShape]` (a fresh buffer the
 * caller owns and may transfer) and `y` their labels, or their targets `[n, ...targetShape]`.
 * @example const { x, y } = batchOf(train, [0, 1, 2]); // x.shape = [3, 784]
 */
export function batchOf<D extends Dataset>(ds: D, indices: ArrayLike<number>): Batch<TargetsOf<D>> {
  checkIndices(ds, indices, 'batchOf');
  const n = indices.length;
  const x = new Tensor(gatherRows(ds.inputs, sampleSize(ds), indices, (k) => new Float32Array(k)), [n, ...ds.inputShape]);
  const y: Targets = hasTargets(ds)
    ? new Tensor(gatherRows(ds.targets, targetSize(ds), indices, (k) => new Float32Array(k)), [n, ...ds.targetShape])
    : gatherRows((ds as LabeledDataset).labels, 1, indices, (k) => new Int32Array(k));
  return { x, y: y as TargetsOf<D> };
}
