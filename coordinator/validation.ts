/**
 * `--validation-split F`: the last samples of the training set held out, as Keras'
 * `validation_split` does: the first ⌊n·(1−F)⌋ samples train, the rest validate. The cut is
 * made on the dataset as loaded (before any transform is fitted, before any shuffling), so it
 * is the same for every seed and epoch count, and no statistic of the held-out samples reaches
 * the model: the transform is fitted on the part that trains.
 *
 * @example
 * const { train, validation } = holdOut(data.train, 0.2, 64);   // 8000 samples → 6400 + 1600
 */
import { subset, type Dataset } from '../src/data/index.js';
import { OptionError } from './options.js';

/** How the option is named in messages: the API field and the flag, as the check runs for both. */
const NAME = 'options.validationSplit (--validation-split)';

/**
 * The training set without its last fraction `fraction`, and that fraction (null for 0).
 * @throws OptionError naming --validation-split when nothing is held out for a fraction > 0, or
 * when what is left trains less than one minibatch of `batchSize`
 */
export function holdOut<D extends Dataset>(train: D, fraction: number, batchSize: number): { train: D; validation: D | null } {
  if (fraction === 0) return { train, validation: null };
  const n = train.size;
  // Keras' own arithmetic, so that the same F holds out the same samples.
  const kept = Math.floor(n * (1 - fraction));
  const held = n - kept;
  if (held === 0) {
    throw new OptionError(`${NAME} ${fraction} holds out no sample of the ${n} training samples of ${JSON.stringify(train.name)}`,
      'use a larger fraction, or 0 for no validation set');
  }
  if (kept < batchSize && batchSize <= n) {
    throw new OptionError(`${NAME} ${fraction} leaves ${kept} of the ${n} training samples of ${JSON.stringify(train.name)}, less than one minibatch (batch size ${batchSize})`,
      `hold out less (at most ${Math.floor(((n - batchSize) / n) * 1000) / 1000}), or lower the batch size`);
  }
  const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);
  return { train: subset(train, range(0, kept)), validation: subset(train, range(kept, n), `${train.name}/validation`) };
}
