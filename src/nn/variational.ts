/**
 * Reparameterized sampling for variational autoencoders: a `gaussianSample` layer reads
 * [n, 2·d] as (μ, log σ²) and draws z = μ + σ·ε, ε ~ N(0, 1), so gradients reach μ and
 * log σ² through a deterministic path (Kingma & Welling, 2014).
 */
import { Tensor, fmtShape } from '../tensor/tensor.js';
import { ShapeError } from '../tensor/functional.js';
import { add, exp, mul, slice, sub, sum } from '../autograd/index.js';
import { Layer, registerLayer, type LayerContext } from './layer.js';
import { SpecError, finiteNumber, nonNegativeInt, positiveInt, type LayerSpec } from './spec.js';

function halves(x: Tensor, d: number): [Tensor, Tensor] {
  if (x.rank !== 2 || x.shape[1] !== 2 * d) {
    throw new ShapeError(`gaussianSample: expected input [batch, ${2 * d}] = (μ, log σ²), got ${fmtShape(x.shape)}`);
  }
  return [slice(x, 1, 0, d), slice(x, 1, d, 2 * d)];
}

/**
 * z = μ + exp(½·log σ²)·ε for x = [μ, log σ²] of shape [n, 2·d] and a given ε [n, d].
 * @example reparameterize(x, eps) // [n, d]
 */
export function reparameterize(x: Tensor, eps: Tensor): Tensor {
  const d = eps.shape[1] ?? 0;
  const [mu, logVar] = halves(x, d);
  if (eps.shape[0] !== x.shape[0]) throw new ShapeError(`gaussianSample: ε ${fmtShape(eps.shape)} does not match the batch of ${fmtShape(x.shape)}`);
  return add(mu, mul(exp(mul(logVar, 0.5)), eps));
}

/**
 * KL(N(μ, σ²) ‖ N(0, 1)) summed over latent units and the batch:
 * ½·Σ (μ² + σ² − 1 − log σ²), a scalar.
 */
export function gaussianKl(x: Tensor, d: number): Tensor {
  const [mu, logVar] = halves(x, d);
  return mul(sum(sub(add(mul(mu, mu), exp(logVar)), add(logVar, 1))), 0.5);
}

/**
 * [n, 2·latent] = (μ, log σ²) → z [n, latent]. Training: z = μ + σ·ε with ε drawn from the
 * layer's stream for (seed, layer, step, micro-batch), and β·KL pushed onto `ctx.auxLosses`
 * when present, β = `klWeightAt(step)`. Evaluation: z = μ, and `klWeight`·KL is pushed too
 * (with the default klWeight 1, the test loss is the negative ELBO), whatever the step.
 *
 * KL warm-up (`klWarmupSteps` = N > 0; Bowman et al., 2016; Sønderby et al., 2016): in
 * training only, β rises linearly from 0 at step 0 to `klWeight` at step N and stays there,
 * so the decoder learns to use z before the KL term pulls the posterior onto the prior.
 * β depends only on `ctx.step` (not on placement, stage or micro-batch).
 *
 * NOTE: ε depends on how the minibatch is split into micro-batches (each micro-batch has
 * its own stream), so runs with different micro-batch counts draw different noise.
 *
 * @example { "type": "gaussianSample", "latent": 16, "klWeight": 1, "klWarmupSteps": 625 }
 */
export class GaussianSample extends Layer {
  readonly type = 'gaussianSample';

  constructor(readonly latent: number, readonly klWeight: number, readonly klWarmupSteps = 0) {
    super();
  }

  /** The training KL weight β at optimizer step `step`: klWeight·min(1, step / klWarmupSteps). */
  klWeightAt(step: number): number {
    if (this.klWarmupSteps === 0 || step >= this.klWarmupSteps) return this.klWeight;
    return this.klWeight * Math.max(0, step) / this.klWarmupSteps;
  }

  forward(x: Tensor, ctx: LayerContext): Tensor {
    const d = this.latent;
    if (!ctx.training) {
      // z = μ; the KL term is still reported so that evaluation gives the (negative) ELBO.
      if (ctx.auxLosses && this.klWeight !== 0) ctx.auxLosses.push(mul(gaussianKl(x, d), this.klWeight));
      return halves(x, d)[0];
    }
    const n = x.shape[0] ?? 0;
    const rng = this.rngFor(ctx);
    const eps = Tensor.zeros([n, d], x.dtype);
    for (let i = 0; i < eps.size; i++) eps.data[i] = rng.normal();
    const z = reparameterize(x, eps);
    const beta = this.klWeightAt(ctx.step);
    if (ctx.auxLosses && beta !== 0) {
      const kl = gaussianKl(x, d);
      ctx.auxLosses.push(beta === 1 ? kl : mul(kl, beta));
    }
    return z;
  }

  outputShape(inputShape: readonly number[]): number[] {
    if (inputShape.length !== 1 || inputShape[0] !== 2 * this.latent) {
      throw new ShapeError(`gaussianSample: expects ${2 * this.latent} inputs per sample (μ and log σ² for ${this.latent} latent units) but receives ${fmtShape(inputShape)}`);
    }
    return [this.latent];
  }

  toSpec(): LayerSpec {
    return { type: this.type, latent: this.latent, klWeight: this.klWeight, klWarmupSteps: this.klWarmupSteps };
  }
}

registerLayer('gaussianSample', ['latent', 'klWeight', 'klWarmupSteps'], (spec, { where }) => {
  const klWeight = finiteNumber(spec, 'klWeight', where, 1);
  if (klWeight < 0) throw new SpecError(`${where}: 'klWeight' must be a non-negative number, got ${JSON.stringify(spec.klWeight)}`);
  // klWarmupSteps: training steps over which β rises linearly from 0 to klWeight (0: no warm-up).
  return new GaussianSample(positiveInt(spec, 'latent', where), klWeight, nonNegativeInt(spec, 'klWarmupSteps', where, 0));
});
