/**
 * Finding where a NaN or infinity came from: the buffer checks (src/tensor/finite.ts), and a
 * forward pass layer by layer that finds the layer whose output first stops being finite.
 *
 * @example
 * if (!allFinite(grad.data)) console.log(firstNonFinite(grad.data)); // 1234
 */
import { noGrad } from '../autograd/index.js';
import type { Tensor } from '../tensor/tensor.js';
import { firstNonFinite } from '../tensor/finite.js';
import type { ForwardContext } from './layer.js';
import type { Sequential } from './sequential.js';

export { allFinite, firstNonFinite, jsAllFinite } from '../tensor/finite.js';

/** Where a forward pass first produced a value that is not finite. */
export type NonFiniteSite =
  | { at: 'input'; index: number; value: number }
  | { at: 'layer'; layer: number; type: string; index: number; value: number };

/**
 * Runs the model's layers one by one on `x` (without a tape, with the same context, so dropout
 * draws the same masks) and returns the first layer whose output is not finite, or the input
 * itself; null when everything is finite. Buffers (BatchNorm statistics) are left as they were.
 */
export function locateNonFinite(model: Sequential, x: Tensor, ctx: ForwardContext): NonFiniteSite | null {
  const bad = firstNonFinite(x.data);
  if (bad >= 0) return { at: 'input', index: bad, value: x.data[bad]! };
  const saved = model.layers.map((l) => l.buffers.map(([, b]) => b.data.slice()));
  try {
    return noGrad(() => {
      let h = x;
      for (const [i, layer] of model.layers.entries()) {
        // Not micro-batching: a shared weight's deferred gradient must not see this pass.
        h = layer.forward(h, { ...ctx, microBatching: false, index: model.offset + i });
        const j = firstNonFinite(h.data);
        if (j >= 0) return { at: 'layer' as const, layer: model.offset + i, type: layer.type, index: j, value: h.data[j]! };
      }
      return null;
    });
  } finally {
    for (const [i, l] of model.layers.entries()) for (const [j, [, b]] of l.buffers.entries()) b.data.set(saved[i]![j]!);
  }
}
