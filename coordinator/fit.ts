/**
 * Whether a model fits its data, checked when the Coordinator is built (not at step 0):
 * the spec's input shape against the samples', and the output against what the loss compares
 * it with: the number of classes (classification), the target shape (regression,
 * multi-label) or the input (autoencoders). Errors name both sides and how to fix them.
 */
import { hasTargets, validateDataset, type Dataset } from '../src/data/index.js';
import { SpecError, modelShapes, taskOf, type ModelSpec } from '../src/nn/index.js';
import { fmtShape, sameShape } from '../src/tensor/tensor.js';

/**
 * Throws a SpecError (BAD_SPEC) unless `spec` can train and be evaluated on every dataset given
 * (and a DataError for a dataset whose own fields disagree).
 * `what` names the spec in messages (its file, or 'model spec').
 * @example checkModelFitsData(spec, [train, test], 'examples/regression.json');
 */
export function checkModelFitsData(spec: ModelSpec, datasets: readonly Dataset[], what = 'model spec'): void {
  const output = modelShapes(spec).at(-1)!;
  const task = taskOf(spec);
  const loss = spec.loss ?? 'softmaxCrossEntropy';
  const lossName = `loss ${loss}${spec.loss === undefined ? ' (the default)' : ''}`;
  for (const ds of datasets) {
    validateDataset(ds); // datasets given to the API may not come from makeDataset
    const name = `dataset ${JSON.stringify(ds.name)}`;
    if (!sameShape(spec.inputShape, ds.inputShape)) {
      throw new SpecError(`${what}: inputShape ${fmtShape(spec.inputShape)} does not match the samples of ${name}, shape ${fmtShape(ds.inputShape)}`,
        `set "inputShape": ${JSON.stringify(ds.inputShape)} (and the first layer's inputs to match)`);
    }
    if (task === 'autoencoder') {
      if (!sameShape(output, ds.inputShape)) {
        throw new SpecError(`${what}: an autoencoder's output ${fmtShape(output)} must match its input, but the samples of ${name} have shape ${fmtShape(ds.inputShape)}`,
          `make the last layer output ${fmtShape(ds.inputShape)}`);
      }
      continue;
    }
    if (task === 'classification') {
      if (hasTargets(ds)) {
        throw new SpecError(`${what}: ${lossName} needs integer class labels, but ${name} has float targets of shape ${fmtShape(ds.targetShape)}`,
          'set "loss": "mse" (regression) or "bce" (multi-label) in the spec, or load class labels (CSV: --label-column instead of --target-columns)');
      }
      if (output.length !== 1 || output[0]! < ds.numClasses) {
        throw new SpecError(`${what}: the model's output ${fmtShape(output)} cannot score the ${ds.numClasses} classes of ${name} (labels 0..${ds.numClasses - 1})`,
          `make the last layer output [${ds.numClasses}] (e.g. "units": ${ds.numClasses})`);
      }
      continue;
    }
    if (!hasTargets(ds)) {
      throw new SpecError(`${what}: ${lossName} compares the output with float targets, but ${name} has integer class labels (${ds.numClasses} classes)`,
        'load float targets (CSV: --target-columns NAME,...), or use "loss": "softmaxCrossEntropy" for classification');
    }
    if (!sameShape(output, ds.targetShape)) {
      throw new SpecError(`${what}: the model's output ${fmtShape(output)} does not match the targets of ${name}, shape ${fmtShape(ds.targetShape)}`,
        `make the last layer output ${fmtShape(ds.targetShape)}${ds.targetShape.length === 1 ? ` (e.g. "units": ${ds.targetShape[0]})` : ''}`);
    }
    if (task === 'multiLabel') {
      const t = ds.targets;
      const per = t.length / ds.size;
      for (let k = 0; k < t.length; k++) {
        if (!(t[k]! >= 0 && t[k]! <= 1)) {
          throw new SpecError(`${what}: ${lossName} needs targets in [0, 1] (a label absent or present), but target ${k % per} of sample ${Math.floor(k / per)} of ${name} is ${t[k]}`,
            'use "loss": "mse" for other values (regression)');
        }
      }
    }
  }
}
