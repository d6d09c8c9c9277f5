/**
 * A stage's watch for NaN and infinities during one step (src/nn/finite.ts): each activation
 * it sends on, each input gradient it sends back and, after the W pass, every parameter
 * gradient gets one cheap pass. What is not finite is replaced by zeros, so that the
 * neighbours and replica peers finish the step (the wire refuses NaN, and a stage that stopped
 * would leave them waiting), and the earliest finding goes into the step's report, where the
 * coordinator decides for every actor at once: stop the run, or skip the step.
 *
 * @example
 * const watch = new FiniteWatch(model, (mb) => ctx(mb));
 * link.send({ ...msg, x: watch.forward(mb, x, out, loss) });
 */
import { Tensor } from '../src/tensor/tensor.js';
import { allFinite, firstNonFinite, locateNonFinite, type ForwardContext, type Sequential } from '../src/nn/index.js';
import { nonFiniteValue, type NonFiniteKind, type NonFiniteReport } from '../src/wire/index.js';

/** Within one stage: earlier micro-batches first, then the order a micro-batch is computed in. */
const order: Record<NonFiniteKind, number> = { input: 0, activation: 1, loss: 2, inputGradient: 3, gradient: 4 };
const rank = (f: NonFiniteReport) => [f.microBatch ?? Infinity, order[f.kind]] as const;
const before = (a: NonFiniteReport, b: NonFiniteReport) => {
  const [ma, ka] = rank(a);
  const [mb, kb] = rank(b);
  return ma < mb || (ma === mb && ka < kb);
};

export class FiniteWatch {
  private earliest: NonFiniteReport | null = null;

  constructor(private readonly model: Sequential, private readonly context: (microBatch: number) => ForwardContext) {}

  /** The earliest finding of the step, or null. */
  get found(): NonFiniteReport | null { return this.earliest; }

  private note(f: NonFiniteReport): void {
    if (!this.earliest || before(f, this.earliest)) this.earliest = f;
  }

  /**
   * After the forward of a micro-batch: the activation to send on (`out`, or zeros in its
   * place). `loss`: the last stage's loss with its auxiliary terms.
   */
  forward(mb: number, x: Tensor, out: Tensor, loss: number | null): Tensor {
    if (allFinite(out.data)) {
      if (loss !== null && !Number.isFinite(loss)) this.note({ kind: 'loss', microBatch: mb, index: 0, value: nonFiniteValue(loss) });
      return out;
    }
    const site = locateNonFinite(this.model, x, this.context(mb));
    if (site?.at === 'input') this.note({ kind: 'input', microBatch: mb, index: site.index, value: nonFiniteValue(site.value) });
    else if (site) this.note({ kind: 'activation', layer: site.layer, layerType: site.type, microBatch: mb, index: site.index, value: nonFiniteValue(site.value) });
    else {
      // Not reproduced layer by layer (it should be): name the stage's last layer.
      const i = firstNonFinite(out.data);
      const last = this.model.layers.length - 1;
      this.note({ kind: 'activation', layer: this.model.offset + last, layerType: this.model.layers[last]!.type, microBatch: mb, index: i, value: nonFiniteValue(out.data[i]!) });
    }
    return Tensor.zeros(out.shape, out.dtype);
  }

  /** After the backward of a micro-batch: the input gradient to send back (`dx`, or zeros). */
  backward(mb: number, dx: Tensor): Tensor {
    if (allFinite(dx.data)) return dx;
    const i = firstNonFinite(dx.data);
    const first = this.model.layers[0]!;
    this.note({ kind: 'inputGradient', layer: this.model.offset, layerType: first.type, microBatch: mb, index: i, value: nonFiniteValue(dx.data[i]!) });
    return Tensor.zeros(dx.shape, dx.dtype);
  }

  /** After the W pass: when a parameter gradient is not finite, notes the first and zeroes them all. */
  gradients(): void {
    const params = this.model.parameters();
    const bad = params.find(([, p]) => p.grad !== null && !allFinite(p.grad.data));
    if (!bad) return;
    const [name, p] = bad;
    const i = firstNonFinite(p.grad!.data);
    const dot = name.indexOf('.');
    const layer = Number(name.slice(0, dot));
    this.note({ kind: 'gradient', layer, layerType: this.model.layers[layer - this.model.offset]?.type, param: name.slice(dot + 1), index: i, value: nonFiniteValue(p.grad!.data[i]!) });
    for (const [, q] of params) q.grad?.data.fill(0);
  }
}
