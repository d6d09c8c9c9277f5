/**
 * Metrics that fit the model's loss, accumulated batch by batch in float64 and read once
 * at the end: accuracy for classifiers (softmax cross-entropy on integer labels), MSE and
 * MAE per element for `mse`, and per-label accuracy for `bce` multi-label models (a label
 * is predicted present when its sigmoid exceeds 0.5, i.e. its logit exceeds 0).
 */
import { Tensor, fmtShape, sameShape } from '../tensor/tensor.js';
import { ShapeError } from '../tensor/functional.js';
import type { ModelSpec } from './sequential.js';
import type { Targets } from './losses.js';

/** What a model's output is compared with, and so which metrics mean something. */
export type Task = 'classification' | 'regression' | 'multiLabel' | 'autoencoder';

/**
 * The task a spec trains for: an autoencoder (targets are the inputs), a classifier
 * (softmaxCrossEntropy, the default loss), regression (mse) or multi-label (bce).
 */
export function taskOf(spec: Pick<ModelSpec, 'loss' | 'autoencoder'>): Task {
  if (spec.autoencoder) return 'autoencoder';
  const loss = spec.loss ?? 'softmaxCrossEntropy';
  return loss === 'mse' ? 'regression' : loss === 'bce' ? 'multiLabel' : 'classification';
}

/** Every metric of an evaluation; the ones that do not fit the task are null. */
export interface Metrics {
  /** Share of samples whose arg-max output is their label (classifiers). */
  accuracy: number | null;
  /** Mean squared error per target element (loss `mse`, autoencoders included). */
  mse: number | null;
  /** Mean absolute error per target element (loss `mse`). */
  mae: number | null;
  /** Share of all (sample, label) decisions that are right (multi-label `bce`). */
  labelAccuracy: number | null;
  /** The same per label (output element), in output order (multi-label `bce`). */
  perLabelAccuracy: number[] | null;
}

/**
 * Sums a dataset's metrics over batches.
 * @example
 * const m = new MetricSums(spec);
 * for (const { x, y } of evalBatches(test, 500)) m.add(model(x), y);
 * m.result();   // { accuracy: 0.97, mse: null, ... }
 */
export class MetricSums {
  readonly task: Task;
  private readonly regression: boolean;
  private samples = 0;
  private correct = 0;
  private squares = 0;
  private absolute = 0;
  private elements = 0;
  private labelCorrect: Float64Array | null = null;

  constructor(spec: Pick<ModelSpec, 'loss' | 'autoencoder'>) {
    this.task = taskOf(spec);
    this.regression = (spec.loss ?? 'softmaxCrossEntropy') === 'mse';
  }

  /** One batch: the model's output `[n, ...]` and its targets (labels, or a tensor shaped like the output). */
  add(output: Tensor, targets: Targets): void {
    const n = output.shape[0] ?? 0;
    const per = n === 0 ? 0 : output.size / n;
    const h = output.data;
    this.samples += n;
    if (this.task === 'classification') {
      if (!(targets instanceof Int32Array) || targets.length !== n) throw new ShapeError(`metrics: ${n} outputs need ${n} integer labels`);
      for (let i = 0; i < n; i++) {
        let best = 0;
        for (let j = 1; j < per; j++) if (h[i * per + j]! > h[i * per + best]!) best = j;
        if (best === targets[i]) this.correct++;
      }
      return;
    }
    if (!(targets instanceof Tensor) || !sameShape(targets.shape, output.shape)) {
      throw new ShapeError(`metrics: targets ${targets instanceof Tensor ? fmtShape(targets.shape) : `of ${targets.length} labels`} != output ${fmtShape(output.shape)}`);
    }
    const t = targets.data;
    if (this.regression) {
      for (let k = 0; k < output.size; k++) {
        const d = h[k]! - t[k]!;
        this.squares += d * d;
        this.absolute += Math.abs(d);
      }
      this.elements += output.size;
    }
    if (this.task === 'multiLabel') {
      const c = (this.labelCorrect ??= new Float64Array(per));
      for (let k = 0; k < output.size; k++) if ((h[k]! > 0) === (t[k]! > 0.5)) c[k % per]++;
    }
  }

  result(): Metrics {
    const n = this.samples;
    const labels = this.labelCorrect;
    const perLabel = labels ? Array.from(labels, (c) => c / n) : null;
    return {
      accuracy: this.task === 'classification' ? this.correct / n : null,
      mse: this.regression ? this.squares / this.elements : null,
      mae: this.regression ? this.absolute / this.elements : null,
      labelAccuracy: perLabel ? perLabel.reduce((a, b) => a + b, 0) / perLabel.length : null,
      perLabelAccuracy: perLabel,
    };
  }
}
