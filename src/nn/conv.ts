/**
 * Convolution and pooling layers over per-sample [channels, height, width] inputs.
 * Sizes (kernel, stride, padding, dilation) are a number or a [height, width] pair.
 */
import { describeValue } from '../errors.js';
import { Tensor, fmtShape } from '../tensor/tensor.js';
import { ShapeError } from '../tensor/functional.js';
import type { Rng } from '../tensor/rng.js';
import { avgPool2d, conv2d, convOutSize, maxPool2d, type Pair2d } from '../autograd/index.js';
import { Layer, registerLayer, type LayerContext } from './layer.js';
import { initialize, initNames, type InitName } from './init.js';
import { SpecError, oneOf, positiveInt, type LayerSpec } from './spec.js';

/** Reads a number or a [height, width] pair of integers ≥ min. */
export function sizePair(spec: LayerSpec, field: string, where: string, min: number, fallback?: number): Pair2d {
  const v = spec[field] ?? fallback;
  const ok = (d: unknown): d is number => typeof d === 'number' && Number.isSafeInteger(d) && d >= min;
  if (ok(v)) return [v, v];
  if (Array.isArray(v) && v.length === 2 && ok(v[0]) && ok(v[1])) return [v[0], v[1]];
  const what = min === 0 ? 'non-negative' : 'positive';
  throw new SpecError(`${where}: '${field}' must be a ${what} integer or a [height, width] pair of ${what} integers, got ${describeValue(spec[field], 80)}`);
}

/** The spec form of a pair: a number when both sides agree. */
const specPair = (p: Pair2d): number | Pair2d => (p[0] === p[1] ? p[0] : [p[0], p[1]]);

function boolField(spec: LayerSpec, field: string, where: string, fallback: boolean): boolean {
  const v = spec[field] ?? fallback;
  if (typeof v !== 'boolean') throw new SpecError(`${where}: '${field}' must be true or false, got ${describeValue(spec[field], 80)}`);
  return v;
}

function expectImage(type: string, inputShape: readonly number[], channels?: number): [number, number, number] {
  if (inputShape.length !== 3 || (channels !== undefined && inputShape[0] !== channels)) {
    const want = channels === undefined ? '[channels, height, width]' : `[${channels}, height, width]`;
    throw new ShapeError(`${type}: expects per-sample input ${want} but receives ${fmtShape(inputShape)}${inputShape.length === 1 ? ' (add a reshape layer)' : ''}`);
  }
  return inputShape as [number, number, number];
}

export interface Conv2dConfig {
  inChannels: number;
  outChannels: number;
  kernel: Pair2d;
  stride: Pair2d;
  padding: Pair2d;
  dilation: Pair2d;
  bias: boolean;
  init: InitName;
}

/**
 * 2-D convolution, weight [out, in, kh, kw] (He-initialized by default), bias [out].
 * @example { "type": "conv2d", "inChannels": 1, "outChannels": 16, "kernel": 3, "padding": 1 }
 */
export class Conv2d extends Layer {
  readonly type = 'conv2d';
  readonly weight: Tensor;
  readonly bias: Tensor | null;

  constructor(readonly config: Conv2dConfig, rng: Rng) {
    super();
    const { inChannels: c, outChannels: o, kernel: [kh, kw], init } = config;
    const w = initialize(new Float32Array(o * c * kh * kw), init, c * kh * kw, o * kh * kw, rng);
    this.weight = Tensor.param(w, [o, c, kh, kw], 'weight');
    this.bias = config.bias ? Tensor.param(new Float32Array(o), [o], 'bias') : null;
    this.params = this.bias ? [['weight', this.weight], ['bias', this.bias]] : [['weight', this.weight]];
  }

  forward(x: Tensor, ctx: LayerContext): Tensor {
    return this.forwardWith(x, this.params.map(([, p]) => p), ctx);
  }

  /** The forward with the parameters given (in `params` order), e.g. float64 copies for a gradient check. */
  forwardWith(x: Tensor, params: Tensor[], _ctx: LayerContext): Tensor {
    if (x.rank !== 4 || x.shape[1] !== this.config.inChannels) {
      throw new ShapeError(`conv2d: expected input [batch, ${this.config.inChannels}, height, width], got ${fmtShape(x.shape)}`);
    }
    const { stride, padding, dilation } = this.config;
    return conv2d(x, params[0]!, params[1] ?? null, { stride, padding, dilation });
  }

  outputShape(inputShape: readonly number[]): number[] {
    const [, h, w] = expectImage('conv2d', inputShape, this.config.inChannels);
    const { kernel, stride, padding, dilation, outChannels } = this.config;
    const oh = convOutSize(h, kernel[0], stride[0], padding[0], dilation[0]);
    const ow = convOutSize(w, kernel[1], stride[1], padding[1], dilation[1]);
    if (oh <= 0 || ow <= 0) throw new ShapeError(`conv2d: kernel ${fmtShape(kernel)} (dilation ${fmtShape(dilation)}, padding ${fmtShape(padding)}) does not fit input ${fmtShape(inputShape)}`);
    return [outChannels, oh, ow];
  }

  toSpec(): LayerSpec {
    const c = this.config;
    return {
      type: this.type, inChannels: c.inChannels, outChannels: c.outChannels, kernel: specPair(c.kernel),
      stride: specPair(c.stride), padding: specPair(c.padding), dilation: specPair(c.dilation), bias: c.bias, init: c.init,
    };
  }
}

registerLayer('conv2d', ['inChannels', 'outChannels', 'kernel', 'stride', 'padding', 'dilation', 'bias', 'init'], (spec, { rng, where }) => new Conv2d({
  inChannels: positiveInt(spec, 'inChannels', where),
  outChannels: positiveInt(spec, 'outChannels', where),
  kernel: sizePair(spec, 'kernel', where, 1),
  stride: sizePair(spec, 'stride', where, 1, 1),
  padding: sizePair(spec, 'padding', where, 0, 0),
  dilation: sizePair(spec, 'dilation', where, 1, 1),
  bias: boolField(spec, 'bias', where, true),
  init: oneOf(spec, 'init', initNames, where, 'he'),
}, rng));

/**
 * Max or average pooling (no padding; windows that do not fit are dropped, as PyTorch's
 * default floor mode). The stride defaults to the kernel.
 * NOTE: max pooling gives the whole gradient to the first maximum of a window (row-major).
 */
export class Pool2d extends Layer {
  constructor(readonly type: 'maxPool2d' | 'avgPool2d', readonly kernel: Pair2d, readonly stride: Pair2d) {
    super();
  }

  forward(x: Tensor, _ctx: LayerContext): Tensor {
    if (x.rank !== 4) throw new ShapeError(`${this.type}: expected input [batch, channels, height, width], got ${fmtShape(x.shape)}`);
    return this.type === 'maxPool2d' ? maxPool2d(x, this.kernel, this.stride) : avgPool2d(x, this.kernel, this.stride);
  }

  outputShape(inputShape: readonly number[]): number[] {
    const [c, h, w] = expectImage(this.type, inputShape);
    const oh = convOutSize(h, this.kernel[0], this.stride[0], 0, 1);
    const ow = convOutSize(w, this.kernel[1], this.stride[1], 0, 1);
    if (oh <= 0 || ow <= 0) throw new ShapeError(`${this.type}: kernel ${fmtShape(this.kernel)} is larger than input ${fmtShape(inputShape)}`);
    return [c, oh, ow];
  }

  toSpec(): LayerSpec {
    return { type: this.type, kernel: specPair(this.kernel), stride: specPair(this.stride) };
  }
}

for (const type of ['maxPool2d', 'avgPool2d'] as const) {
  registerLayer(type, ['kernel', 'stride'], (spec, { where }) => {
    const kernel = sizePair(spec, 'kernel', where, 1);
    const stride = spec['stride'] === undefined ? kernel : sizePair(spec, 'stride', where, 1);
    return new Pool2d(type, kernel, stride);
  });
}
