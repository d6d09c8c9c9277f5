/** Matrix product: dA = dY·Bᵀ, dB = Aᵀ·dY, with no transpose ever materialized. */
import type { Tensor } from '../../tensor/tensor.js';
import { matmulAccumulate, matmulRaw, sumTo } from '../../tensor/functional.js';
import { ACCUMULATED } from '../tape.js';
import { defineOp } from '../registry.js';

const matmulOp = defineOp<undefined, null>({
  name: 'matmul',
  forward: ([a, b]) => ({ out: matmulRaw(a!, b!), saved: null }),
  backward: (gy, { inputs: [a, b], needsGrad, leafGrad }) => {
    const ga = needsGrad[0] ? matmulRaw(gy, b!, false, true) : null;
    let gb: Tensor | null = null;
    if (needsGrad[1]) {
      if (b!.rank === 2) {
        // a's leading axes (if any) were folded into rows: fold them here too. dW = Aᵀ·dY.
        const k = a!.shape[a!.rank - 1]!;
        const n = gy.shape[gy.rank - 1]!;
        const A = a!.view([a!.size / k, k]);
        const G = gy.view([gy.size / n, n]);
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
]);

export const matmul = (a: Tensor, b: Tensor): Tensor => matmulOp([a, b], undefined);
