/**
 * Checks on a dataset's values that `validateDataset` (which checks only lengths, shape and
 * labels) leaves out because they cost a pass over every input.
 */
import { type Dataset, sampleSize } from './dataset.js';
import { DataError } from './errors.js';

/**
 * Throws `NOT_A_NUMBER` at the first NaN or ±Infinity in `ds.inputs`, naming the sample and
 * the feature (and `source`, e.g. the file it came from, when given).
 * Loaders call it so that a bad value stops the run at load time, not as a NaN loss later.
 * @example checkFinite(train, 'train-images-idx3-ubyte.gz');
 */
export function checkFinite(ds: Dataset, source?: string): void {
  const x = ds.inputs;
  for (let k = 0; k < x.length; k++) {
    // NOTE: x - x is 0 for every finite value and NaN for NaN and ±Infinity: one test for both.
    if (x[k]! - x[k]! !== 0) {
      const per = sampleSize(ds);
      const sample = Math.floor(k / per);
      const feature = k - sample * per;
      const where = source === undefined ? `dataset ${JSON.stringify(ds.name)}` : `${source} (dataset ${JSON.stringify(ds.name)})`;
      throw new DataError('NOT_A_NUMBER',
        `${where}: input of sample ${sample}, feature ${feature} (flat index ${k}) is ${x[k]}`,
        'clean or impute the source data; every input must be a finite number');
    }
  }
}
