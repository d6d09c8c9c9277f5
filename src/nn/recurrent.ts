/**
 * Sequence layers: `embedding`, and the recurrent `rnn` (Elman, tanh), `lstm` and `gru`
 * over [n, T, features]. The cells are composed from autograd ops (matmul, add, sigmoid,
 * tanh, mul, slice), so backpropagation through time is just the tape run backwards.
 *
 * Weights follow PyTorch's layout transposed (so the forward is a plain matmul, as in
 * `dense`): weightIh [inputs, G·hidden], weightHh [hidden, G·hidden], biasIh and biasHh
 * [G·hidden], gate blocks in PyTorch's order: LSTM (i, f, g, o), GRU (r, z, n).
 * To load PyTorch's `weight_ih_l0` [G·H, F], transpose it; the biases copy as they are.
 */
import { describeValue } from '../errors.js';
import { Tensor, fmtShape } from '../tensor/tensor.js';
import { ShapeError } from '../tensor/functional.js';
import { add, gather, matmul, mul, select, sigmoid, slice, stack, sub, tanh } from '../autograd/index.js';
import type { Rng } from '../tensor/rng.js';
import { Layer, registerLayer, type LayerContext } from './layer.js';
import { initialize, type InitName } from './init.js';
import { SpecError, finiteNumber, oneOf, positiveInt, type LayerSpec } from './spec.js';

export type CellKind = 'rnn' | 'lstm' | 'gru';

/** Gate blocks per cell: the weights hold G·hidden columns. */
export const gateCount: Record<CellKind, number> = { rnn: 1, lstm: 4, gru: 3 };

export interface RecurrentWeights {
  weightIh: Tensor;
  weightHh: Tensor;
  biasIh: Tensor;
  biasHh: Tensor;
}

/** A gate block k of pre-activations [n, G·H] (or of a bias [G·H]). */
const block = (x: Tensor, k: number, h: number): Tensor => slice(x, -1, k * h, (k + 1) * h);

/**
 * Runs a cell over x [n, T, F] from a zero state, returning every hidden state [n, T, H]
 * or the last one [n, H]. A pure function of its tensors, so it can be gradient-checked
 * in float64 with respect to the input and every weight.
 *
 * @example const h = runRecurrent('lstm', x, layer.weights(), false); // [n, H]
 */
export function runRecurrent(kind: CellKind, x: Tensor, w: RecurrentWeights, returnSequences: boolean): Tensor {
  if (x.rank !== 3) throw new ShapeError(`${kind}: expected input [batch, time, features], got ${fmtShape(x.shape)}`);
  const steps = x.shape[1]!;
  if (steps === 0) throw new ShapeError(`${kind}: the sequence must have at least one time step, got ${fmtShape(x.shape)}`);
  const H = w.weightHh.shape[0]!;
  const hs: Tensor[] = [];
  // The zero initial state contributes nothing, so step 0 skips the recurrent terms.
  let h: Tensor | null = null;
  let c: Tensor | null = null;
  // RNN and LSTM only ever use the two biases summed: add them once, not every step.
  const bias = kind === 'gru' ? null : add(w.biasIh, w.biasHh);
  for (let t = 0; t < steps; t++) {
    const xw = matmul(select(x, 1, t), w.weightIh);
    if (kind === 'gru') {
      const gi = add(xw, w.biasIh);
      const gh = h ? add(matmul(h, w.weightHh), w.biasHh) : w.biasHh;
      const r = sigmoid(add(block(gi, 0, H), block(gh, 0, H)));
      const z = sigmoid(add(block(gi, 1, H), block(gh, 1, H)));
      const n = tanh(add(block(gi, 2, H), mul(r, block(gh, 2, H))));
      // h' = (1 − z)·n + z·h = n + z·(h − n)
      h = h ? add(n, mul(z, sub(h, n))) : sub(n, mul(z, n));
    } else {
      let pre = add(xw, bias!);
      if (h) pre = add(pre, matmul(h, w.weightHh));
      if (kind === 'rnn') {
        h = tanh(pre);
      } else {
        const i = sigmoid(block(pre, 0, H));
        const f = sigmoid(block(pre, 1, H));
        const g = tanh(block(pre, 2, H));
        const o = sigmoid(block(pre, 3, H));
        c = c ? add(mul(f, c), mul(i, g)) : mul(i, g);
        h = mul(o, tanh(c));
      }
    }
    if (returnSequences) hs.push(h);
  }
  return returnSequences ? stack(hs, 1) : h!;
}

function booleanField(spec: LayerSpec, field: string, where: string, fallback: boolean): boolean {
  const v = spec[field] ?? fallback;
  if (typeof v !== 'boolean') throw new SpecError(`${where}: '${field}' must be true or false, got ${describeValue(spec[field], 80)}`);
  return v;
}

const recurrentInits: readonly InitName[] = ['xavier', 'he'];

/**
 * An `rnn`, `lstm` or `gru` layer: [n, T, inputs] → [n, T, hidden] with returnSequences,
 * else the last state [n, hidden].
 *
 * Initialization: weightIh and weightHh per gate block by `init` (Xavier uniform by
 * default, fan-in/fan-out of one block); biases zero, except the LSTM forget gate's
 * biasIh block, which is `forgetBias` (1 by default) so early gradients flow through time.
 *
 * @example { "type": "lstm", "inputs": 28, "hidden": 128, "returnSequences": false }
 */
export class Recurrent extends Layer {
  readonly weightIh: Tensor;
  readonly weightHh: Tensor;
  readonly biasIh: Tensor;
  readonly biasHh: Tensor;

  constructor(
    readonly type: CellKind,
    readonly inputs: number,
    readonly hidden: number,
    readonly returnSequences: boolean,
    readonly init: InitName,
    readonly forgetBias: number,
    rng: Rng,
  ) {
    super();
    const G = gateCount[type];
    const wIh = new Float32Array(inputs * G * hidden);
    const wHh = new Float32Array(hidden * G * hidden);
    // Same draws whatever the gate count: the whole matrix from one stream, Ih then Hh.
    initialize(wIh, init, inputs, hidden, rng);
    initialize(wHh, init, hidden, hidden, rng);
    const bIh = new Float32Array(G * hidden);
    if (type === 'lstm') bIh.fill(forgetBias, hidden, 2 * hidden);
    this.weightIh = Tensor.param(wIh, [inputs, G * hidden], 'weightIh');
    this.weightHh = Tensor.param(wHh, [hidden, G * hidden], 'weightHh');
    this.biasIh = Tensor.param(bIh, [G * hidden], 'biasIh');
    this.biasHh = Tensor.param(new Float32Array(G * hidden), [G * hidden], 'biasHh');
    this.params = [['weightIh', this.weightIh], ['weightHh', this.weightHh], ['biasIh', this.biasIh], ['biasHh', this.biasHh]];
  }

  weights(): RecurrentWeights {
    return { weightIh: this.weightIh, weightHh: this.weightHh, biasIh: this.biasIh, biasHh: this.biasHh };
  }

  forward(x: Tensor, _ctx: LayerContext): Tensor {
    if (x.rank !== 3 || x.shape[2] !== this.inputs) {
      throw new ShapeError(`${this.type}: expected input [batch, time, ${this.inputs}], got ${fmtShape(x.shape)}`);
    }
    return runRecurrent(this.type, x, this.weights(), this.returnSequences);
  }

  outputShape(inputShape: readonly number[]): number[] {
    if (inputShape.length !== 2 || inputShape[1] !== this.inputs || inputShape[0]! < 1) {
      throw new ShapeError(`${this.type}: expects [time, ${this.inputs}] per sample but receives ${fmtShape(inputShape)}${inputShape.length === 1 ? ' (add a reshape layer to [time, features])' : ''}`);
    }
    return this.returnSequences ? [inputShape[0]!, this.hidden] : [this.hidden];
  }

  toSpec(): LayerSpec {
    const s: LayerSpec = { type: this.type, inputs: this.inputs, hidden: this.hidden, returnSequences: this.returnSequences, init: this.init };
    if (this.type === 'lstm') s.forgetBias = this.forgetBias;
    return s;
  }
}

for (const kind of ['rnn', 'lstm', 'gru'] as const) {
  registerLayer(kind, kind === 'lstm' ? ['inputs', 'hidden', 'returnSequences', 'init', 'forgetBias'] : ['inputs', 'hidden', 'returnSequences', 'init'], (spec, { rng, where }) => new Recurrent(
    kind,
    positiveInt(spec, 'inputs', where),
    positiveInt(spec, 'hidden', where),
    booleanField(spec, 'returnSequences', where, false),
    oneOf(spec, 'init', recurrentInits, where, 'xavier'),
    kind === 'lstm' ? finiteNumber(spec, 'forgetBias', where, 1) : 0,
    rng,
  ));
}

/**
 * A lookup table: [n, ...] integer-valued floats → [n, ..., dim]. Rows start N(0, 1), as
 * PyTorch's nn.Embedding. A row used several times in a batch gets the sum of its uses.
 *
 * @example { "type": "embedding", "vocab": 1000, "dim": 32 }
 */
export class Embedding extends Layer {
  readonly type = 'embedding';
  readonly weight: Tensor;

  constructor(readonly vocab: number, readonly dim: number, rng: Rng) {
    super();
    const w = new Float32Array(vocab * dim);
    for (let i = 0; i < w.length; i++) w[i] = rng.normal();
    this.weight = Tensor.param(w, [vocab, dim], 'weight');
    this.params = [['weight', this.weight]];
  }

  forward(x: Tensor, ctx: LayerContext): Tensor {
    if (x.rank < 1) throw new ShapeError(`embedding: expected indices [batch, ...], got ${fmtShape(x.shape)}`);
    const idx = new Int32Array(x.size);
    for (let i = 0; i < x.size; i++) {
      const v = x.data[i]!;
      if (!(Number.isInteger(v) && v >= 0 && v < this.vocab)) {
        throw new RangeError(`layer ${ctx.index} (embedding): index ${v} at position ${i} of ${fmtShape(x.shape)} is not an integer in [0, ${this.vocab})`);
      }
      idx[i] = v;
    }
    return gather(this.weight, idx, x.shape);
  }

  outputShape(inputShape: readonly number[]): number[] {
    return [...inputShape, this.dim];
  }

  toSpec(): LayerSpec {
    return { type: this.type, vocab: this.vocab, dim: this.dim };
  }
}

registerLayer('embedding', ['vocab', 'dim'], (spec, { rng, where }) => new Embedding(positiveInt(spec, 'vocab', where), positiveInt(spec, 'dim', where), rng));
