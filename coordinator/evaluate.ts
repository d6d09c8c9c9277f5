/** Evaluation over a whole dataset through the pipeline, without a tape. */
import { noGrad } from '../src/autograd/index.js';
import { evalBatches, type Dataset, type Targets as BatchTargets } from '../src/data/index.js';
import { MetricSums, getLoss, taskOf, type Metrics, type ModelSpec } from '../src/nn/index.js';
import type { Tensor } from '../src/tensor/tensor.js';
import type { Targets } from '../src/wire/index.js';
import type { StageGroup } from './stage-group.js';

/** What the loss compares the output with: the labels or float targets, or the input itself for an autoencoder. */
export function targetsOf(spec: ModelSpec, x: Tensor, y: BatchTargets): Targets {
  return spec.autoencoder ? x : y;
}

/** Whether accuracy means anything: a classifier trained with softmax cross-entropy. */
export function isClassifier(spec: ModelSpec): boolean {
  return taskOf(spec) === 'classification';
}

/** The index of each row's largest value (the first on ties). */
export function argmaxRows(h: Tensor): Int32Array {
  const [n, c] = [h.shape[0]!, h.shape[1]!];
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let j = 1; j < c; j++) if (h.data[i * c + j]! > h.data[i * c + best]!) best = j;
    out[i] = best;
  }
  return out;
}

/** An evaluation: the mean loss and the metrics that fit the model (the others null). */
export interface Evaluation extends Metrics {
  /** Mean loss per sample, with auxiliary terms such as a VAE's KL. */
  loss: number;
}

/**
 * Mean loss (auxiliary terms such as a VAE's KL included), with accuracy, MSE/MAE or
 * per-label accuracy as they fit; a classifier's predictions are also tallied into
 * `confusion[true][predicted]` when given (grown to the output width).
 */
export async function evaluate(group: StageGroup, spec: ModelSpec, ds: Dataset, batchSize: number, confusion?: number[][]): Promise<Evaluation> {
  const lossFn = getLoss(spec.loss ?? 'softmaxCrossEntropy');
  const metrics = new MetricSums(spec);
  let total = 0;
  for (const { x, y } of evalBatches(ds, batchSize)) {
    let h = x;
    for (let k = 0; k < group.stages; k++) {
      const r = await group.ask(k, { type: 'evaluate', x: h }, 'activations');
      h = r.y;
      total += r.loss ?? 0;
    }
    const t = targetsOf(spec, x, y);
    total += noGrad(() => lossFn.compute(h, t, 'sum')).item();
    metrics.add(h, t);
    if (confusion && metrics.task === 'classification' && y instanceof Int32Array) tally(confusion, argmaxRows(h), y, h.shape[1]!);
  }
  return { loss: total / ds.size, ...metrics.result() };
}

function tally(counts: number[][], pred: Int32Array, y: Int32Array, classes: number): void {
  const n = Math.max(classes, counts.length, ...y.map((v) => v + 1));
  while (counts.length < n) counts.push([]);
  for (const row of counts) while (row.length < n) row.push(0);
  for (let i = 0; i < y.length; i++) if (y[i]! >= 0) counts[y[i]!]![pred[i]!]!++;
}
