/**
 * Matrix product: dA = dY·Bᵀ, dB = Aᵀ·dY, with no transpose ever materialized. A weight shared
 * by a step's micro-batches (`{ weight: SharedWeight }`) has its products packed once and its
 * gradient deferred to one product per step (see shared-weight.ts).
 */
import type { Tensor } from '../../tensor/tensor.js';
import { ShapeError, matmulAccumulate, matmulRaw, sumTo } from '../../tensor/functional.js';
import { backend, jsBackend } from '../../tensor/backend.js';
import { fmtShape } from '../../tensor/tensor.js';
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

/** dB = Aᵀ·dY: deferred for a shared weight, straight into a leaf's `.grad`, or returned. */
function weightGrad(a: Tensor, b: Tensor, gy: Tensor, shared: SharedWeight | null, attrs: SharedWeightAttrs | undefined,
  leafGrad: ((i: number) => Tensor | null) | undefined): Tensor {
  if (b.rank !== 2) return sumTo(matmulRaw(a, gy, true, false), b.shape);
  // a's leading axes (if any) were folded into rows: fold them here too.
  const k = a.shape[a.rank - 1]!;
  const n = gy.shape[gy.rank - 1]!;
  const A = a.view([a.size / k, k]);
  const G = gy.view([gy.size / n, n]);
  if (shared) {
    shared.defer(A, G, attrs!.microBatch); // the W pass comes later, over all micro-batches
    return ACCUMULATED;
  }
  const into = leafGrad?.(1);
  if (!into) return matmulRaw(A, G, true, false);
  matmulAccumulate(A, G, true, false, into); // straight into the parameter's gradient
  return ACCUMULATED;
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
    const gb = needsGrad[1] ? weightGrad(a!, b!, gy, shared, attrs, leafGrad) : null;
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
 * x·W + b for x [m, k], W [k, n], b [n]: a dense layer, the bias added into the product's own
 * buffer (the bits of add(matmul(x, W), b), one buffer and one pass fewer).
 */
const linearOp = defineOp<SharedWeightAttrs | undefined, null>({
  name: 'linear',
  forward: ([x, w, b], attrs) => {
    if (x!.rank !== 2 || w!.rank !== 2 || b!.rank !== 1 || b!.shape[0] !== w!.shape[1]) {
      throw new ShapeError(`linear: expects x [m, k], W [k, n] and b [n], got ${fmtShape(x!.shape)}, ${fmtShape(w!.shape)} and ${fmtShape(b!.shape)}`);
    }
    if (b!.dtype !== x!.dtype) throw new TypeError(`linear: dtypes differ, ${x!.dtype} != ${b!.dtype}; convert one with .to()`);
    const shared = isGradEnabled() ? sharedOf(attrs, x!, w!) : null;
    const y = shared ? shared.product(x!) : matmulRaw(x!, w!);
    const be = y.dtype === 'float64' ? jsBackend : backend();
    be.binary('add', y.data, y.shape, b!.data, [1, b!.size], y.data, y.shape); // in place: element by element
    return { out: y, saved: null };
  },
  backward: (gy, { inputs: [x, w, b], needsGrad, leafGrad, attrs }) => {
    const shared = sharedOf(attrs, x!, w!);
    const gx = needsGrad[0] ? (shared ? shared.inputGradient(gy) : matmulRaw(gy, w!, false, true)) : null;
    const gw = needsGrad[1] ? weightGrad(x!, w!, gy, shared, attrs, leafGrad) : null;
    const gb = needsGrad[2] ? sumTo(gy, b!.shape) : null;
    return [gx, gw, gb];
  },
}, [
  { label: 'dense', shapes: [[3, 4], [4, 5], [5]] },
  { label: 'a weight shared by micro-batches (gradient deferred)', shapes: [[3, 4], [4, 5], [5]], attrs: () => ({ weight: new SharedWeight(), microBatch: 0 }) },
]);

/**
 * x·W + b (a dense layer); with `shared`, W is a weight the micro-batches of a step share.
 * @example const y = linear(x, w, b);
 */
export const linear = (x: Tensor, w: Tensor, b: Tensor, shared?: SharedWeightAttrs): Tensor => linearOp([x, w, b], shared);

/**
 * a·b; with `shared`, b is a weight the micro-batches of a step share (see SharedWeight).
 * @example const y = matmul(x, w); // or matmul(x, w, { weight: shared, microBatch: ctx.microBatch })
 */
export const matmul = (a: Tensor, b: Tensor, shared?: SharedWeightAttrs): Tensor => matmulOp([a, b], shared);
