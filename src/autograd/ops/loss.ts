/** The fused loss ops (composite losses live in src/nn/losses.ts). */
import { Tensor, allocate, fmtShape } from '../../tensor/tensor.js';
import { ShapeError } from '../../tensor/functional.js';
import { defineOp } from '../registry.js';
import { softmaxRaw } from './activation.js';

export interface CrossEntropyAttrs { labels: Int32Array; reduction: 'sum' | 'mean' }

function checkLabels(logits: Tensor, labels: Int32Array): void {
  if (logits.rank !== 2) throw new ShapeError(`softmaxCrossEntropy: logits must be [batch, classes], got ${fmtShape(logits.shape)}`);
  const [n, c] = logits.shape as [number, number];
  if (labels.length !== n) throw new ShapeError(`softmaxCrossEntropy: ${labels.length} labels for a batch of ${n}`);
  for (let i = 0; i < n; i++) {
    const y = labels[i]!;
    if (!(y >= 0 && y < c)) throw new RangeError(`softmaxCrossEntropy: label ${y} at row ${i} is out of range [0, ${c})`);
  }
}

/**
 * Softmax cross-entropy from logits with integer labels, fused so that it is stable
 * (log-sum-exp) and its gradient is simply softmax − onehot.
 */
const crossEntropyOp = defineOp<CrossEntropyAttrs, { logp: Tensor }>({
  name: 'softmaxCrossEntropy',
  forward: ([x], { labels, reduction }) => {
    checkLabels(x!, labels);
    const logp = softmaxRaw(x!, -1, true);
    const c = x!.shape[1]!;
    let total = 0;
    for (let i = 0; i < labels.length; i++) total -= logp.data[i * c + labels[i]!]!;
    if (reduction === 'mean') total /= labels.length || 1;
    return { out: Tensor.scalar(total, x!.dtype), saved: { logp } };
  },
  backward: (gy, { saved: { logp }, attrs: { labels, reduction } }) => {
    const c = logp.shape[1]!;
    const scale = gy.data[0]! / (reduction === 'mean' ? labels.length || 1 : 1);
    const g = allocate(logp.dtype, logp.size);
    for (let i = 0; i < g.length; i++) g[i] = Math.exp(logp.data[i]!) * scale;
    for (let i = 0; i < labels.length; i++) g[i * c + labels[i]!] = g[i * c + labels[i]!]! - scale;
    return [new Tensor(g, logp.shape)];
  },
}, [
  { label: 'mean', shapes: [[4, 5]], attrs: (s) => ({ labels: Int32Array.from({ length: s[0]![0]! }, (_, i) => (i * 3) % s[0]![1]!), reduction: 'mean' }) },
  { label: 'sum', shapes: [[3, 2]], attrs: () => ({ labels: Int32Array.from([1, 0, 1]), reduction: 'sum' }) },
]);

export const softmaxCrossEntropy = (logits: Tensor, labels: Int32Array, reduction: 'sum' | 'mean' = 'mean'): Tensor =>
  crossEntropyOp([logits], { labels, reduction });
