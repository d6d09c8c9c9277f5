import { describe, expect, it } from 'vitest';
import { Tensor, Rng } from '../src/tensor/index.js';
import { Tape, gradcheck, conv2d, maxPool2d, avgPool2d, sum, mul, type Pair2d } from '../src/autograd/index.js';
import {
  Sequential, buildLayer, initRng, cnnSpec, Conv2d, LayerNorm, BatchNorm, Dropout,
  type Layer, type LayerContext, type LayerSpec,
} from '../src/nn/index.js';

const rand = (shape: number[], rng: Rng, dtype: 'float32' | 'float64' = 'float64'): Tensor => {
  const t = Tensor.zeros(shape, dtype);
  for (let i = 0; i < t.size; i++) t.data[i] = rng.float() * 2 - 1;
  return t;
};

const ctx = (over: Partial<LayerContext> = {}): LayerContext => ({ training: true, seed: 11, step: 3, microBatch: 0, index: 2, ...over });

const build = (spec: LayerSpec, seed = 5, index = 0): Layer =>
  buildLayer(spec, { rng: initRng(seed, index), where: `layer ${index} (${spec.type})` });

/** Direct convolution by its definition, in float64. */
function naiveConv(x: Tensor, w: Tensor, b: Tensor | null, s: Pair2d, p: Pair2d, d: Pair2d): { data: number[]; shape: number[] } {
  const [n, c, h, wd] = x.shape as number[];
  const [o, , kh, kw] = w.shape as number[];
  const oh = Math.floor((h! + 2 * p[0] - d[0] * (kh! - 1) - 1) / s[0]) + 1;
  const ow = Math.floor((wd! + 2 * p[1] - d[1] * (kw! - 1) - 1) / s[1]) + 1;
  const out: number[] = [];
  for (let bi = 0; bi < n!; bi++) for (let oc = 0; oc < o!; oc++) for (let y = 0; y < oh; y++) for (let xx = 0; xx < ow; xx++) {
    let acc = b ? b.data[oc]! : 0;
    for (let ci = 0; ci < c!; ci++) for (let i = 0; i < kh!; i++) for (let j = 0; j < kw!; j++) {
      const iy = y * s[0] - p[0] + i * d[0];
      const ix = xx * s[1] - p[1] + j * d[1];
      if (iy < 0 || iy >= h! || ix < 0 || ix >= wd!) continue;
      acc += x.data[((bi * c! + ci) * h! + iy) * wd! + ix]! * w.data[((oc * c! + ci) * kh! + i) * kw! + j]!;
    }
    out.push(acc);
  }
  return { data: out, shape: [n!, o!, oh, ow] };
}

describe('conv2d against a direct convolution', () => {
  const cases: { x: number[]; w: number[]; bias: boolean; s: Pair2d; p: Pair2d; d: Pair2d }[] = [
    { x: [2, 3, 7, 6], w: [4, 3, 3, 3], bias: true, s: [1, 1], p: [0, 0], d: [1, 1] },
    { x: [2, 2, 8, 8], w: [3, 2, 3, 3], bias: true, s: [2, 2], p: [1, 1], d: [1, 1] },
    { x: [1, 2, 9, 7], w: [2, 2, 3, 2], bias: false, s: [1, 2], p: [2, 0], d: [2, 1] },
    { x: [3, 1, 6, 6], w: [2, 1, 2, 2], bias: true, s: [3, 3], p: [1, 1], d: [2, 2] },
    { x: [1, 4, 5, 5], w: [5, 4, 1, 1], bias: true, s: [1, 1], p: [0, 0], d: [1, 1] },
  ];
  for (const [i, k] of cases.entries()) {
    it(`case ${i}: x ${JSON.stringify(k.x)} w ${JSON.stringify(k.w)} stride ${k.s} padding ${k.p} dilation ${k.d}`, () => {
      const rng = new Rng(100 + i);
      const x = rand(k.x, rng);
      const w = rand(k.w, rng);
      const b = k.bias ? rand([k.w[0]!], rng) : null;
      const want = naiveConv(x, w, b, k.s, k.p, k.d);
      const got = conv2d(x, w, b, { stride: k.s, padding: k.p, dilation: k.d });
      expect([...got.shape]).toEqual(want.shape);
      for (let j = 0; j < want.data.length; j++) expect(got.data[j]).toBeCloseTo(want.data[j]!, 12);
      // float32 through the installed backend agrees to float32 precision.
      const got32 = conv2d(x.to('float32'), w.to('float32'), b?.to('float32') ?? null, { stride: k.s, padding: k.p, dilation: k.d });
      for (let j = 0; j < want.data.length; j++) expect(got32.data[j]).toBeCloseTo(want.data[j]!, 4);
    });
  }

  it('pooling by hand: max and average of 2×2 windows', () => {
    const x = Tensor.from([1, 2, 5, 6, 3, 4, 7, 8, -1, -2, 0, 0, -3, -4, 0, 1], [1, 1, 4, 4], 'float64');
    expect(maxPool2d(x, 2).toArray()).toEqual([4, 8, -1, 1]);
    expect(avgPool2d(x, 2).toArray()).toEqual([2.5, 6.5, -2.5, 0.25]);
  });

  it('shape errors name the op and both shapes', () => {
    expect(() => conv2d(Tensor.zeros([1, 2, 5, 5]), Tensor.zeros([3, 4, 3, 3]))).toThrow(/conv2d: input has 2 channels but the weight \[3, 4, 3, 3\] expects 4/);
    expect(() => conv2d(Tensor.zeros([1, 1, 2, 2]), Tensor.zeros([1, 1, 3, 3]))).toThrow(/conv2d: a 3×3 kernel .* does not fit input \[1, 1, 2, 2\]/);
    expect(() => maxPool2d(Tensor.zeros([4, 4]), 2)).toThrow(/maxPool2d: expected input \[batch, channels, height, width\], got \[4, 4\]/);
  });
});

describe('max pooling subgradient at ties', () => {
  it('the first maximum in row-major order gets the whole gradient', () => {
    // window 1: [[1, 3], [3, 2]] → the 3 at (0, 1); window 2: all 5 → the one at (0, 2).
    const x = Tensor.from([1, 3, 5, 5, 3, 2, 5, 5], [1, 1, 2, 4], 'float64');
    x.requiresGrad = true;
    const tape = new Tape();
    const y = tape.run(() => maxPool2d(x, 2));
    expect(y.toArray()).toEqual([3, 5]);
    tape.backward(y, Tensor.from([10, 20], [1, 1, 1, 2], 'float64'));
    expect(x.grad!.toArray()).toEqual([0, 10, 20, 0, 0, 0, 0, 0]);
  });

  it('overlapping windows add their gradients into a shared maximum', () => {
    const x = Tensor.from([0, 0, 0, 0, 9, 0, 0, 0, 0], [1, 1, 3, 3], 'float64');
    x.requiresGrad = true;
    const tape = new Tape();
    const y = tape.run(() => sum(maxPool2d(x, 2, 1)));
    tape.backward(y);
    expect(x.grad!.toArray()).toEqual([0, 0, 0, 0, 4, 0, 0, 0, 0]);
  });
});

/** Gradient check of a layer's own forward, with float64 copies of its input and parameters. */
function checkLayer(layer: Layer, xShape: number[], c: LayerContext, seed = 1): void {
  const rng = new Rng(seed);
  const x = rand(xShape, rng);
  // Perturb parameters away from their (often constant) initial values.
  const params = layer.params.map(([, p]) => { const q = p.to('float64').clone(); for (let i = 0; i < q.size; i++) q.data[i] = q.data[i]! + 0.3 * (rng.float() - 0.5); return q; });
  const withParams = layer as Layer & { forwardWith?: (x: Tensor, ps: Tensor[], c: LayerContext) => Tensor };
  const f = (xi: Tensor, ...ps: Tensor[]): Tensor => (withParams.forwardWith ? withParams.forwardWith(xi, ps, c) : layer.forward(xi, c));
  const r = gradcheck(f, [x, ...params]);
  expect(r.worst).toBe('');
  expect(r.ok).toBe(true);
}

describe('gradient checks of each layer\'s forward', () => {
  const cases: [string, LayerSpec, number[], Partial<LayerContext>?][] = [
    ['conv2d with bias, padding', { type: 'conv2d', inChannels: 2, outChannels: 3, kernel: 3, padding: 1 }, [2, 2, 4, 4]],
    ['conv2d stride 2, dilation, no bias', { type: 'conv2d', inChannels: 1, outChannels: 2, kernel: [2, 3], stride: 2, dilation: [1, 2], bias: false }, [2, 1, 6, 7]],
    ['maxPool2d', { type: 'maxPool2d', kernel: 2 }, [2, 2, 4, 5]],
    ['avgPool2d overlapping', { type: 'avgPool2d', kernel: 3, stride: 2 }, [2, 2, 5, 5]],
    ['flatten', { type: 'flatten' }, [2, 2, 3, 2]],
    ['reshape', { type: 'reshape', shape: [2, 3, 2] }, [2, 12]],
    ['dropout (training)', { type: 'dropout', rate: 0.4 }, [3, 5]],
    ['layerNorm on [n, f]', { type: 'layerNorm', features: 5 }, [3, 5]],
    ['layerNorm on images', { type: 'layerNorm', features: 12 }, [2, 3, 2, 2]],
    ['batchNorm on [n, c] (training)', { type: 'batchNorm', channels: 3 }, [4, 3]],
    ['batchNorm on [n, c, h, w] (training)', { type: 'batchNorm', channels: 2 }, [2, 2, 3, 2]],
    ['batchNorm (evaluation)', { type: 'batchNorm', channels: 2 }, [2, 2, 3, 2], { training: false }],
  ];
  for (const [label, spec, shape, over] of cases) {
    it(label, () => checkLayer(build(spec), shape, ctx(over)));
  }
});

describe('dropout', () => {
  const layer = build({ type: 'dropout', rate: 0.5 }) as Dropout;
  const ones = Tensor.ones([64, 100]);

  it('is reproducible from (seed, layer, step, micro-batch) and differs when any of them does', () => {
    const a = layer.forward(ones, ctx()).toArray();
    expect(layer.forward(ones, ctx()).toArray()).toEqual(a);
    expect(layer.forward(ones, ctx({ step: 4 })).toArray()).not.toEqual(a);
    expect(layer.forward(ones, ctx({ microBatch: 1 })).toArray()).not.toEqual(a);
    expect(layer.forward(ones, ctx({ index: 3 })).toArray()).not.toEqual(a);
    expect(layer.forward(ones, ctx({ seed: 12 })).toArray()).not.toEqual(a);
    // A fresh layer built elsewhere draws the same mask.
    expect(build({ type: 'dropout', rate: 0.5 }, 99, 7).forward(ones, ctx()).toArray()).toEqual(a);
  });

  it('is the identity in evaluation', () => {
    const x = Tensor.from([1, -2, 3], [1, 3]);
    expect(layer.forward(x, ctx({ training: false }))).toBe(x);
  });

  it('keeps the expectation (inverted dropout) and drops about `rate` of the elements', () => {
    for (const rate of [0.1, 0.5, 0.8]) {
      const d = build({ type: 'dropout', rate });
      const y = d.forward(ones, ctx()).toArray();
      const kept = y.filter((v) => v !== 0);
      expect(new Set(kept).size).toBe(1);
      expect(kept[0]).toBeCloseTo(1 / (1 - rate), 6);
      const mean = y.reduce((s, v) => s + v, 0) / y.length;
      // 6,400 Bernoulli draws: the mean is within a few standard errors of 1.
      const se = Math.sqrt(rate / (1 - rate) / y.length);
      expect(Math.abs(mean - 1)).toBeLessThan(4 * se);
    }
  });

  it('passes the gradient through the kept elements only, scaled', () => {
    const x = Tensor.ones([4, 8], 'float64');
    x.requiresGrad = true;
    const tape = new Tape();
    const y = tape.run(() => layer.forward(x, ctx()));
    tape.backward(y);
    expect(x.grad!.toArray()).toEqual(y.toArray());
  });
});

describe('batchNorm: training vs evaluation', () => {
  it('normalizes by the batch in training, updates running stats with momentum 0.1, uses them in evaluation', () => {
    const bn = build({ type: 'batchNorm', channels: 2 }) as BatchNorm;
    // channel 0: 1, 2, 3, 4 (mean 2.5, biased var 1.25, unbiased 5/3); channel 1: 10, 10, 10, 10.
    const x = Tensor.from([1, 10, 2, 10, 3, 10, 4, 10], [4, 2]);
    const y = bn.forward(x, ctx()).toArray();
    const s = Math.sqrt(1.25 + 1e-5);
    const want = [-1.5 / s, 0, -0.5 / s, 0, 0.5 / s, 0, 1.5 / s, 0];
    for (let i = 0; i < 8; i++) expect(y[i]).toBeCloseTo(want[i]!, 5);
    expect(bn.runningMean.toArray()[0]).toBeCloseTo(0.25, 6);
    expect(bn.runningMean.toArray()[1]).toBeCloseTo(1, 6);
    expect(bn.runningVar.toArray()[0]).toBeCloseTo(0.9 + 0.1 * (5 / 3), 6);
    expect(bn.runningVar.toArray()[1]).toBeCloseTo(0.9, 6);
    expect(bn.buffers.map(([n]) => n)).toEqual(['runningMean', 'runningVar']);

    // Evaluation uses the running statistics and leaves them alone.
    const e = bn.forward(x, ctx({ training: false })).toArray();
    const rm = bn.runningMean.toArray();
    const rv = bn.runningVar.toArray();
    for (let i = 0; i < 8; i++) expect(e[i]).toBeCloseTo((x.data[i]! - rm[i % 2]!) / Math.sqrt(rv[i % 2]! + 1e-5), 5);
    expect(bn.runningMean.toArray()).toEqual(rm);

    // After many training steps on the same batch the running stats converge, and
    // evaluation agrees with training up to the unbiased/biased variance factor.
    for (let i = 0; i < 200; i++) bn.forward(x, ctx());
    expect(bn.runningMean.toArray()[0]).toBeCloseTo(2.5, 4);
    expect(bn.runningVar.toArray()[0]).toBeCloseTo(5 / 3, 4);
  });

  it('normalizes images per channel over batch and space', () => {
    const bn = build({ type: 'batchNorm', channels: 3 });
    const x = rand([4, 3, 5, 5], new Rng(3), 'float32');
    const y = bn.forward(x, ctx());
    for (let c = 0; c < 3; c++) {
      const v: number[] = [];
      for (let n = 0; n < 4; n++) for (let i = 0; i < 25; i++) v.push(y.data[(n * 3 + c) * 25 + i]!);
      const m = v.reduce((a, b) => a + b, 0) / v.length;
      const variance = v.reduce((a, b) => a + (b - m) ** 2, 0) / v.length;
      expect(m).toBeCloseTo(0, 5);
      expect(variance).toBeCloseTo(1, 3);
    }
  });

  it('refuses to train on one value per channel', () => {
    expect(() => build({ type: 'batchNorm', channels: 2 }).forward(Tensor.zeros([1, 2]), ctx())).toThrow(/batchNorm: training needs more than one value per channel/);
  });
});

describe('layerNorm', () => {
  it('normalizes each sample over its features', () => {
    const ln = build({ type: 'layerNorm', features: 4 }) as LayerNorm;
    const y = ln.forward(Tensor.from([1, 2, 3, 4, 10, 10, 10, 10], [2, 4]), ctx()).toArray();
    const s = Math.sqrt(1.25 + 1e-5);
    [-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s, 0, 0, 0, 0].forEach((v, i) => expect(y[i]).toBeCloseTo(v, 5));
  });
});

describe('specs', () => {
  const specs: [LayerSpec, number[]][] = [
    [{ type: 'conv2d', inChannels: 2, outChannels: 3, kernel: 3, stride: 2, padding: 1, dilation: 1, bias: true, init: 'he' }, [2, 2, 7, 7]],
    [{ type: 'conv2d', inChannels: 2, outChannels: 2, kernel: [3, 2], stride: [1, 2], padding: [0, 1], dilation: [2, 1], bias: false, init: 'xavier' }, [2, 2, 7, 6]],
    [{ type: 'maxPool2d', kernel: 2, stride: 2 }, [2, 2, 4, 4]],
    [{ type: 'avgPool2d', kernel: [3, 2], stride: 1 }, [2, 2, 4, 4]],
    [{ type: 'flatten' }, [2, 2, 3, 3]],
    [{ type: 'reshape', shape: [2, 3, 3] }, [2, 18]],
    [{ type: 'dropout', rate: 0.25 }, [2, 10]],
    [{ type: 'layerNorm', features: 10, eps: 1e-5 }, [2, 10]],
    [{ type: 'batchNorm', channels: 2, momentum: 0.1, eps: 1e-5 }, [3, 2, 2, 2]],
  ];
  for (const [spec, shape] of specs) {
    it(`${JSON.stringify(spec)}: build → toSpec → JSON → build gives the same spec and output`, () => {
      const a = build(spec, 42, 1);
      const s = a.toSpec();
      expect(s).toEqual(spec);
      const b = build(JSON.parse(JSON.stringify(s)) as LayerSpec, 42, 1);
      expect(b.toSpec()).toEqual(s);
      const x = rand(shape, new Rng(8), 'float32');
      expect(b.forward(x, ctx()).toArray()).toEqual(a.forward(x, ctx()).toArray());
      expect(b.outputShape(shape.slice(1))).toEqual(a.outputShape(shape.slice(1)));
    });
  }

  it('defaults are filled in and written out', () => {
    expect(build({ type: 'conv2d', inChannels: 1, outChannels: 2, kernel: 3 }).toSpec()).toEqual(
      { type: 'conv2d', inChannels: 1, outChannels: 2, kernel: 3, stride: 1, padding: 0, dilation: 1, bias: true, init: 'he' });
    expect(build({ type: 'maxPool2d', kernel: [2, 3] }).toSpec()).toEqual({ type: 'maxPool2d', kernel: [2, 3], stride: [2, 3] });
    expect(build({ type: 'batchNorm', channels: 4 }).toSpec()).toEqual({ type: 'batchNorm', channels: 4, momentum: 0.1, eps: 1e-5 });
    expect(build({ type: 'dropout' }).toSpec()).toEqual({ type: 'dropout', rate: 0.5 });
  });

  it('the same seed gives the same conv weights; another seed does not', () => {
    const spec = { type: 'conv2d', inChannels: 2, outChannels: 4, kernel: 3 };
    const w = (seed: number) => (build(spec, seed, 1) as Conv2d).weight.toArray();
    expect(w(1)).toEqual(w(1));
    expect(w(1)).not.toEqual(w(2));
  });

  const bad: [LayerSpec, RegExp][] = [
    [{ type: 'conv2d', outChannels: 2, kernel: 3 }, /layer 0 \(conv2d\): 'inChannels' must be a positive integer, got undefined/],
    [{ type: 'conv2d', inChannels: 1, outChannels: 2, kernel: 0 }, /layer 0 \(conv2d\): 'kernel' must be a positive integer or a \[height, width\] pair/],
    [{ type: 'conv2d', inChannels: 1, outChannels: 2, kernel: 3, padding: -1 }, /layer 0 \(conv2d\): 'padding' must be a non-negative integer/],
    [{ type: 'conv2d', inChannels: 1, outChannels: 2, kernel: [3, 3, 3] }, /layer 0 \(conv2d\): 'kernel' must be/],
    [{ type: 'conv2d', inChannels: 1, outChannels: 2, kernel: 3, dilation: 1.5 }, /layer 0 \(conv2d\): 'dilation' must be a positive integer/],
    [{ type: 'conv2d', inChannels: 1, outChannels: 2, kernel: 3, bias: 'yes' }, /layer 0 \(conv2d\): 'bias' must be true or false/],
    [{ type: 'conv2d', inChannels: 1, outChannels: 2, kernel: 3, init: 'lecun' }, /layer 0 \(conv2d\): 'init' must be one of he, xavier, zeros/],
    [{ type: 'maxPool2d' }, /layer 0 \(maxPool2d\): 'kernel' must be a positive integer/],
    [{ type: 'avgPool2d', kernel: 2, stride: 0 }, /layer 0 \(avgPool2d\): 'stride' must be a positive integer/],
    [{ type: 'reshape', shape: [1, -28, 28] }, /layer 0 \(reshape\): 'shape' must be a non-empty array of positive integers/],
    [{ type: 'dropout', rate: 1 }, /layer 0 \(dropout\): 'rate' must be a number in \[0, 1\), got 1/],
    [{ type: 'layerNorm', features: 4, eps: 0 }, /layer 0 \(layerNorm\): 'eps' must be a number in \(0, 1\]/],
    [{ type: 'batchNorm', channels: 4, momentum: 1.5 }, /layer 0 \(batchNorm\): 'momentum' must be a number in \[0, 1\], got 1.5/],
    [{ type: 'batchNorm' }, /layer 0 \(batchNorm\): 'channels' must be a positive integer/],
  ];
  for (const [spec, re] of bad) {
    it(`bad ${spec.type} spec ${JSON.stringify(spec)} is refused`, () => expect(() => build(spec)).toThrow(re));
  }

  it('shape mismatches between layers name the layer and the shapes', () => {
    const model = (layers: LayerSpec[], inputShape: number[]) => () => Sequential.fromSpec({ inputShape, layers }, 1);
    expect(model([{ type: 'conv2d', inChannels: 1, outChannels: 2, kernel: 3 }], [784]))
      .toThrow(/layer 0 \(conv2d\): conv2d: expects per-sample input \[1, height, width\] but receives \[784\] \(add a reshape layer\)/);
    expect(model([{ type: 'conv2d', inChannels: 3, outChannels: 2, kernel: 3 }], [1, 8, 8])).toThrow(/layer 0 \(conv2d\): .*\[3, height, width\]/);
    expect(model([{ type: 'reshape', shape: [1, 28, 27] }], [784])).toThrow(/layer 0 \(reshape\): reshape: cannot reshape \[784\] \(784 elements\) to \[1, 28, 27\]/);
    expect(model([{ type: 'maxPool2d', kernel: 5 }], [1, 4, 4])).toThrow(/layer 0 \(maxPool2d\): maxPool2d: kernel \[5, 5\] is larger than input \[1, 4, 4\]/);
    expect(model([{ type: 'batchNorm', channels: 4 }], [3, 2, 2])).toThrow(/layer 0 \(batchNorm\)/);
    expect(model([{ type: 'layerNorm', features: 5 }], [4])).toThrow(/layer 0 \(layerNorm\): layerNorm: expects 5 features/);
  });
});

describe('cnnSpec', () => {
  it('builds, infers shapes, and trains one step end to end', () => {
    const model = Sequential.fromSpec(cnnSpec(), 42);
    expect(model.shapes.slice(1)).toEqual([[1, 28, 28], [16, 28, 28], [16, 28, 28], [16, 14, 14], [32, 14, 14], [32, 14, 14], [32, 7, 7], [1568], [128], [128], [10]]);
    expect(model.parameterCount()).toBe(16 * 9 + 16 + 32 * 16 * 9 + 32 + 1568 * 128 + 128 + 128 * 10 + 10);
    const x = rand([4, 784], new Rng(1), 'float32');
    const tape = new Tape();
    const y = tape.run(() => model.forward(x, { training: true, seed: 1, step: 0, microBatch: 0 }));
    expect([...y.shape]).toEqual([4, 10]);
    tape.backward(tape.run(() => sum(mul(y, y))));
    for (const [name, p] of model.parameters()) expect(p.grad, name).not.toBeNull();
  });
});
