/**
 * Matrix product: dA = dY·Bᵀ, dB = Aᵀ·dY, with no transpose ever materialized. A weight shared
 * by a step's micro-batches (`{ weight: SharedWeight }`) has its products packed once and its
 * gradient deferred to one product per step (see shared-weight.ts).
 */
import type { Tensor } from '../../tensor/tensor.js';
import { matmulAccumulate, matmulRaw, sumTo } from '../../tensor/functional.js';
import { ACCUMULATED, isGradEnabled } from '../tape.js';
import { defineOp } from '../registry.js';
import { SharedWeight } from '../shared-weight.js';

/** b is a weight the micro-batches of a step share; `microBatch` tags its deferred gradient. */
export interface SharedWeightAttrs {
  weight: SharedWeight;
  microBatch: number;
}

/** The shared weight when b is the matrix it serves (binding it on first use), else null. */
function sharedOf(attrs: SharedWeightAttrs | undefined, a: Tensor, b: Tensor): SharedWeight | null {
  if (!attrs || b.rank !== 2 || a.rank !== 2 || !b.requiresGrad || b.producer !== null) return null;
  attrs.weight.bind(b);
  return attrs.weight;
}

const matmulOp = defineOp<SharedWeightAttrs | undefined, null>({
  name: 'matmul',
  forward: ([a, b], attrs) => {
    // Packs are for recorded (training) products only: evaluation has no accumulation to rely on.
    const shared = isGradEnabled() ? sharedOf(attrs, a!, b!) : null;
    return { out: shared ? shared.product(a!) : matmulRaw(a!, b!), saved: null };
  },
  backward: (gy, { inputs: [a, b], needsGrad, leafGrad, attrs }) => {
    const shared = sharedOf(attrs, a!, b!);
    const ga = needsGrad[0] ? (shared ? shared.inputGradient(gy) : matmulRaw(gy, b!, false, true)) : null;
    let gb: Tensor | null = null;
    if (needsGrad[1]) {
      if (b!.rank === 2) {
        // a's leading axes (if any) were folded into rows: fold them here too. dW = Aᵀ·dY.
        const k = a!.shape[a!.rank - 1]!;
        const n = gy.shape[gy.rank - 1]!;
        const A = a!.view([a!.size / k, k]);
        const G = gy.view([gy.size / n, n]);
        if (shared) {
          shared.defer(A, G, attrs!.microBatch); // the W pass comes later, over all micro-batches
          return [ga, ACCUMULATED];
        }
        const into = leafGrad?.(1);
        if (into) {
          matmulAccumulate(A, G, true, false, into); // straight into the parameter's gradient
          gb = ACCUMULATED;
        } else {
          gb = matmulRaw(A, G, true, false);
        }
      } else {
        gb = sumTo(matmulRaw(a!, gy, true, false), b!.shape);
      }
    }
    return [ga, gb];
  },
}, [
  { label: 'matrix', shapes: [[3, 4], [4, 5]] },
  { label: 'vector-like', shapes: [[1, 3], [3, 1]] },
  { label: 'batched with shared weight', shapes: [[2, 3, 4], [4, 2]] },
  { label: 'batched both', shapes: [[2, 3, 4], [2, 4, 2]] },
  { label: 'a weight shared by micro-batches (gradient deferred)', shapes: [[3, 4], [4, 5]], attrs: () => ({ weight: new SharedWeight(), microBatch: 0 }) },
]);

/**
 * a·b; with `shared`, b is a weight the micro-batches of a step share (see SharedWeight).
 * @example const y = matmul(x, w); // or matmul(x, w, { weight: shared, microBatch: ctx.microBatch })
 */
export const matmul = (a: Tensor, b: Tensor, shared?: SharedWeightAttrs): Tensor => matmulOp([a, b], shared);
