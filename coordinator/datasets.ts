/** Resolving `--dataset` names into train and test splits. */
import { loadCsv, loadIdxDir, loadMnist, DataError, type Dataset } from '../src/data/index.js';

export interface DataSplit { train: Dataset; test: Dataset }

export interface DatasetOptions { labelColumn?: number | string; seed?: number }

/** `mnist` (the built-in digits), `csv:PATH` or `idx:DIR` (MNIST-format files, gzipped or not). */
export function resolveDataset(name: string, opts: DatasetOptions = {}): DataSplit {
  if (name === 'mnist') return loadMnist();
  if (name.startsWith('csv:')) return loadCsv(name.slice(4), { labelColumn: opts.labelColumn, seed: opts.seed ?? 0 });
  if (name.startsWith('idx:')) return loadIdxDir(name.slice(4));
  throw new DataError('BAD_OPTION', `unknown dataset '${name}'; use mnist, csv:PATH or idx:DIR`);
}
