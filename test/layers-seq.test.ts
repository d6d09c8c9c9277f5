import { describe, expect, it } from 'vitest';
import { Tensor, Rng } from '../src/tensor/index.js';
import { Tape, gradcheck, noGrad, select, stack, concat, slice, sum, mul } from '../src/autograd/index.js';
import {
  buildLayer, Sequential, initRng, getLoss, lstmSpec, vaeSpec, runRecurrent, reparameterize, gaussianKl,
  Recurrent, Embedding, type CellKind, type LayerContext, type LayerSpec,
} from '../src/nn/index.js';

const G: Record<CellKind, number> = { rnn: 1, lstm: 4, gru: 3 };

function randn(shape: number[], rng: Rng, scale = 1, dtype: 'float32' | 'float64' = 'float64'): Tensor {
  const t = Tensor.zeros(shape, dtype);
  for (let i = 0; i < t.size; i++) t.data[i] = rng.normal() * scale;
  return t;
}

const ctxOf = (over: Partial<LayerContext> = {}): LayerContext => ({ training: true, seed: 42, step: 0, microBatch: 0, index: 0, ...over });

const build = (spec: LayerSpec, seed = 1, index = 0) => buildLayer(spec, { rng: initRng(seed, index), where: `layer ${index} (${spec.type})` });

describe('sequence ops', () => {
  it('select and stack are inverses along the time axis', () => {
    const x = randn([2, 3, 4], new Rng(1));
    const back = stack([0, 1, 2].map((t) => select(x, 1, t)), 1);
    expect(back.shape).toEqual([2, 3, 4]);
    expect(back.toArray()).toEqual(x.toArray());
    expect(concat([slice(x, -1, 0, 1), slice(x, -1, 1, 4)], -1).toArray()).toEqual(x.toArray());
  });

  it('slice errors name the range and the shape', () => {
    expect(() => slice(Tensor.zeros([2, 3]), 1, 2, 4)).toThrow(/slice: range \[2, 4\) is not within axis 1 of \[2, 3\]/);
    expect(() => concat([Tensor.zeros([2, 3]), Tensor.zeros([3, 3])], 1)).toThrow(/concat: input 1 \[3, 3\] does not match input 0 \[2, 3\]/);
  });
});

describe('recurrent cells: gradient checks through time (float64, T = 3)', () => {
  for (const kind of ['rnn', 'lstm', 'gru'] as const) {
    for (const returnSequences of [false, true]) {
      it(`${kind}, returnSequences ${returnSequences}: input and every weight`, () => {
        const rng = new Rng(kind.length * 7 + (returnSequences ? 1 : 0));
        const [n, T, F, H] = [2, 3, 3, 2];
        const inputs = [
          randn([n, T, F], rng),
          randn([F, G[kind] * H], rng, 0.6),
          randn([H, G[kind] * H], rng, 0.6),
          randn([G[kind] * H], rng, 0.3),
          randn([G[kind] * H], rng, 0.3),
        ];
        const r = gradcheck((x, weightIh, weightHh, biasIh, biasHh) =>
          runRecurrent(kind, x!, { weightIh: weightIh!, weightHh: weightHh!, biasIh: biasIh!, biasHh: biasHh! }, returnSequences), inputs);
        expect(r.worst).toBe('');
        expect(r.ok).toBe(true);
      });
    }
  }
});

/** PyTorch's formulas, written out with plain numbers. w[i][col] is weightIh stored [F, G·H]. */
function referenceRun(kind: CellKind, layer: Recurrent, x: Tensor): number[][] {
  const [n, T, F] = x.shape as [number, number, number];
  const H = layer.hidden;
  const GH = G[kind] * H;
  const wi = layer.weightIh.data; const wh = layer.weightHh.data; const bi = layer.biasIh.data; const bh = layer.biasHh.data;
  const sig = (v: number) => 1 / (1 + Math.exp(-v));
  const out: number[][] = [];
  for (let s = 0; s < n; s++) {
    let h = new Array<number>(H).fill(0);
    let c = new Array<number>(H).fill(0);
    for (let t = 0; t < T; t++) {
      const gi = new Array<number>(GH).fill(0);
      const gh = new Array<number>(GH).fill(0);
      for (let col = 0; col < GH; col++) {
        gi[col] = bi[col]!;
        gh[col] = bh[col]!;
        for (let f = 0; f < F; f++) gi[col] += x.data[(s * T + t) * F + f]! * wi[f * GH + col]!;
        for (let k = 0; k < H; k++) gh[col] += h[k]! * wh[k * GH + col]!;
      }
      const hn = new Array<number>(H);
      const cn = new Array<number>(H);
      for (let j = 0; j < H; j++) {
        if (kind === 'rnn') {
          hn[j] = Math.tanh(gi[j]! + gh[j]!);
        } else if (kind === 'lstm') {
          const a = (k: number) => gi[k * H + j]! + gh[k * H + j]!;
          const [i, f, g, o] = [sig(a(0)), sig(a(1)), Math.tanh(a(2)), sig(a(3))];
          cn[j] = f * c[j]! + i * g;
          hn[j] = o * Math.tanh(cn[j]!);
        } else {
          const r = sig(gi[j]! + gh[j]!);
          const z = sig(gi[H + j]! + gh[H + j]!);
          const nn = Math.tanh(gi[2 * H + j]! + r * gh[2 * H + j]!);
          hn[j] = (1 - z) * nn + z * h[j]!;
        }
      }
      h = hn;
      c = cn;
    }
    out.push(h);
  }
  return out;
}

describe('recurrent cells against a hand-unrolled reference (PyTorch gate order)', () => {
  for (const kind of ['rnn', 'lstm', 'gru'] as const) {
    for (const T of [1, 2]) {
      it(`${kind}: ${T} step${T > 1 ? 's' : ''}`, () => {
        const layer = build({ type: kind, inputs: 3, hidden: 4 }) as Recurrent;
        const rng = new Rng(5);
        // Random biases, so each bias block is exercised (the initial ones are 0 or 1).
        for (const b of [layer.biasIh, layer.biasHh]) for (let i = 0; i < b.size; i++) b.data[i] = rng.normal() * 0.5;
        const x = randn([2, T, 3], rng, 1, 'float32');
        const got = noGrad(() => layer.forward(x, ctxOf()));
        expect(got.shape).toEqual([2, 4]);
        const want = referenceRun(kind, layer, x).flat();
        for (let i = 0; i < want.length; i++) expect(got.data[i]).toBeCloseTo(want[i]!, 5);
      });
    }
  }

  it('returnSequences gives every hidden state, the last equal to the final state', () => {
    const spec = { type: 'gru', inputs: 3, hidden: 4, returnSequences: true };
    const seq = build(spec);
    const last = build({ ...spec, returnSequences: false });
    const x = randn([2, 5, 3], new Rng(9), 1, 'float32');
    const all = noGrad(() => seq.forward(x, ctxOf()));
    expect(all.shape).toEqual([2, 5, 4]);
    expect(seq.outputShape([5, 3])).toEqual([5, 4]);
    expect(last.outputShape([5, 3])).toEqual([4]);
    expect(noGrad(() => select(all, 1, 4)).toArray()).toEqual(noGrad(() => last.forward(x, ctxOf())).toArray());
  });

  it('initialization: seeded, LSTM forget-gate bias 1 and other biases 0', () => {
    const a = build({ type: 'lstm', inputs: 3, hidden: 4 }, 7) as Recurrent;
    const b = build({ type: 'lstm', inputs: 3, hidden: 4 }, 7) as Recurrent;
    const c = build({ type: 'lstm', inputs: 3, hidden: 4 }, 8) as Recurrent;
    expect(a.weightIh.toArray()).toEqual(b.weightIh.toArray());
    expect(a.weightHh.toArray()).not.toEqual(c.weightHh.toArray());
    expect(a.biasIh.toArray()).toEqual([0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    expect(a.biasHh.toArray().every((v) => v === 0)).toBe(true);
    expect(a.params.map(([n]) => n)).toEqual(['weightIh', 'weightHh', 'biasIh', 'biasHh']);
  });

  it('a shape error names the cell and both shapes', () => {
    const l = build({ type: 'rnn', inputs: 3, hidden: 4 });
    expect(() => l.forward(Tensor.zeros([2, 5, 2]), ctxOf())).toThrow(/rnn: expected input \[batch, time, 3\], got \[2, 5, 2\]/);
    expect(() => l.outputShape([15])).toThrow(/add a reshape layer/);
  });
});

describe('embedding', () => {
  it('looks rows up and accumulates the gradient of repeated indices', () => {
    const e = build({ type: 'embedding', vocab: 5, dim: 2 }) as Embedding;
    const x = Tensor.from([1, 3, 1, 1, 0, 4], [2, 3]);
    const tape = new Tape();
    const y = tape.run(() => e.forward(x, ctxOf()));
    expect(y.shape).toEqual([2, 3, 2]);
    expect(Array.from(y.data.subarray(2, 4))).toEqual(Array.from(e.weight.data.subarray(6, 8)));
    tape.backward(y);
    expect(e.weight.grad!.toArray()).toEqual([1, 1, 3, 3, 0, 0, 1, 1, 1, 1]);
    tape.backward(tape.run(() => sum(mul(e.forward(Tensor.from([2, 2], [1, 2]), ctxOf()), 0.5))));
    expect(e.weight.grad!.toArray()).toEqual([1, 1, 3, 3, 1, 1, 1, 1, 1, 1]);
    expect(e.outputShape([3])).toEqual([3, 2]);
  });

  it('rejects non-integer and out-of-range indices, naming the layer', () => {
    const e = build({ type: 'embedding', vocab: 5, dim: 2 });
    expect(() => e.forward(Tensor.from([1, 5], [1, 2]), ctxOf({ index: 3 }))).toThrow(/layer 3 \(embedding\): index 5 at position 1 of \[1, 2\] is not an integer in \[0, 5\)/);
    expect(() => e.forward(Tensor.from([1.5], [1, 1]), ctxOf())).toThrow(/index 1.5/);
  });

  it('feeds an lstm: embedding → lstm over token sequences', () => {
    const m = Sequential.fromSpec({
      inputShape: [6],
      layers: [{ type: 'embedding', vocab: 10, dim: 4 }, { type: 'lstm', inputs: 4, hidden: 3 }, { type: 'dense', inputs: 3, units: 2 }],
    }, 3);
    expect(m.outputShape).toEqual([2]);
    const tape = new Tape();
    const out = tape.run(() => m.forward(Tensor.from([1, 2, 3, 4, 5, 6, 6, 5, 4, 3, 2, 1], [2, 6]), ctxOf()));
    tape.backward(tape.run(() => getLoss('softmaxCrossEntropy').compute(out, Int32Array.from([0, 1]), 'sum')));
    for (const [name, p] of m.parameters()) expect(p.grad, name).not.toBeNull();
  });
});

describe('gaussianSample (reparameterization)', () => {
  const d = 3;
  const input = (n = 4) => randn([n, 2 * d], new Rng(11), 1, 'float32');

  it('is reproducible from (seed, layer, step, micro-batch), and differs when any changes', () => {
    const l = build({ type: 'gaussianSample', latent: d });
    const x = input();
    const z = (c: Partial<LayerContext>) => noGrad(() => l.forward(x, ctxOf(c))).toArray();
    expect(z({})).toEqual(z({}));
    for (const c of [{ seed: 43 }, { index: 1 }, { step: 1 }, { microBatch: 1 }]) expect(z(c)).not.toEqual(z({}));
  });

  it('z = μ + σ·ε with ε standard normal; z = μ at evaluation, with the KL term still reported', () => {
    const l = build({ type: 'gaussianSample', latent: d });
    const x = input(2000);
    const z = noGrad(() => l.forward(x, ctxOf()));
    let s = 0; let s2 = 0;
    for (let i = 0; i < 2000; i++) {
      for (let j = 0; j < d; j++) {
        const mu = x.data[i * 2 * d + j]!;
        const sigma = Math.exp(0.5 * x.data[i * 2 * d + d + j]!);
        const eps = (z.data[i * d + j]! - mu) / sigma;
        s += eps; s2 += eps * eps;
      }
    }
    const m = s / (2000 * d);
    expect(Math.abs(m)).toBeLessThan(0.06);
    expect(Math.abs(s2 / (2000 * d) - m * m - 1)).toBeLessThan(0.08);
    const aux: Tensor[] = [];
    const mu = l.forward(x, ctxOf({ training: false, auxLosses: aux }));
    expect(aux).toHaveLength(1); // the KL term is reported at evaluation too (the ELBO)
    expect(mu.shape).toEqual([2000, d]);
    for (let i = 0; i < 2000; i++) for (let j = 0; j < d; j++) expect(mu.data[i * d + j]).toBe(x.data[i * 2 * d + j]);
  });

  it('pushes KL(N(μ, σ²) ‖ N(0, 1)) summed over the batch, matching the closed form', () => {
    const l = build({ type: 'gaussianSample', latent: 2 });
    const x = Tensor.from([0.5, -1, Math.log(2), 0, 0, 0, 0, 0], [2, 4]);
    const aux: Tensor[] = [];
    l.forward(x, ctxOf({ auxLosses: aux }));
    expect(aux).toHaveLength(1);
    // ½(μ² + σ² − 1 − log σ²): (0.125 + 0.5·(2 − 1 − ln 2)) + 0.5 + 0, and the second sample is N(0, 1): 0.
    expect(aux[0]!.item()).toBeCloseTo(0.125 + 0.5 * (1 - Math.log(2)) + 0.5, 6);
    const weighted: Tensor[] = [];
    build({ type: 'gaussianSample', latent: 2, klWeight: 0.5 }).forward(x, ctxOf({ auxLosses: weighted }));
    expect(weighted[0]!.item()).toBeCloseTo(aux[0]!.item() * 0.5, 6);
    // Without an auxLosses array the layer still samples (and adds nothing).
    expect(l.forward(x, ctxOf()).shape).toEqual([2, 2]);
  });

  it('KL warm-up: β = klWeight·min(1, step / klWarmupSteps) in training only; evaluation reports the full KL at any step', () => {
    const x = Tensor.from([0.5, -1, Math.log(2), 0, 0, 0, 0, 0], [2, 4]);
    const kl = 0.125 + 0.5 * (1 - Math.log(2)) + 0.5;
    const pushed = (spec: LayerSpec, c: Partial<LayerContext>): number[] => {
      const aux: Tensor[] = [];
      noGrad(() => build(spec).forward(x, ctxOf({ auxLosses: aux, ...c })));
      return aux.map((a) => a.item());
    };
    const warm = { type: 'gaussianSample', latent: 2, klWarmupSteps: 100 };
    const l = build(warm) as unknown as { klWeightAt(step: number): number };
    expect([0, 25, 50, 99, 100, 101, 10_000].map((s) => l.klWeightAt(s))).toEqual([0, 0.25, 0.5, 0.99, 1, 1, 1]);
    expect(pushed(warm, { step: 0 })).toEqual([]); // β = 0 at step 0: nothing to add
    const mid = pushed(warm, { step: 50 });
    expect(mid).toHaveLength(1);
    expect(mid[0]).toBeCloseTo(0.5 * kl, 6);
    expect(pushed(warm, { step: 100 })[0]).toBeCloseTo(kl, 6);
    expect(pushed(warm, { step: 5000 })[0]).toBeCloseTo(kl, 6);
    // Scaled by klWeight: β rises to klWeight.
    expect(pushed({ ...warm, klWeight: 0.5 }, { step: 25 })[0]).toBeCloseTo(0.125 * kl, 6);
    // Evaluation: the full KL (the negative ELBO), at step 0 as in mid warm-up.
    for (const step of [0, 50]) {
      const ev = pushed(warm, { training: false, step });
      expect(ev).toHaveLength(1);
      expect(ev[0]).toBeCloseTo(kl, 6);
    }
    // β depends on the step only, never on the micro-batch or the layer's index; ε is unchanged by the warm-up.
    expect(pushed(warm, { step: 50, microBatch: 3, index: 7 })[0]).toBeCloseTo(mid[0]!, 12);
    const z = (spec: LayerSpec) => noGrad(() => build(spec).forward(x, ctxOf({ step: 30 }))).toArray();
    expect(z(warm)).toEqual(z({ type: 'gaussianSample', latent: 2 }));
  });

  it('gradients reach μ and log σ² through z (fixed ε) and through the KL term', () => {
    const rng = new Rng(4);
    const eps = randn([3, d], rng);
    const x = randn([3, 2 * d], rng, 0.8);
    const r1 = gradcheck((v) => reparameterize(v!, eps), [x]);
    expect(r1.worst).toBe('');
    const r2 = gradcheck((v) => gaussianKl(v!, d), [x]);
    expect(r2.worst).toBe('');
    // By hand: dz/dμ = 1, dz/dlogσ² = ½σε.
    const xs = new Tensor(x.data.slice(), x.shape, true);
    const tape = new Tape();
    tape.backward(tape.run(() => sum(reparameterize(xs, eps))));
    expect(xs.grad!.data[0]).toBeCloseTo(1, 12);
    expect(xs.grad!.data[d]).toBeCloseTo(0.5 * Math.exp(0.5 * x.data[d]!) * eps.data[0]!, 12);
  });
});

describe('specs: round trips and errors', () => {
  const specs: LayerSpec[] = [
    { type: 'embedding', vocab: 7, dim: 3 },
    { type: 'rnn', inputs: 3, hidden: 4, returnSequences: true, init: 'he' },
    { type: 'lstm', inputs: 3, hidden: 4, returnSequences: false, init: 'xavier', forgetBias: 0.5 },
    { type: 'gru', inputs: 3, hidden: 4, returnSequences: false, init: 'xavier' },
    { type: 'gaussianSample', latent: 4, klWeight: 0.25, klWarmupSteps: 0 },
    { type: 'gaussianSample', latent: 4, klWeight: 1, klWarmupSteps: 625 },
  ];
  for (const spec of specs) {
    it(`${JSON.stringify(spec)}: spec → layer → JSON → layer gives the same spec and weights`, () => {
      const a = build(spec, 5, 2);
      expect(a.toSpec()).toEqual(spec);
      const b = build(JSON.parse(JSON.stringify(a.toSpec())) as LayerSpec, 5, 2);
      expect(b.toSpec()).toEqual(a.toSpec());
      expect(b.params.map(([n, t]) => [n, t.toArray()])).toEqual(a.params.map(([n, t]) => [n, t.toArray()]));
    });
  }

  it('defaults fill in and show in the spec', () => {
    expect(build({ type: 'lstm', inputs: 2, hidden: 3 }).toSpec()).toEqual({ type: 'lstm', inputs: 2, hidden: 3, returnSequences: false, init: 'xavier', forgetBias: 1 });
    expect(build({ type: 'gaussianSample', latent: 2 }).toSpec()).toEqual({ type: 'gaussianSample', latent: 2, klWeight: 1, klWarmupSteps: 0 });
  });

  const bad: [LayerSpec, RegExp][] = [
    [{ type: 'lstm', inputs: 3, hidden: 0 }, /layer 1 \(lstm\): 'hidden' must be a positive integer, got 0/],
    [{ type: 'gru', hidden: 4 }, /layer 1 \(gru\): 'inputs' must be a positive integer, got undefined/],
    [{ type: 'rnn', inputs: 3, hidden: 4, returnSequences: 'yes' }, /layer 1 \(rnn\): 'returnSequences' must be true or false, got "yes"/],
    [{ type: 'rnn', inputs: 3, hidden: 4, init: 'zeros' }, /layer 1 \(rnn\): 'init' must be one of xavier, he, got "zeros"/],
    [{ type: 'lstm', inputs: 3, hidden: 4, forgetBias: 'one' }, /layer 1 \(lstm\): 'forgetBias' must be a finite number/],
    [{ type: 'embedding', vocab: 2.5, dim: 3 }, /layer 1 \(embedding\): 'vocab' must be a positive integer, got 2.5/],
    [{ type: 'embedding', vocab: 4 }, /layer 1 \(embedding\): 'dim' must be a positive integer/],
    [{ type: 'gaussianSample', latent: -1 }, /layer 1 \(gaussianSample\): 'latent' must be a positive integer, got -1/],
    [{ type: 'gaussianSample', latent: 2, klWeight: -1 }, /layer 1 \(gaussianSample\): 'klWeight' must be a non-negative number, got -1/],
    [{ type: 'gaussianSample', latent: 2, klWarmupSteps: -5 }, /layer 1 \(gaussianSample\): 'klWarmupSteps' must be a non-negative integer, got -5/],
    [{ type: 'gaussianSample', latent: 2, klWarmupSteps: 2.5 }, /layer 1 \(gaussianSample\): 'klWarmupSteps' must be a non-negative integer, got 2.5/],
    [{ type: 'gaussianSample', latent: 2, klWarmupSteps: '100' }, /layer 1 \(gaussianSample\): 'klWarmupSteps' must be a non-negative integer, got "100"/],
  ];
  for (const [spec, message] of bad) {
    it(`rejects ${JSON.stringify(spec)}`, () => {
      expect(() => build(spec, 1, 1)).toThrow(message);
    });
  }

  it('shape mismatches between layers name the layer and the shapes', () => {
    const spec = lstmSpec();
    spec.layers[1] = { type: 'lstm', inputs: 20, hidden: 8 };
    expect(() => Sequential.fromSpec(spec, 1)).toThrow(/layer 1 \(lstm\): lstm: expects \[time, 20\] per sample but receives \[28, 28\]/);
    const v = vaeSpec();
    v.layers[3] = { type: 'gaussianSample', latent: 8 };
    expect(() => Sequential.fromSpec(v, 1)).toThrow(/layer 3 \(gaussianSample\): gaussianSample: expects 16 inputs per sample/);
  });
});

describe('built-in sequence models', () => {
  it('lstmSpec: [n, 784] → [n, 10], gradients for every parameter', () => {
    const m = Sequential.fromSpec(lstmSpec(), 42);
    expect(m.shapes).toEqual([[784], [28, 28], [128], [10]]);
    const x = randn([3, 784], new Rng(2), 1, 'float32');
    const tape = new Tape();
    const out = tape.run(() => m.forward(x, { training: true, seed: 42, step: 0, microBatch: 0 }));
    expect(out.shape).toEqual([3, 10]);
    tape.backward(tape.run(() => getLoss('softmaxCrossEntropy').compute(out, Int32Array.from([1, 2, 3]), 'sum')));
    for (const [name, p] of m.parameters()) {
      expect(p.grad, name).not.toBeNull();
      expect(p.grad!.toArray().every(Number.isFinite), name).toBe(true);
    }
  });

  it('vaeSpec: bce against the inputs, the KL term in auxLosses, every parameter gets a gradient', () => {
    const spec = vaeSpec();
    expect(spec.autoencoder).toBe(true);
    expect(spec.loss).toBe('bce');
    expect(spec.layers[3]).toEqual({ type: 'gaussianSample', latent: 16, klWeight: 1, klWarmupSteps: 625 });
    const m = Sequential.fromSpec(spec, 42);
    expect(m.outputShape).toEqual([784]);
    const x = Tensor.zeros([2, 784]);
    for (let i = 0; i < x.size; i++) x.data[i] = (i % 7) / 6;
    const aux: Tensor[] = [];
    const tape = new Tape();
    // Past the KL warm-up (625 steps) the full KL term is in the objective.
    const out = tape.run(() => m.forward(x, { training: true, seed: 1, step: 625, microBatch: 0, auxLosses: aux }));
    const loss = tape.run(() => getLoss('bce').compute(out, x, 'sum'));
    expect(aux).toHaveLength(1);
    expect(aux[0]!.item()).toBeGreaterThan(0);
    tape.backwardFrom([[loss, undefined], [aux[0]!, undefined]]);
    for (const [name, p] of m.parameters()) expect(p.grad, name).not.toBeNull();
  });
});
