/**
 * Normalization layers, composed from existing ops (mean, sub, mul, sqrt, div), so they
 * need no backward of their own.
 */
import { describeValue } from '../errors.js';
import { Tensor, fmtShape, sizeOf } from '../tensor/tensor.js';
import { ShapeError } from '../tensor/functional.js';
import { add, div, mul, reshape, sqrt, sub, sum } from '../autograd/index.js';
import { Layer, registerLayer, type LayerContext } from './layer.js';
import { SpecError, positiveInt, type LayerSpec } from './spec.js';

function numberIn(spec: LayerSpec, field: string, where: string, fallback: number, lo: number, hi: number, loOpen: boolean): number {
  const v = spec[field] ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || (loOpen ? v <= lo : v < lo) || v > hi) {
    throw new SpecError(`${where}: '${field}' must be a number in ${loOpen ? '(' : '['}${lo}, ${hi}], got ${describeValue(spec[field], 80)}`);
  }
  return v;
}

/**
 * Layer normalization of each sample over all its features (flattened), with a gain and
 * bias per feature: y = (x − mean) / √(var + eps) · gain + bias (biased variance).
 */
export function layerNormalize(x: Tensor, gain: Tensor, bias: Tensor, eps: number): Tensor {
  const features = gain.size;
  if (x.rank < 2 || x.size !== x.shape[0]! * features) {
    throw new ShapeError(`layerNorm: expected input [batch, ...] with ${features} features per sample, got ${fmtShape(x.shape)}`);
  }
  const flat = reshape(x, [x.shape[0]!, features]);
  const mu = mul(sum(flat, 1, true), 1 / features);
  const d = sub(flat, mu);
  const variance = mul(sum(mul(d, d), 1, true), 1 / features);
  const y = add(mul(div(d, sqrt(add(variance, eps))), gain), bias);
  return reshape(y, x.shape);
}

/**
 * @example { "type": "layerNorm", "features": 128 }
 */
export class LayerNorm extends Layer {
  readonly type = 'layerNorm';
  readonly gain: Tensor;
  readonly bias: Tensor;

  constructor(readonly features: number, readonly eps: number) {
    super();
    this.gain = Tensor.param(new Float32Array(features).fill(1), [features], 'gain');
    this.bias = Tensor.param(new Float32Array(features), [features], 'bias');
    this.params = [['gain', this.gain], ['bias', this.bias]];
  }

  forward(x: Tensor, ctx: LayerContext): Tensor {
    return this.forwardWith(x, [this.gain, this.bias], ctx);
  }

  /** The forward with the parameters given (gain, bias), e.g. float64 copies for a gradient check. */
  forwardWith(x: Tensor, [gain, bias]: Tensor[], _ctx: LayerContext): Tensor {
    return layerNormalize(x, gain!, bias!, this.eps);
  }

  outputShape(inputShape: readonly number[]): number[] {
    if (sizeOf(inputShape) !== this.features) {
      throw new ShapeError(`layerNorm: expects ${this.features} features per sample but receives ${fmtShape(inputShape)} (${sizeOf(inputShape)})`);
    }
    return [...inputShape];
  }

  toSpec(): LayerSpec {
    return { type: this.type, features: this.features, eps: this.eps };
  }
}

registerLayer('layerNorm', ['features', 'eps'], (spec, { where }) =>
  new LayerNorm(positiveInt(spec, 'features', where), numberIn(spec, 'eps', where, 1e-5, 0, 1, true)));

export interface BatchStats { out: Tensor; mean: Tensor; variance: Tensor; count: number }

/** The per-channel broadcast shape: [c] for [n, c] inputs, [c, 1, 1] for [n, c, h, w]. */
function channelShape(x: Tensor, c: number): number[] {
  return x.rank === 2 ? [c] : [c, 1, 1];
}

/**
 * Batch normalization with the batch's own statistics, per channel over the batch (and
 * the spatial axes of [n, c, h, w]): y = (x − mean) / √(var + eps) · gamma + beta.
 * Returns the biased mean and variance too (shape [1, c] or [1, c, 1, 1]).
 */
export function batchNormalize(x: Tensor, gamma: Tensor, beta: Tensor, eps: number): BatchStats {
  const c = gamma.size;
  if ((x.rank !== 2 && x.rank !== 4) || x.shape[1] !== c) {
    throw new ShapeError(`batchNorm: expected input [batch, ${c}] or [batch, ${c}, height, width], got ${fmtShape(x.shape)}`);
  }
  const count = x.size / c;
  const meanOver = (t: Tensor): Tensor => {
    let s = t;
    for (let a = t.rank - 1; a >= 0; a--) if (a !== 1) s = sum(s, a, true);
    return mul(s, 1 / count);
  };
  const mean = meanOver(x);
  const d = sub(x, mean);
  const variance = meanOver(mul(d, d));
  const cs = channelShape(x, c);
  const out = add(mul(div(d, sqrt(add(variance, eps))), reshape(gamma, cs)), reshape(beta, cs));
  return { out, mean, variance, count };
}

/**
 * Batch normalization over [n, c] or [n, c, h, w] inputs, with gamma and beta per channel.
 *
 * In training each forward normalizes by its own batch's statistics and updates the
 * running mean and (unbiased) variance, `buffers`, with momentum 0.1:
 * running = (1 − momentum)·running + momentum·batch. In evaluation the running
 * statistics are used. NOTE: statistics are per MICRO-batch: with M micro-batches each one
 * is normalized by its own statistics and the running statistics are updated M times per
 * step (in micro-batch order), so results depend on M (as with PyTorch's pipelining).
 * A micro-batch with one value per channel cannot be normalized in training.
 * @example { "type": "batchNorm", "channels": 16 }
 */
export class BatchNorm extends Layer {
  readonly type = 'batchNorm';
  readonly gamma: Tensor;
  readonly beta: Tensor;
  readonly runningMean: Tensor;
  readonly runningVar: Tensor;

  constructor(readonly channels: number, readonly momentum: number, readonly eps: number) {
    super();
    this.gamma = Tensor.param(new Float32Array(channels).fill(1), [channels], 'gamma');
    this.beta = Tensor.param(new Float32Array(channels), [channels], 'beta');
    this.params = [['gamma', this.gamma], ['beta', this.beta]];
    this.runningMean = new Tensor(new Float32Array(channels), [channels]);
    this.runningVar = new Tensor(new Float32Array(channels).fill(1), [channels]);
    this.buffers = [['runningMean', this.runningMean], ['runningVar', this.runningVar]];
  }

  forward(x: Tensor, ctx: LayerContext): Tensor {
    return this.forwardWith(x, [this.gamma, this.beta], ctx);
  }

  /** The forward with the parameters given (gamma, beta), e.g. float64 copies for a gradient check. */
  forwardWith(x: Tensor, [gamma, beta]: Tensor[], ctx: LayerContext): Tensor {
    if (!ctx.training) {
      const c = this.channels;
      if ((x.rank !== 2 && x.rank !== 4) || x.shape[1] !== c) {
        throw new ShapeError(`batchNorm: expected input [batch, ${c}] or [batch, ${c}, height, width], got ${fmtShape(x.shape)}`);
      }
      const cs = channelShape(x, c);
      const rm = new Tensor(this.runningMean.data, cs).to(x.dtype);
      const rv = new Tensor(this.runningVar.data, cs).to(x.dtype);
      return add(mul(div(sub(x, rm), sqrt(add(rv, this.eps))), reshape(gamma!, cs)), reshape(beta!, cs));
    }
    if (x.size / this.channels <= 1) {
      throw new ShapeError(`batchNorm: training needs more than one value per channel, got input ${fmtShape(x.shape)}`);
    }
    const { out, mean, variance, count } = batchNormalize(x, gamma!, beta!, this.eps);
    const m = this.momentum;
    const unbias = count / (count - 1);
    const rm = this.runningMean.data;
    const rv = this.runningVar.data;
    for (let i = 0; i < this.channels; i++) {
      rm[i] = (1 - m) * rm[i]! + m * mean.data[i]!;
      rv[i] = (1 - m) * rv[i]! + m * variance.data[i]! * unbias;
    }
    return out;
  }

  outputShape(inputShape: readonly number[]): number[] {
    if ((inputShape.length !== 1 && inputShape.length !== 3) || inputShape[0] !== this.channels) {
      throw new ShapeError(`batchNorm: expects per-sample input [${this.channels}] or [${this.channels}, height, width] but receives ${fmtShape(inputShape)}`);
    }
    return [...inputShape];
  }

  toSpec(): LayerSpec {
    return { type: this.type, channels: this.channels, momentum: this.momentum, eps: this.eps };
  }
}

registerLayer('batchNorm', ['channels', 'momentum', 'eps'], (spec, { where }) => new BatchNorm(
  positiveInt(spec, 'channels', where),
  numberIn(spec, 'momentum', where, 0.1, 0, 1, false),
  numberIn(spec, 'eps', where, 1e-5, 0, 1, true),
));
