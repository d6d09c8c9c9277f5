/** What a run reads: `--dataset` names into train and test splits, `--model` names or files into a spec. */
import { readFileSync } from 'node:fs';
import { loadCsv, loadIdxDir, loadMnist, hasTargets, DataError, type Dataset } from '../src/data/index.js';
import { builtinModel, builtinModels, validateModelSpec, SpecError, type ModelSpec } from '../src/nn/index.js';
import { lookup } from '../src/errors.js';

export interface DataSplit { train: Dataset; test: Dataset }

export interface DatasetOptions {
  labelColumn?: number | string;
  /** CSV columns of float targets (regression, multi-label) instead of a label column. */
  targetColumns?: readonly (number | string)[];
  seed?: number;
}

/** `mnist` (the built-in digits), `csv:PATH` or `idx:DIR` (MNIST-format files, gzipped or not). */
export function resolveDataset(name: string, opts: DatasetOptions = {}): DataSplit {
  if (opts.targetColumns !== undefined && !name.startsWith('csv:')) {
    throw new DataError('BAD_OPTION', `target columns are only used with a CSV dataset (csv:PATH), not '${name}'`);
  }
  if (name === 'mnist') return loadMnist();
  if (name.startsWith('csv:')) return loadCsv(name.slice(4), { labelColumn: opts.labelColumn, targetColumns: opts.targetColumns, seed: opts.seed ?? 0 });
  if (name.startsWith('idx:')) return loadIdxDir(name.slice(4));
  throw new DataError('BAD_OPTION', `unknown dataset '${name}'; use mnist, csv:PATH or idx:DIR`);
}

/** A built-in model's name (shaped for the data), a path to a JSON spec, or a spec object: validated. */
export function resolveModel(model: string | ModelSpec, data: DataSplit): ModelSpec {
  if (typeof model !== 'string') return validateModelSpec(model);
  if (model.endsWith('.json') || model.includes('/') || model.includes('\\')) {
    let text: string;
    try {
      text = readFileSync(model, 'utf8');
    } catch (e) {
      throw new SpecError(`cannot read model spec file ${model}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw new SpecError(`${model}: not valid JSON (${(e as Error).message})`);
    }
    return validateModelSpec(json, model);
  }
  const train = data.train;
  // The VAE reconstructs its inputs: it needs no labels. The others are classifiers.
  if (hasTargets(train) && lookup(builtinModels, model) && model !== 'vae') {
    throw new SpecError(`the built-in model '${model}' is a classifier, but dataset ${JSON.stringify(train.name)} has float targets of shape [${train.targetShape.join(', ')}]`,
      'give --model a JSON model spec with "loss": "mse" (regression) or "bce" (multi-label), such as examples/regression.json');
  }
  return builtinModel(model, train.inputShape, train.numClasses ?? 1);
}
