/**
 * Micro-batch mode (Sequential.microBatching, SharedWeight): deferred weight gradients and
 * reused packed weights against the plain path, on every backend. The stage runs in this mode
 * everywhere, so test/pipeline.test.ts checks the exact equality across placements.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { SharedWeight, Tape, add, linear, matmul, noGrad, sum } from '../src/autograd/index.js';
import { Sequential, getLoss, mlpSpec } from '../src/nn/index.js';
import { backend, jsBackend, setBackend, type Backend } from '../src/tensor/backend.js';
import { createNativeBackend, nativeKernels } from '../src/tensor/native/index.js';
import { Rng } from '../src/tensor/rng.js';
import { Tensor } from '../src/tensor/tensor.js';
import { createWasmBackend } from '../src/tensor/wasm/index.js';

const backends: Backend[] = [jsBackend, createWasmBackend(), ...nativeKernels().map((k) => ({ ...createNativeBackend(k), name: `native ${k}` }))];
const before = backend();
afterEach(() => setBackend(before));

function randomTensor(rng: Rng, shape: number[], scale = 1): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const d = new Float32Array(n);
  for (let i = 0; i < n; i++) d[i] = (rng.float() * 2 - 1) * scale;
  return new Tensor(d, shape);
}

const bits = (t: Tensor): Uint32Array => new Uint32Array(t.data.buffer, t.data.byteOffset, t.size);

function relative(a: Float32Array | Float64Array, b: Float32Array | Float64Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) { num += (a[i]! - b[i]!) ** 2; den += a[i]! ** 2; }
  return Math.sqrt(num / (den || 1));
}

interface Run { params: [string, Tensor][]; outputs: Tensor[]; grads: Map<string, Float32Array> }

/**
 * A few SGD steps of an MLP, each over M micro-batches (forward and backward each, in order),
 * the way a stage runs them: zeroGrad, the micro-batches, the W pass, then the update.
 */
function train(microBatching: boolean, M: number, steps = 3, hidden = [96, 64]): Run {
  const model = Sequential.fromSpec(mlpSpec(hidden, 40, 10), 5);
  model.microBatching = microBatching;
  const loss = getLoss('softmaxCrossEntropy');
  const rng = new Rng(11);
  const outputs: Tensor[] = [];
  const grads = new Map<string, Float32Array>();
  for (let step = 0; step < steps; step++) {
    const x = randomTensor(rng, [48, 40]);
    const y = Int32Array.from({ length: 48 }, () => Math.floor(rng.float() * 10));
    for (const [, p] of model.parameters()) p.zeroGrad();
    const per = 48 / M;
    for (let mb = 0; mb < M; mb++) {
      const xm = new Tensor(x.data.slice(mb * per * 40, (mb + 1) * per * 40), [per, 40]);
      const tape = new Tape();
      const out = tape.run(() => model.forward(xm, { training: true, seed: 5, step, microBatch: mb }));
      outputs.push(out);
      const l = tape.run(() => loss.compute(out, y.subarray(mb * per, (mb + 1) * per), 'sum'));
      tape.backward(l);
    }
    model.flushDeferredGrads();
    for (const [name, p] of model.parameters()) {
      grads.set(`${step}.${name}`, Float32Array.from(p.grad!.data));
      for (let i = 0; i < p.size; i++) p.data[i] = p.data[i]! - (0.05 / 48) * p.grad!.data[i]!;
    }
  }
  return { params: model.parameters(), outputs, grads };
}

describe.each(backends.map((b) => [b.name, b] as const))('micro-batch mode on %s', (_name, be) => {
  it('with one micro-batch a step gives the plain path\'s bits', () => {
    setBackend(be);
    const plain = train(false, 1);
    const shared = train(true, 1);
    for (const [i, [name, p]] of plain.params.entries()) expect(bits(shared.params[i]![1]), name).toEqual(bits(p));
  });

  it('with several, the forward outputs are the same bits (packs change no bits) and the gradients agree to 1e-6 relative', () => {
    setBackend(be);
    for (const M of [2, 4, 8]) {
      const plain = train(false, M, 1);
      const shared = train(true, M, 1);
      for (const [i, out] of plain.outputs.entries()) expect(bits(shared.outputs[i]!), `M=${M} output ${i}`).toEqual(bits(out));
      for (const [name, g] of plain.grads) expect(relative(g, shared.grads.get(name)!), `M=${M} ${name}`).toBeLessThan(1e-6);
    }
  });

  it('after a few steps the weights agree with the plain path and with M=1 to 1e-5 relative', () => {
    setBackend(be);
    const one = train(false, 1, 4);
    for (const M of [4, 8]) {
      const shared = train(true, M, 4);
      for (const [i, [name, p]] of one.params.entries()) expect(relative(p.data, shared.params[i]![1].data), `M=${M} ${name}`).toBeLessThan(1e-5);
    }
  });

  it('is reproducible: the same run gives the same bits', () => {
    setBackend(be);
    const a = train(true, 4);
    const b = train(true, 4);
    for (const [i, [name, p]] of a.params.entries()) expect(bits(b.params[i]![1]), name).toEqual(bits(p));
  });
});

describe('SharedWeight', () => {
  function setup(k = 20, n = 20): { w: Tensor; shared: SharedWeight; rng: Rng } {
    const rng = new Rng(3);
    const w = randomTensor(rng, [k, n]);
    w.requiresGrad = true;
    return { w, shared: new SharedWeight(), rng };
  }

  /** One micro-batch through x·W on its own tape: the forward output and dX. */
  function microBatch(w: Tensor, shared: SharedWeight | null, x: Tensor, mb: number): { y: Tensor; dx: Tensor } {
    const xl = new Tensor(x.data, x.shape, true);
    const tape = new Tape();
    const y = tape.run(() => (shared ? matmul(xl, w, { weight: shared, microBatch: mb }) : matmul(xl, w)));
    tape.backward(tape.run(() => sum(y)));
    return { y, dx: xl.grad! };
  }

  it('defers dW until .grad is read, then adds it as one product', () => {
    const { w, shared, rng } = setup();
    w.zeroGrad();
    const xs = [0, 1, 2].map(() => randomTensor(rng, [3, 20]));
    for (const [mb, x] of xs.entries()) microBatch(w, shared, x, mb);
    expect(shared.pendingRows).toBe(9);
    const g = w.grad!; // the read does the W pass
    expect(shared.pendingRows).toBe(0);
    // Σ over micro-batches of xᵀ·1: each column of x summed, for every output.
    for (let p = 0; p < 20; p++) {
      let want = 0;
      for (const x of xs) for (let r = 0; r < 3; r++) want += x.data[r * 20 + p]!;
      for (let j = 0; j < 20; j++) expect(g.data[p * 20 + j]).toBeCloseTo(want, 5);
    }
  });

  it('flush(through) is the W pass of the micro-batches up to `through` only, in order', () => {
    const { w, shared, rng } = setup();
    const xs = [0, 1, 2].map(() => randomTensor(rng, [2, 20]));
    w.zeroGrad();
    for (const [mb, x] of xs.entries()) microBatch(w, shared, x, mb);
    shared.flush(1);
    expect(shared.pendingRows).toBe(2);
    const { w: w2, shared: s2 } = setup();
    w2.zeroGrad();
    for (const [mb, x] of xs.slice(0, 2).entries()) microBatch(w2, s2, x, mb);
    s2.flush(1);
    // The first two micro-batches' W pass, nothing of the third yet (read past the hook).
    expect(Array.from(w.ownGrad().data)).toEqual(Array.from(w2.ownGrad().data));
    shared.flush();
    expect(shared.pendingRows).toBe(0);
  });

  it('after accumulations of one micro-batch, adds the next at once (nothing copied) into the released buffer, overwriting it', () => {
    const { w, shared, rng } = setup();
    const plainW = new Tensor(w.data, w.shape, true);
    for (let step = 0; step < 3; step++) {
      w.zeroGrad();
      plainW.zeroGrad();
      const x = randomTensor(rng, [4, 20]);
      microBatch(w, shared, x, 0);
      microBatch(plainW, null, x, 0);
      // The first step cannot know it will have one micro-batch; the later ones can.
      expect(shared.pendingRows, `step ${step}`).toBe(step === 0 ? 4 : 0);
      expect(bits(w.grad!), `step ${step}`).toEqual(bits(plainW.grad!)); // no stale sum of the last step
    }
    // A step with more micro-batches than the last: the first goes in at once, the rest wait.
    w.zeroGrad();
    plainW.zeroGrad();
    for (let mb = 0; mb < 3; mb++) {
      const x = randomTensor(rng, [4, 20]);
      microBatch(w, shared, x, mb);
      microBatch(plainW, null, x, mb);
    }
    expect(shared.pendingRows).toBe(8);
    expect(relative(plainW.grad!.data, w.grad!.data)).toBeLessThan(1e-6);
    // ... and the next step defers from its first micro-batch again.
    w.zeroGrad();
    microBatch(w, shared, randomTensor(rng, [4, 20]), 0);
    expect(shared.pendingRows).toBe(4);
  });

  it('zeroGrad drops what is pending', () => {
    const { w, shared, rng } = setup();
    w.zeroGrad();
    microBatch(w, shared, randomTensor(rng, [4, 20]), 0);
    expect(shared.pendingRows).toBe(4);
    w.zeroGrad();
    expect(shared.pendingRows).toBe(0);
    expect(w.grad).toBeNull();
  });

  it('never holds more deferred rows than the gradient has elements, and a record larger than that goes in at once', () => {
    // 6×5 = 30 elements; a row holds 6 + 5 = 11: at most 2 rows wait.
    const { w, shared, rng } = setup(6, 5);
    const plainW = new Tensor(w.data, w.shape, true);
    w.zeroGrad();
    for (let mb = 0; mb < 5; mb++) {
      const x = randomTensor(rng, [mb === 3 ? 3 : 1, 6]);
      microBatch(w, shared, x, mb);
      microBatch(plainW, null, x, mb);
      expect(shared.pendingRows).toBeLessThanOrEqual(2);
    }
    expect(relative(plainW.grad!.data, w.grad!.data)).toBeLessThan(1e-6);
  });

  it('copies what it defers: the caller may reuse its buffers', () => {
    const { w, shared, rng } = setup();
    const plainW = new Tensor(w.data, w.shape, true);
    w.zeroGrad();
    const x = randomTensor(rng, [2, 20]);
    const first = Float32Array.from(x.data);
    microBatch(w, shared, x, 0);
    microBatch(plainW, null, new Tensor(first, x.shape), 0);
    x.data.fill(7); // the data loader refills its buffer
    microBatch(w, shared, x, 1);
    microBatch(plainW, null, x, 1);
    expect(relative(plainW.grad!.data, w.grad!.data)).toBeLessThan(1e-6);
  });

  it.each(backends.map((b) => [b.name, b] as const))('%s: packs are dropped when the weight may change (a read, zeroGrad), never reused stale', (_name, be) => {
    setBackend(be);
    const { w, shared, rng } = setup(40, 33);
    const x = randomTensor(rng, [7, 40]);
    const plain = (): { y: Tensor; dx: Tensor } => microBatch(new Tensor(w.data, w.shape, true), null, x, 0);
    for (let step = 0; step < 3; step++) {
      w.zeroGrad();
      for (let mb = 0; mb < 3; mb++) {
        const got = microBatch(w, shared, x, mb); // the second micro-batch packs, the third reuses
        const want = plain();
        expect(bits(got.y), `step ${step}, micro-batch ${mb}`).toEqual(bits(want.y));
        expect(bits(got.dx)).toEqual(bits(want.dx));
      }
      void w.grad; // the optimizer reads the gradient ...
      for (let i = 0; i < w.size; i++) w.data[i] = w.data[i]! * 0.5 + 0.01; // ... and changes the weight
      // Before the next zeroGrad nothing may be reused (the read closed the accumulation).
      expect(bits(microBatch(w, shared, x, 9).y)).toEqual(bits(plain().y));
    }
  });

  it.each(backends.filter((b) => b.packed).map((b) => [b.name, b] as const))('%s: within an accumulation the pack is reused (so a weight changed mid-accumulation, against the contract, is not seen)', (_name, be) => {
    setBackend(be);
    const { w, shared, rng } = setup(40, 33);
    const x = randomTensor(rng, [7, 40]);
    w.zeroGrad();
    microBatch(w, shared, x, 0);
    const packed = microBatch(w, shared, x, 1).y; // packs W on the way
    w.data.fill(0);
    expect(bits(microBatch(w, shared, x, 2).y)).toEqual(bits(packed));
    // After an accumulation of several, the next packs from its first product on; the pack is fresh.
    void w.grad;
    w.data.fill(0.25);
    w.zeroGrad();
    w.zeroGrad(); // a second zeroGrad in a row (the stage's optimizer step, then its next step) changes nothing
    const first = microBatch(w, shared, x, 0).y;
    expect(bits(first)).toEqual(bits(microBatch(new Tensor(w.data, w.shape, true), null, x, 0).y));
    w.data.fill(0);
    expect(bits(microBatch(w, shared, x, 1).y)).toEqual(bits(first));
  });

  it('serves one weight only', () => {
    const { w, shared, rng } = setup();
    microBatch(w, shared, randomTensor(rng, [1, 20]), 0);
    const other = randomTensor(rng, [20, 20]);
    other.requiresGrad = true;
    expect(() => microBatch(other, shared, randomTensor(rng, [1, 20]), 0)).toThrow(/already serves a weight/);
  });

  it('evaluation (no tape) is the plain product and binds nothing', () => {
    const { w, shared, rng } = setup();
    w.zeroGrad();
    const x = randomTensor(rng, [3, 20]);
    const y = noGrad(() => matmul(x, w, { weight: shared, microBatch: 0 }));
    expect(bits(y)).toEqual(bits(noGrad(() => matmul(x, w))));
    expect(shared.weight).toBeNull();
  });
});

describe.each(backends.map((b) => [b.name, b] as const))('linear on %s', (_name, be) => {
  it('gives the bits of add(matmul(x, W), b), forward and backward', () => {
    setBackend(be);
    const run = (fused: boolean): Tensor[] => {
      const x = randomTensor(new Rng(1), [13, 37]);
      const w = randomTensor(new Rng(2), [37, 29]);
      const b = randomTensor(new Rng(3), [29]);
      for (const t of [x, w, b]) t.requiresGrad = true;
      const tape = new Tape();
      const y = tape.run(() => (fused ? linear(x, w, b) : add(matmul(x, w), b)));
      tape.backward(y, randomTensor(new Rng(4), [13, 29]));
      return [y, x.grad!, w.grad!, b.grad!];
    };
    const plain = run(false);
    for (const [i, t] of run(true).entries()) expect(bits(t), ['y', 'dx', 'dW', 'db'][i]).toEqual(bits(plain[i]!));
  });
});

describe('Tensor.grad with pending work', () => {
  it('a read flushes, an assignment flushes into the gradient it replaces, zeroGrad drops', () => {
    const t = Tensor.param(new Float32Array(2), [2]);
    const log: string[] = [];
    let pending = 0;
    t.pendingGrad = {
      flush: () => { if (pending > 0) { log.push(`flush ${pending}`); t.ownGrad().data[0]! += pending; pending = 0; } },
      reset: () => { log.push('reset'); pending = 0; },
    };
    pending = 1;
    expect(t.grad!.toArray()).toEqual([1, 0]);
    const old = t.grad!;
    pending = 2;
    t.grad = Tensor.from([5, 6]);
    expect(old.toArray()).toEqual([3, 0]);
    expect(t.grad.toArray()).toEqual([5, 6]);
    pending = 4;
    t.zeroGrad();
    expect(t.grad).toBeNull();
    expect(log).toEqual(['flush 1', 'flush 2', 'reset']);
  });
});
