import { describe, expect, it } from 'vitest';
import {
  clipScale, createLrSchedule, createOptimizer, lineSearchOptions, minimizeCG, minimizeLBFGS, minimizeNewton,
  minimizeNewtonCG, optimizers, strongWolfe, sumOfSquares, Evaluator,
  type LrScheduleSpec, type Objective, type OptimizerSpec, type OptimizerState,
} from '../src/optim/index.js';

// ---------------------------------------------------------------------------------------
// First-order optimizers on loss Σx² (gradient 2x), checked against the PyTorch formulas
// written out by hand, in float64, for a 3-element parameter.

const X0 = [1, -2, 0.5];

/** Runs `steps` optimizer steps on Σx² and returns the parameter after each step. */
function run(spec: OptimizerSpec, steps: number, gradScale = 1): number[][] {
  const opt = createOptimizer(spec);
  const value = Float32Array.from(X0);
  const out: number[][] = [];
  for (let t = 0; t < steps; t++) {
    const grad = value.map((v) => 2 * v);
    opt.step([{ name: 'w', value, grad }], { gradScale });
    out.push(Array.from(value));
  }
  return out;
}

function expectClose(actual: number[][], expected: number[][]): void {
  expect(actual.length).toBe(expected.length);
  for (let t = 0; t < expected.length; t++) {
    for (let i = 0; i < expected[t]!.length; i++) {
      const e = expected[t]![i]!;
      expect(Math.abs(actual[t]![i]! - e), `step ${t + 1}, element ${i}: ${actual[t]![i]} vs ${e}`).toBeLessThanOrEqual(1e-6 * Math.max(1, Math.abs(e)));
    }
  }
}

describe('element-wise optimizers: hand-derived values after one and two steps', () => {
  it('sgd: x ← x − lr·(2x + λx)', () => {
    const lr = 0.1, wd = 0.01;
    expectClose(run({ type: 'sgd', lr }, 2), [[0.8, -1.6, 0.4], [0.64, -1.28, 0.32]]);
    const x1 = X0.map((x) => x - lr * (2 * x + wd * x));
    const x2 = x1.map((x) => x - lr * (2 * x + wd * x));
    expectClose(run({ type: 'sgd', lr, weightDecay: wd }, 2), [x1, x2]);
  });

  it('gradScale multiplies the gradient before the update', () => {
    expectClose(run({ type: 'sgd', lr: 0.1 }, 1, 0.5), [[0.9, -1.8, 0.45]]);
  });

  it('momentum: b₁ = g₁, b₂ = μb₁ + (1 − τ)g₂, x ← x − lr·b', () => {
    const lr = 0.1, mu = 0.9, tau = 0.25, wd = 0.1;
    const g1 = X0.map((x) => 2 * x + wd * x);
    const b1 = g1; // PyTorch: the buffer starts at the first gradient, undampened
    const x1 = X0.map((x, i) => x - lr * b1[i]!);
    const g2 = x1.map((x) => 2 * x + wd * x);
    const b2 = b1.map((b, i) => mu * b + (1 - tau) * g2[i]!);
    const x2 = x1.map((x, i) => x - lr * b2[i]!);
    expectClose(run({ type: 'momentum', lr, momentum: mu, dampening: tau, weightDecay: wd }, 2), [x1, x2]);
    // After one step momentum equals plain SGD.
    expectClose(run({ type: 'momentum', lr: 0.1 }, 1), [[0.8, -1.6, 0.4]]);
  });

  it('nesterov: x ← x − lr·(g + μb)', () => {
    const lr = 0.05, mu = 0.8;
    const g1 = X0.map((x) => 2 * x);
    const b1 = g1;
    const x1 = X0.map((x, i) => x - lr * (g1[i]! + mu * b1[i]!));
    const g2 = x1.map((x) => 2 * x);
    const b2 = b1.map((b, i) => mu * b + g2[i]!);
    const x2 = x1.map((x, i) => x - lr * (g2[i]! + mu * b2[i]!));
    expectClose(run({ type: 'nesterov', lr, momentum: mu }, 2), [x1, x2]);
    expectClose(run({ type: 'momentum', lr, momentum: mu, nesterov: true }, 2), [x1, x2]);
  });

  const adamRef = (lr: number, b1: number, b2: number, eps: number, wd: number, decoupled: boolean): number[][] => {
    let x = X0.slice(), m = [0, 0, 0], v = [0, 0, 0];
    const out: number[][] = [];
    for (let t = 1; t <= 2; t++) {
      const g = x.map((xi) => 2 * xi + (decoupled ? 0 : wd * xi));
      if (decoupled) x = x.map((xi) => xi * (1 - lr * wd));
      m = m.map((mi, i) => b1 * mi + (1 - b1) * g[i]!);
      v = v.map((vi, i) => b2 * vi + (1 - b2) * g[i]! * g[i]!);
      const bc1 = 1 - b1 ** t, bc2 = 1 - b2 ** t;
      x = x.map((xi, i) => xi - (lr / bc1) * m[i]! / (Math.sqrt(v[i]!) / Math.sqrt(bc2) + eps));
      out.push(x);
    }
    return out;
  };

  it('adam: bias-corrected moments; the first step is ≈ lr·sign(g)', () => {
    const got = run({ type: 'adam', lr: 0.01 }, 2);
    expectClose([got[0]!], [[0.99, -1.99, 0.49]]);
    expectClose(got, adamRef(0.01, 0.9, 0.999, 1e-8, 0, false));
    expectClose(run({ type: 'adam', lr: 0.1, beta1: 0.5, beta2: 0.9, eps: 1e-3, weightDecay: 0.2 }, 2), adamRef(0.1, 0.5, 0.9, 1e-3, 0.2, false));
  });

  it('adamw: decoupled weight decay x ← x(1 − lr·λ) before the Adam step', () => {
    expectClose(run({ type: 'adamw', lr: 0.1, weightDecay: 0.5 }, 2), adamRef(0.1, 0.9, 0.999, 1e-8, 0.5, true));
    expectClose(run({ type: 'adamw', lr: 0.01 }, 2), adamRef(0.01, 0.9, 0.999, 1e-8, 0.01, true)); // default λ = 0.01
  });

  const rmsRef = (lr: number, alpha: number, eps: number, mu: number, centered: boolean): number[][] => {
    let x = X0.slice(), v = [0, 0, 0], a = [0, 0, 0], b = [0, 0, 0];
    const out: number[][] = [];
    for (let t = 1; t <= 2; t++) {
      const g = x.map((xi) => 2 * xi);
      v = v.map((vi, i) => alpha * vi + (1 - alpha) * g[i]! ** 2);
      a = a.map((ai, i) => alpha * ai + (1 - alpha) * g[i]!);
      const d = v.map((vi, i) => Math.sqrt(centered ? vi - a[i]! ** 2 : vi) + eps);
      if (mu > 0) {
        b = b.map((bi, i) => mu * bi + g[i]! / d[i]!);
        x = x.map((xi, i) => xi - lr * b[i]!);
      } else {
        x = x.map((xi, i) => xi - lr * g[i]! / d[i]!);
      }
      out.push(x);
    }
    return out;
  };

  it('rmsprop: plain, centered, with momentum', () => {
    // One plain step: v = (1 − α)g², x ← x − lr·g/(√v + ε) = x − lr·sign(g)/√(1 − α).
    expectClose([run({ type: 'rmsprop', lr: 0.01 }, 1)[0]!], [X0.map((x) => x - 0.01 * Math.sign(x) / Math.sqrt(0.01))]);
    expectClose(run({ type: 'rmsprop', lr: 0.01 }, 2), rmsRef(0.01, 0.99, 1e-8, 0, false));
    expectClose(run({ type: 'rmsprop', lr: 0.01, alpha: 0.9, eps: 1e-4, centered: true }, 2), rmsRef(0.01, 0.9, 1e-4, 0, true));
    expectClose(run({ type: 'rmsprop', lr: 0.01, alpha: 0.9, momentum: 0.5, centered: true }, 2), rmsRef(0.01, 0.9, 1e-8, 0.5, true));
  });
});

describe('optimizer validation', () => {
  const cases: [OptimizerSpec, string][] = [
    [{ type: 'adam', lr: 1e-3, beta1: 1.5 }, 'adam.beta1 must be in [0, 1), got 1.5'],
    [{ type: 'adamw', lr: 1e-3, beta2: -0.1 }, 'adamw.beta2 must be in [0, 1), got -0.1'],
    [{ type: 'adam', lr: 1e-3, eps: 0 }, 'adam.eps must be a positive number, got 0'],
    [{ type: 'adam', lr: 1e-3, amsgrad: 'yes' }, 'adam.amsgrad must be true or false, got "yes"'],
    [{ type: 'adam', lr: 1e-3, betas1: 0.9 }, "adam has no hyperparameter 'betas1'"],
    [{ type: 'momentum', lr: 0.1, momentum: 1 }, 'momentum.momentum must be in [0, 1), got 1'],
    [{ type: 'nesterov', lr: 0.1, dampening: 0.5 }, 'Nesterov momentum needs momentum > 0 and dampening = 0'],
    [{ type: 'sgd', lr: 0.1, weightDecay: -1 }, 'sgd.weightDecay must be a non-negative number, got -1'],
    [{ type: 'rmsprop', lr: 0.1, alpha: 1 }, 'rmsprop.alpha must be in [0, 1), got 1'],
    [{ type: 'rmsprop', lr: 0.1, centered: 1 }, 'rmsprop.centered must be true or false, got 1'],
    [{ type: 'adam', lr: 0 }, 'optimizer.lr must be a positive number, got 0'],
    [{ type: 'lion', lr: 0.1 }, "unknown optimizer 'lion'; known optimizers: sgd, momentum, nesterov, adam, adamw, rmsprop"],
    [{ type: 'toString', lr: 0.1 }, "unknown optimizer 'toString'"],
  ];
  for (const [spec, message] of cases) {
    it(`${JSON.stringify(spec)} → ${message}`, () => {
      expect(() => createOptimizer(spec)).toThrow(message);
    });
  }

  it('a gradient of the wrong length names the parameter', () => {
    const opt = createOptimizer({ type: 'adam', lr: 0.1 });
    expect(() => opt.step([{ name: 'dense.w', value: new Float32Array(3), grad: new Float32Array(2) }])).toThrow('gradient of dense.w has 2 elements, the parameter 3');
  });
});

describe('optimizer state round trip: continuing from a restored state equals not stopping', () => {
  const specs: Record<string, OptimizerSpec> = {
    sgd: { type: 'sgd', lr: 0.05, weightDecay: 0.01 },
    momentum: { type: 'momentum', lr: 0.05, momentum: 0.9, dampening: 0.1 },
    nesterov: { type: 'nesterov', lr: 0.05 },
    adam: { type: 'adam', lr: 0.05, amsgrad: true },
    adamw: { type: 'adamw', lr: 0.05 },
    rmsprop: { type: 'rmsprop', lr: 0.01, centered: true, momentum: 0.5 },
  };
  it('covers every registered optimizer', () => {
    expect(Object.keys(specs).sort()).toEqual(Object.keys(optimizers).sort());
  });
  const params = () => [
    { name: 'a', value: Float32Array.of(0.3, -1.2, 2) },
    { name: 'b', value: Float32Array.of(0.7, 0.1) },
  ];
  // A non-quadratic loss so that every slot matters: Σ x⁴/4 + sin x, gradient x³ + cos x.
  const stepAll = (opt: ReturnType<typeof createOptimizer>, ps: ReturnType<typeof params>, lr: number) =>
    opt.step(ps.map((p) => ({ ...p, grad: p.value.map((x) => x ** 3 + Math.cos(x)) })), { lr, gradScale: 0.5 });

  for (const [name, spec] of Object.entries(specs)) {
    it(name, () => {
      const lrAt = (t: number) => spec.lr * (1 - t / 10);
      const straight = createOptimizer(spec), pa = params();
      for (let t = 0; t < 6; t++) stepAll(straight, pa, lrAt(t));

      const first = createOptimizer(spec), pb = params();
      for (let t = 0; t < 3; t++) stepAll(first, pb, lrAt(t));
      // Through plain arrays, as a checkpoint file or the wire would carry it.
      const saved = JSON.parse(JSON.stringify(first.getState(), (_k, v) => (v instanceof Float32Array ? Array.from(v) : v))) as OptimizerState;
      expect(saved.t).toBe(3);
      const resumed = createOptimizer(spec);
      resumed.setState(saved);
      for (let t = 3; t < 6; t++) stepAll(resumed, pb, lrAt(t));

      for (let i = 0; i < pa.length; i++) expect(Array.from(pb[i]!.value)).toEqual(Array.from(pa[i]!.value));
      expect(resumed.getState()).toEqual(straight.getState());
    });
  }

  it('refuses the state of another optimizer', () => {
    const s = createOptimizer({ type: 'adam', lr: 0.1 }).getState();
    expect(() => createOptimizer({ type: 'sgd', lr: 0.1 }).setState(s)).toThrow("optimizer state is for 'adam', not 'sgd'");
  });
});

// ---------------------------------------------------------------------------------------

describe('learning-rate schedules', () => {
  const at = (spec: LrScheduleSpec, steps: number[], spe = 10) => steps.map((s) => createLrSchedule(spec)(s, spe));

  it('constant, step, exponential', () => {
    expect(at({ type: 'constant', lr: 0.1 }, [0, 5, 1000])).toEqual([0.1, 0.1, 0.1]);
    // 10 steps per epoch, ×0.5 every 2 epochs: steps 0–19 epoch 0–1, 20–39 epoch 2–3, ...
    expect(at({ type: 'step', lr: 0.1, everyEpochs: 2, gamma: 0.5 }, [0, 19, 20, 39, 40])).toEqual([0.1, 0.1, 0.05, 0.05, 0.025]);
    const e = at({ type: 'exponential', lr: 1, gamma: 0.9 }, [0, 9, 10, 25]);
    expect(e[0]).toBe(1); expect(e[1]).toBe(1); expect(e[2]).toBeCloseTo(0.9, 15); expect(e[3]).toBeCloseTo(0.81, 15);
  });

  it('cosine from lr to minLr over totalSteps, then minLr', () => {
    const c = at({ type: 'cosine', lr: 1, minLr: 0.1, totalSteps: 100 }, [0, 50, 100, 150, 25]);
    expect(c[0]).toBe(1);
    expect(c[1]).toBeCloseTo(0.55, 14);
    expect(c[2]).toBeCloseTo(0.1, 14);
    expect(c[3]).toBeCloseTo(0.1, 14);
    expect(c[4]).toBeCloseTo(0.1 + 0.9 * (1 + Math.cos(Math.PI / 4)) / 2, 14);
  });

  it('linear warm-up wraps another schedule (PyTorch LinearLR factor)', () => {
    const spec: LrScheduleSpec = { type: 'warmup', warmupSteps: 4, startFactor: 0.2, schedule: { type: 'cosine', lr: 1, totalSteps: 100 } };
    const inner = createLrSchedule(spec.schedule);
    const w = at(spec, [0, 1, 2, 4, 50]);
    expect(w[0]).toBeCloseTo(0.2 * inner(0, 10), 15);
    expect(w[1]).toBeCloseTo(0.4 * inner(1, 10), 15);
    expect(w[2]).toBeCloseTo(0.6 * inner(2, 10), 15);
    expect(w[3]).toBe(inner(4, 10));
    expect(w[4]).toBeCloseTo(0.5, 14);
    expect(at({ type: 'warmup', warmupSteps: 3, schedule: { type: 'constant', lr: 0.3 } }, [0])[0]).toBeCloseTo(0.1, 15); // default 1/3
  });

  it('validates specs and arguments', () => {
    const bad: [unknown, string][] = [
      [{ type: 'step', lr: 0.1, everyEpochs: 0, gamma: 0.5 }, 'schedule step.everyEpochs must be a positive integer, got 0'],
      [{ type: 'exponential', lr: 0.1, gamma: -1 }, 'schedule exponential.gamma must be a positive number, got -1'],
      [{ type: 'cosine', lr: 0.1, minLr: 0.2, totalSteps: 10 }, 'schedule cosine.minLr must be in [0, lr = 0.1], got 0.2'],
      [{ type: 'cosine', lr: 0.1 }, 'schedule cosine.totalSteps must be a positive integer, got undefined'],
      [{ type: 'constant', lr: 0.1, gamma: 2 }, "schedule constant has no option 'gamma'"],
      [{ type: 'warmup', warmupSteps: 5, schedule: { type: 'linear' } }, 'unknown learning-rate schedule "linear"; known schedules: constant, step, exponential, cosine, warmup'],
      [{ type: 'warmup', warmupSteps: 5, startFactor: 2, schedule: { type: 'constant', lr: 1 } }, 'schedule warmup.startFactor must be in [0, 1], got 2'],
    ];
    for (const [spec, message] of bad) expect(() => createLrSchedule(spec as LrScheduleSpec)).toThrow(message);
    const f = createLrSchedule({ type: 'constant', lr: 1 });
    expect(() => f(-1, 10)).toThrow('schedule constant: step must be a non-negative integer, got -1');
    expect(() => f(0, 0)).toThrow('schedule constant: stepsPerEpoch must be a positive integer, got 0');
  });
});

describe('global-norm clipping', () => {
  it('returns min(1, maxNorm / (norm + 1e-6)) from the summed squares of every actor', () => {
    const actors = [Float32Array.of(3, 0), Float32Array.of(0, 4)];
    const total = actors.map(sumOfSquares).reduce((a, b) => a + b, 0);
    expect(total).toBe(25);
    expect(clipScale(total, 1)).toBeCloseTo(1 / (5 + 1e-6), 15);
    expect(clipScale(total, 10)).toBe(1);
    expect(clipScale(0, 1)).toBe(1);
  });
  it('throws on a non-finite norm or a bad maxNorm', () => {
    expect(() => clipScale(NaN, 1)).toThrow('clip: the gradient norm is not finite (sum of squares NaN)');
    expect(() => clipScale(Infinity, 1)).toThrow('not finite');
    expect(() => clipScale(1, 0)).toThrow('clip: maxNorm must be a positive number, got 0');
    expect(() => clipScale(-1, 1)).toThrow('must be non-negative');
  });
});

// ---------------------------------------------------------------------------------------
// Full-batch methods.

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * ½(x − x*)ᵀA(x − x*) with A = Q·diag(λ)·Qᵀ, λ evenly spaced in [1, cond], Q a random
 * orthogonal matrix. (With λ log-spaced, clustered at the bottom, even textbook linear CG
 * is still at ‖g‖ ≈ 1e-5 after n = 10 float64 iterations: lost orthogonality, not the method.) Written about x* (rather than ½xᵀAx − bᵀx) so that the loss keeps its
 * relative precision all the way down; its gradient is A(x − x*).
 */
function quadratic(n: number, cond: number, seed: number): Objective & { A: Float64Array; xStar: Float64Array } {
  const r = rng(seed);
  const Q: Float64Array[] = [];
  for (let j = 0; j < n; j++) {
    const q = Float64Array.from({ length: n }, () => r() - 0.5);
    for (const p of Q) { const c = q.reduce((s, v, i) => s + v * p[i]!, 0); for (let i = 0; i < n; i++) q[i] = q[i]! - c * p[i]!; }
    const nq = Math.hypot(...q);
    Q.push(q.map((v) => v / nq));
  }
  const lam = Array.from({ length: n }, (_, k) => 1 + (cond - 1) * k / (n - 1));
  const A = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) A[i * n + j] = lam.reduce((s, l, k) => s + l * Q[k]![i]! * Q[k]![j]!, 0);
  const xStar = Float64Array.from({ length: n }, () => r() * 2 - 1);
  return {
    size: n, A, xStar,
    async evaluate(x) {
      const grad = new Float64Array(n);
      let loss = 0;
      for (let i = 0; i < n; i++) {
        let ae = 0;
        for (let j = 0; j < n; j++) ae += A[i * n + j]! * (x[j]! - xStar[j]!);
        grad[i] = ae;
        loss += 0.5 * (x[i]! - xStar[i]!) * ae;
      }
      return { loss, grad };
    },
  };
}

/** Chained Rosenbrock Σ 100(x_{i+1} − x_i²)² + (1 − x_i)², minimum 0 at all ones. */
function rosenbrock(n: number): Objective {
  return {
    size: n,
    async evaluate(x) {
      let loss = 0;
      const grad = new Float64Array(n);
      for (let i = 0; i < n - 1; i++) {
        const a = x[i + 1]! - x[i]! * x[i]!, c = 1 - x[i]!;
        loss += 100 * a * a + c * c;
        grad[i] = grad[i]! - 400 * a * x[i]! - 2 * c;
        grad[i + 1] = grad[i + 1]! + 200 * a;
      }
      return { loss, grad };
    },
  };
}

/** L2-regularized logistic regression on a small seeded synthetic set (strictly convex). */
function logistic(): Objective {
  const r = rng(7), m = 60, d = 4, mu = 0.05;
  const X: number[][] = [], y: number[] = [];
  const wTrue = [1.5, -2, 0.5, 0.3];
  for (let k = 0; k < m; k++) {
    const xk = [1, r() * 4 - 2, r() * 4 - 2, r() * 4 - 2];
    const z = xk.reduce((s, v, i) => s + v * wTrue[i]!, 0);
    X.push(xk);
    y.push(r() < 1 / (1 + Math.exp(-z)) ? 1 : -1);
  }
  return {
    size: d,
    async evaluate(w) {
      let loss = 0;
      const grad = new Float64Array(d);
      for (let k = 0; k < m; k++) {
        const z = y[k]! * X[k]!.reduce((s, v, i) => s + v * w[i]!, 0);
        loss += Math.log1p(Math.exp(-z)) / m;
        const s = -y[k]! / (1 + Math.exp(z)) / m;
        for (let i = 0; i < d; i++) grad[i] = grad[i]! + s * X[k]![i]!;
      }
      for (let i = 0; i < d; i++) { loss += 0.5 * mu * w[i]! ** 2; grad[i] = grad[i]! + mu * w[i]!; }
      return { loss, grad };
    },
  };
}

const norm = (g: Float64Array) => Math.hypot(...g);
const maxErrFromOnes = (x: Float64Array) => Math.max(...Array.from(x, (v) => Math.abs(v - 1)));

/** Records every evaluation, to check what the minimizers accepted. */
function instrumented(obj: Objective): Objective & { losses: number[] } {
  const losses: number[] = [];
  return { size: obj.size, losses, async evaluate(x) { const r = await obj.evaluate(x); losses.push(r.loss); return r; } };
}

function expectNonIncreasing(history: number[]): void {
  for (let k = 1; k < history.length; k++) expect(history[k], `iteration ${k}`).toBeLessThanOrEqual(history[k - 1]!);
}

describe('full-batch: conjugate gradient', () => {
  for (const variant of ['PR+', 'FR'] as const) {
    it(`${variant} minimizes a 10-D SPD quadratic (condition 100) to ‖g‖ ≤ 1e-8 in at most 10 iterations`, async () => {
      const q = quadratic(10, 100, 3);
      // Finite termination needs exact line searches: a tight c2 (the interpolation is exact on a quadratic).
      const r = await minimizeCG(q, new Float64Array(10), { variant, maxIter: 10, tol: 1e-8, lineSearch: { c1: 1e-7, c2: 1e-6 } });
      expect(r.converged).toBe(true);
      expect(r.iterations).toBeLessThanOrEqual(10);
      expect(norm((await q.evaluate(r.x)).grad)).toBeLessThanOrEqual(1e-8);
      expectNonIncreasing(r.history);
    });
  }

  it('with the default line search it still converges on the quadratic', async () => {
    const r = await minimizeCG(quadratic(10, 100, 3), new Float64Array(10), { tol: 1e-8, maxIter: 200 });
    expect(r.converged).toBe(true);
  });

  it('validates its options', async () => {
    const q = quadratic(3, 10, 1);
    await expect(minimizeCG(q, new Float64Array(3), { variant: 'HS' as 'FR' })).rejects.toThrow("cg: options.variant must be 'PR+' or 'FR', got \"HS\"");
    await expect(minimizeCG(q, new Float64Array(2))).rejects.toThrow('cg: x0 must be a Float64Array of objective.size = 3 elements, got Float64Array of 2');
    await expect(minimizeCG(q, new Float64Array(3), { lineSearch: { c1: 0.5, c2: 0.1 } })).rejects.toThrow('cg: line search needs 0 < c1 < c2 < 1');
  });
});

describe('full-batch: Newton', () => {
  it('exact Newton converges quadratically on L2-regularized logistic regression', async () => {
    const obj = logistic();
    const star = await minimizeNewton(obj, new Float64Array(4), { tol: 1e-12 });
    expect(star.converged).toBe(true);
    const iterates: Float64Array[] = [new Float64Array(4)];
    const r = await minimizeNewton(obj, new Float64Array(4), { tol: 1e-12, onIteration: ({ x }) => { iterates.push(Float64Array.from(x)); } });
    expect(r.converged).toBe(true);
    expectNonIncreasing(r.history);
    const err = iterates.map((x) => Math.max(...Array.from(x, (v, i) => Math.abs(v - star.x[i]!))));
    // Near the optimum the error at least squares each iteration (e_{k+1} ≤ e_k², with
    // the constant of this problem being < 1), until it hits rounding.
    let checked = 0;
    for (let k = 0; k + 1 < err.length; k++) {
      if (err[k]! < 0.1 && err[k]! > 1e-7) {
        expect(err[k + 1], `e${k + 1} = ${err[k + 1]} vs e${k}² = ${err[k]! ** 2}`).toBeLessThanOrEqual(err[k]! ** 2);
        checked++;
      }
    }
    expect(checked).toBeGreaterThanOrEqual(2);
    expect(r.iterations).toBeLessThanOrEqual(8);
  });

  it('exact Newton on Rosenbrock 2-D, through indefinite regions', async () => {
    const r = await minimizeNewton(rosenbrock(2), Float64Array.of(-1.2, 1), { tol: 1e-9, maxIter: 200 });
    expect(r.converged).toBe(true);
    expect(maxErrFromOnes(r.x)).toBeLessThanOrEqual(1e-6);
  });

  for (const n of [2, 10]) {
    it(`Newton–CG minimizes Rosenbrock ${n}-D to 1e-6`, async () => {
      const obj = instrumented(rosenbrock(n));
      const x0 = Float64Array.from({ length: n }, (_, i) => (i % 2 === 0 ? -1.2 : 1));
      const r = await minimizeNewtonCG(obj, x0, { tol: 1e-9, maxIter: 500 });
      expect(r.converged).toBe(true);
      expect(maxErrFromOnes(r.x)).toBeLessThanOrEqual(1e-6);
      expectNonIncreasing(r.history);
      expect(r.gradEvals).toBe(obj.losses.length);
    });
  }

  it('refuses exact Newton above maxSize', async () => {
    await expect(minimizeNewton(rosenbrock(5), new Float64Array(5), { maxSize: 4 })).rejects.toThrow('newton: exact Newton assembles a 5×5 Hessian, above options.maxSize = 4; use minimizeNewtonCG');
  });
});

describe('full-batch: L-BFGS', () => {
  for (const n of [2, 10]) {
    it(`minimizes Rosenbrock ${n}-D to 1e-6`, async () => {
      const obj = instrumented(rosenbrock(n));
      const x0 = Float64Array.from({ length: n }, (_, i) => (i % 2 === 0 ? -1.2 : 1));
      const r = await minimizeLBFGS(obj, x0, { history: 10, maxIter: 1000, tol: 1e-9 });
      expect(r.converged).toBe(true);
      expect(maxErrFromOnes(r.x)).toBeLessThanOrEqual(1e-6);
      expect(r.gradEvals).toBe(obj.losses.length);
      expect(r.lossEvals).toBe(obj.losses.length);
      expect(r.history.length).toBe(r.iterations + 1);
    });
  }

  it('onIteration reports each iteration and can stop the run', async () => {
    const seen: number[] = [];
    const r = await minimizeLBFGS(rosenbrock(2), Float64Array.of(-1.2, 1), { onIteration: ({ iteration, loss, gradNorm, gradEvals }) => {
      seen.push(iteration);
      expect(Number.isFinite(loss) && Number.isFinite(gradNorm) && gradEvals > 0).toBe(true);
      return iteration < 3;
    } });
    expect(seen).toEqual([1, 2, 3]);
    expect(r.iterations).toBe(3);
    expect(r.converged).toBe(false);
    expect(r.reason).toBe('stopped by onIteration');
  });
});

describe('full-batch: the line search never accepts a step that increases the loss', () => {
  it('every accepted loss is one that was evaluated, and the sequence is non-increasing', async () => {
    for (const [name, run] of [
      ['cg', (o: Objective, x0: Float64Array) => minimizeCG(o, x0, { maxIter: 300, tol: 1e-9 })],
      ['lbfgs', (o: Objective, x0: Float64Array) => minimizeLBFGS(o, x0, { maxIter: 300, tol: 1e-9 })],
      ['newton', (o: Objective, x0: Float64Array) => minimizeNewton(o, x0, { maxIter: 100, tol: 1e-9 })],
      ['newton-cg', (o: Objective, x0: Float64Array) => minimizeNewtonCG(o, x0, { maxIter: 300, tol: 1e-9 })],
    ] as const) {
      const obj = instrumented(rosenbrock(6));
      const r = await run(obj, Float64Array.of(-1.2, 1, -1.2, 1, -1.2, 1));
      expectNonIncreasing(r.history);
      for (const l of r.history) expect(obj.losses, name).toContain(l);
    }
  });

  it('direct calls from bad first steps return sufficient decrease or nothing', async () => {
    const obj = rosenbrock(4);
    const r = rng(11);
    const o = lineSearchOptions('test', { c2: 0.9 }, 0.9);
    let accepted = 0;
    for (let trial = 0; trial < 200; trial++) {
      const x = Float64Array.from({ length: 4 }, () => r() * 4 - 2);
      const ev = new Evaluator('test', obj);
      const at = await ev.evaluate(x);
      const d = Float64Array.from(at.grad, (g) => -g + (r() - 0.5) * Math.abs(g));
      const slope = d.reduce((s, v, i) => s + v * at.grad[i]!, 0);
      if (slope >= 0) continue;
      const alpha0 = 10 ** (r() * 12 - 6); // from 1e-6 to 1e6
      const res = await strongWolfe(ev, x, at, d, alpha0, o);
      if (!res.point) continue;
      accepted++;
      expect(res.point.loss).toBeLessThanOrEqual(at.loss + 1e-4 * res.point.alpha * slope);
      if (res.wolfe) expect(Math.abs(res.point.slope)).toBeLessThanOrEqual(0.9 * Math.abs(slope));
    }
    expect(accepted).toBeGreaterThan(150);
  });
});

describe('full-batch: a NaN or Infinity stops with an error naming the iteration', () => {
  /** A quadratic that turns bad once `poisoned` is set. */
  function poisonable(kind: 'loss' | 'grad') {
    const q = quadratic(10, 100, 5);
    const state = { poisoned: false };
    const obj: Objective = {
      size: q.size,
      async evaluate(x) {
        const r = await q.evaluate(x);
        if (!state.poisoned) return r;
        if (kind === 'loss') return { loss: NaN, grad: r.grad };
        r.grad[2] = Infinity;
        return r;
      },
    };
    return { obj, state };
  }

  it('cg: loss is NaN at iteration 7', async () => {
    const { obj, state } = poisonable('loss');
    await expect(minimizeCG(obj, new Float64Array(10), { tol: 0, maxIter: 50, onIteration: ({ iteration }) => { if (iteration === 6) state.poisoned = true; } }))
      .rejects.toThrow('cg: loss is NaN at iteration 7');
  });

  it('lbfgs: gradient is Infinity at iteration 4 (element 2)', async () => {
    const { obj, state } = poisonable('grad');
    await expect(minimizeLBFGS(obj, new Float64Array(10), { tol: 0, maxIter: 50, onIteration: ({ iteration }) => { if (iteration === 3) state.poisoned = true; } }))
      .rejects.toThrow('lbfgs: gradient is Infinity at iteration 4 (element 2)');
  });

  it('newton and newton-cg: a bad start point is iteration 0', async () => {
    const { obj, state } = poisonable('loss');
    state.poisoned = true;
    await expect(minimizeNewton(obj, new Float64Array(10))).rejects.toThrow('newton: loss is NaN at iteration 0');
    await expect(minimizeNewtonCG(obj, new Float64Array(10))).rejects.toThrow('newton-cg: loss is NaN at iteration 0');
  });

  it('newton-cg: NaN inside a Hessian-vector product names the iteration', async () => {
    const { obj, state } = poisonable('loss');
    await expect(minimizeNewtonCG(obj, new Float64Array(10), { tol: 0, maxIter: 20, onIteration: ({ iteration }) => { if (iteration === 2) state.poisoned = true; } }))
      .rejects.toThrow('newton-cg: loss is NaN at iteration 3');
  });
});
