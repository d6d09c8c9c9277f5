/**
 * Compares an op's (or any function's) backward with central differences in float64.
 *
 * The output is reduced to a scalar with fixed random weights R (L = Σ R⊙f(x)), so every
 * output element is checked at once: dL/dx from the tape against (L(x+h) − L(x−h)) / 2h.
 */
import { Tensor, fmtShape } from '../tensor/tensor.js';
import { Rng } from '../tensor/rng.js';
import { Tape, noGrad } from './tape.js';

export interface GradcheckOptions { eps?: number; atol?: number; rtol?: number; seed?: number }

export interface GradcheckResult {
  ok: boolean;
  maxAbsError: number;
  /** The first disagreement, e.g. `input 1 [2]: analytic 0.5 vs numeric 0.25`. */
  worst: string;
}

function weightedSum(out: Tensor, r: Float64Array): number {
  let s = 0;
  for (let i = 0; i < out.size; i++) s += out.data[i]! * r[i]!;
  return s;
}

export function gradcheck(f: (...xs: Tensor[]) => Tensor, inputs: Tensor[], opts: GradcheckOptions = {}): GradcheckResult {
  const { eps = 1e-6, atol = 1e-6, rtol = 1e-4, seed = 7 } = opts;
  for (const [i, x] of inputs.entries()) {
    if (x.dtype !== 'float64') throw new TypeError(`gradcheck: input ${i} is ${x.dtype}; gradcheck needs float64 inputs`);
  }
  const xs = inputs.map((x) => new Tensor(x.data.slice(), x.shape, true));
  const tape = new Tape();
  const out = tape.run(() => f(...xs));
  const rng = new Rng(seed);
  const r = Float64Array.from({ length: out.size }, () => rng.float() * 2 - 1);
  tape.backward(out, new Tensor(r, out.shape));

  let maxAbsError = 0;
  let worst = '';
  let ok = true;
  noGrad(() => {
    for (const [i, x] of xs.entries()) {
      for (let j = 0; j < x.size; j++) {
        const v = x.data[j]!;
        x.data[j] = v + eps;
        const up = weightedSum(f(...xs), r);
        x.data[j] = v - eps;
        const down = weightedSum(f(...xs), r);
        x.data[j] = v;
        const numeric = (up - down) / (2 * eps);
        const analytic = x.grad ? x.grad.data[j]! : 0;
        const err = Math.abs(analytic - numeric);
        if (err > maxAbsError) maxAbsError = err;
        if (err > atol + rtol * Math.abs(numeric) && ok) {
          ok = false;
          worst = `input ${i} ${fmtShape(x.shape)} element ${j}: analytic ${analytic} vs numeric ${numeric}`;
        }
      }
    }
  });
  return { ok, maxAbsError, worst };
}
