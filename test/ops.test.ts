import { describe, expect, it } from 'vitest';
import { Tensor, Rng } from '../src/tensor/index.js';
import {
  Tape, apply, gradcheck, noGrad, opRegistry, type Domain,
  add, mul, relu, abs, sum, matmul, leakyRelu, maximum, max, softmaxCrossEntropy, reshape,
} from '../src/autograd/index.js';

function sample(shape: number[], domain: Domain, rng: Rng): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const d = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const u = rng.float();
    if (domain === 'positive') d[i] = 0.2 + 1.8 * u;
    else if (domain === 'awayFromZero') d[i] = (rng.float() < 0.5 ? -1 : 1) * (0.1 + u);
    else d[i] = 4 * u - 2;
  }
  return new Tensor(d, shape);
}

/** A seed from a case's name (FNV-1a), so its inputs do not depend on which cases ran before. */
function seedOf(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

describe('every registered op passes gradcheck', () => {
  for (const [name, { def, checks }] of opRegistry) {
    it(`${name} is checked on at least one case`, () => expect(checks.length).toBeGreaterThan(0));
    for (const c of checks) {
      const title = `${name}: ${c.label} ${JSON.stringify(c.shapes)}`;
      it(title, () => {
        const rng = new Rng(seedOf(title));
        const domains = c.shapes.map((_, i) => (Array.isArray(c.domain) ? c.domain[i] : c.domain) ?? 'any');
        const inputs = c.shapes.map((s, i) => sample(s, domains[i]!, rng));
        const attrs = typeof c.attrs === 'function' ? (c.attrs as (s: number[][]) => unknown)(c.shapes) : c.attrs;
        const r = gradcheck((...xs) => apply(def, xs, attrs), inputs);
        expect(r.worst).toBe('');
        expect(r.ok).toBe(true);
      });
    }
  }
});

const t = (values: number[], shape?: number[]) => { const x = Tensor.from(values, shape, 'float64'); x.requiresGrad = true; return x; };

describe('hand-derived gradients and tape semantics', () => {
  it('multiply swaps the inputs; add passes the gradient on', () => {
    const a = t([3]); const b = t([4]);
    const tape = new Tape();
    const y = tape.run(() => add(mul(a, b), a));
    tape.backward(y);
    expect(a.grad!.toArray()).toEqual([5]); // b + 1
    expect(b.grad!.toArray()).toEqual([3]);
  });

  it('a tensor used twice sums its gradients (the branch node)', () => {
    const x = t([2, -1]);
    const tape = new Tape();
    const y = tape.run(() => sum(mul(x, x)));
    tape.backward(y);
    expect(x.grad!.toArray()).toEqual([4, -2]);
  });

  it('gradients accumulate across backward passes until zeroGrad, and two passes agree', () => {
    const x = t([1, 2, 3]);
    const tape = new Tape();
    const y = tape.run(() => sum(mul(x, 3)));
    tape.backward(y);
    expect(x.grad!.toArray()).toEqual([3, 3, 3]);
    tape.backward(y);
    expect(x.grad!.toArray()).toEqual([6, 6, 6]);
    x.zeroGrad();
    tape.backward(y);
    expect(x.grad!.toArray()).toEqual([3, 3, 3]);
  });

  it('matmul: dX = dY·Wᵀ and dW = Xᵀ·dY', () => {
    const X = t([1, 2, 3, 4], [2, 2]);
    const W = t([5, 6, 7, 8], [2, 2]);
    const tape = new Tape();
    const y = tape.run(() => sum(matmul(X, W)));
    tape.backward(y);
    expect(X.grad!.toArray()).toEqual([11, 15, 11, 15]);
    expect(W.grad!.toArray()).toEqual([4, 4, 6, 6]);
  });

  it('subgradients at kinks: relu\'(0) = 0, abs\'(0) = 0, leaky relu\'(0) = slope, ties split evenly', () => {
    const x = t([0, 0, 0]);
    const tape = new Tape();
    const y = tape.run(() => add(add(sum(relu(x)), sum(abs(x))), sum(leakyRelu(x, 0.1))));
    tape.backward(y);
    expect(x.grad!.toArray().map((v) => Math.round(v * 1e6) / 1e6)).toEqual([0.1, 0.1, 0.1]);
    const a = t([1]); const b = t([1]);
    const tape2 = new Tape();
    tape2.backward(tape2.run(() => sum(maximum(a, b))));
    expect([a.grad!.item(), b.grad!.item()]).toEqual([0.5, 0.5]);
    const m = t([2, 2, 1]);
    const tape3 = new Tape();
    tape3.backward(tape3.run(() => max(m, 0)));
    expect(m.grad!.toArray()).toEqual([0.5, 0.5, 0]);
  });

  it('softmax cross-entropy: stable for huge logits, gradient is softmax − onehot', () => {
    const x = t([1000, 0, -1000], [1, 3]);
    const tape = new Tape();
    const loss = tape.run(() => softmaxCrossEntropy(x, Int32Array.from([0]), 'sum'));
    expect(loss.item()).toBeCloseTo(0, 10);
    tape.backward(loss);
    expect(x.grad!.toArray().map((v) => Math.round(v * 1e9) / 1e9)).toEqual([0, 0, 0]);
    expect(() => softmaxCrossEntropy(x, Int32Array.from([3]))).toThrow(/label 3 at row 0 is out of range \[0, 3\)/);
  });

  it('noGrad records nothing', () => {
    const x = t([1]);
    const tape = new Tape();
    tape.run(() => noGrad(() => mul(x, 2)));
    expect(tape.length).toBe(0);
  });

  it('a shape error names the op and both shapes', () => {
    expect(() => add(Tensor.zeros([2, 3]), Tensor.zeros([4]))).toThrow(/add: shapes \[2, 3\] and \[4\] cannot be broadcast/);
    expect(() => matmul(Tensor.zeros([2, 3]), Tensor.zeros([4, 5]))).toThrow(/matmul: inner dimensions differ, \[2, 3\] · \[4, 5\]/);
    expect(() => reshape(Tensor.zeros([2, 3]), [4])).toThrow(/reshape: cannot reshape \[2, 3\]/);
  });
});
