/**
 * Built-in sequence and generative models, and the one import that registers the sequence
 * layers (`embedding`, `rnn`, `lstm`, `gru`, `gaussianSample`).
 */
import './reshape.js'; // lstmSpec reads each digit through a `reshape` layer
import type { ModelSpec } from './sequential.js';

export { Recurrent, Embedding, runRecurrent, gateCount, type CellKind, type RecurrentWeights } from './recurrent.js';
export { GaussianSample, reparameterize, gaussianKl } from './variational.js';

/**
 * Each digit read row by row: 28 time steps of 28 pixels → LSTM (last state) → dense.
 * @example Sequential.fromSpec(lstmSpec(), 42) // [n, 784] → [n, 10] logits
 */
export function lstmSpec(rows = 28, cols = 28, hidden = 128, classes = 10): ModelSpec {
  return {
    inputShape: [rows * cols],
    layers: [
      { type: 'reshape', shape: [rows, cols] },
      { type: 'lstm', inputs: cols, hidden, returnSequences: false, init: 'xavier', forgetBias: 1 },
      { type: 'dense', inputs: hidden, units: classes, init: 'xavier' },
    ],
    loss: 'softmaxCrossEntropy',
  };
}

/**
 * A variational autoencoder: 784 → 400 → (μ, log σ²) of `latent` units → z → 400 → 784 logits.
 * The loss is binary cross-entropy from logits against THE INPUTS THEMSELVES (pixels in
 * [0, 1]), which `autoencoder: true` asks the trainer to use as targets; the
 * `gaussianSample` layer adds the KL term to the objective through `ctx.auxLosses`.
 * Training warms the KL weight up from 0 to 1 over `klWarmupSteps` optimizer steps (625 =
 * 5 epochs of the built-in 8000 digits at batch 64; Bowman et al., 2016; Sønderby et al.,
 * 2016); evaluation always reports the full KL, so the test loss is the negative ELBO.
 * @example Sequential.fromSpec(vaeSpec(), 42) // [n, 784] → [n, 784] logits
 */
export function vaeSpec(inputs = 784, hidden = 400, latent = 16, klWarmupSteps = 625): ModelSpec {
  return {
    inputShape: [inputs],
    layers: [
      { type: 'dense', inputs, units: hidden, init: 'he' },
      { type: 'relu' },
      { type: 'dense', inputs: hidden, units: 2 * latent, init: 'xavier' },
      { type: 'gaussianSample', latent, klWeight: 1, klWarmupSteps },
      { type: 'dense', inputs: latent, units: hidden, init: 'he' },
      { type: 'relu' },
      { type: 'dense', inputs: hidden, units: inputs, init: 'xavier' },
    ],
    loss: 'bce',
    autoencoder: true,
  };
}
