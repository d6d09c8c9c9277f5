/** Shape ops: reshape, transpose, broadcast (repeat). */
import { Tensor, fmtShape, sizeOf, type Shape } from '../../tensor/tensor.js';
import { broadcastRaw, sumTo, transposeRaw, ShapeError } from '../../tensor/functional.js';
import { defineOp } from '../registry.js';

const reshapeOp = defineOp<{ shape: number[] }, null>({
  name: 'reshape',
  forward: ([x], { shape }) => {
    const free = shape.indexOf(-1);
    const known = shape.filter((d) => d !== -1);
    const target = free >= 0 ? shape.map((d) => (d === -1 ? x!.size / (sizeOf(known) || 1) : d)) : shape;
    if (sizeOf(target) !== x!.size || !target.every((d) => Number.isInteger(d) && d >= 0)) {
      throw new ShapeError(`reshape: cannot reshape ${fmtShape(x!.shape)} (${x!.size} elements) to ${fmtShape(shape)}`);
    }
    return { out: new Tensor(x!.data, target), saved: null };
  },
  backward: (gy, { inputs: [x] }) => [gy.view(x!.shape)],
}, [
  { label: 'flatten', shapes: [[2, 3, 4]], attrs: { shape: [2, 12] } },
  { label: 'infer', shapes: [[3, 4]], attrs: { shape: [-1] } },
  { label: 'scalar', shapes: [[]], attrs: { shape: [1, 1] } },
]);

const transposeOp = defineOp<undefined, null>({
  name: 'transpose',
  forward: ([x]) => ({ out: transposeRaw(x!), saved: null }),
  backward: (gy) => [transposeRaw(gy)],
}, [
  { label: 'matrix', shapes: [[3, 4]] },
  { label: 'batched', shapes: [[2, 3, 4]] },
]);

/** Repeats x along size-1 or missing axes; its gradient sums back (the fan-out rule). */
const broadcastOp = defineOp<{ shape: number[] }, null>({
  name: 'broadcastTo',
  forward: ([x], { shape }) => ({ out: broadcastRaw(x!, shape).clone(), saved: null }),
  backward: (gy, { inputs: [x] }) => [sumTo(gy, x!.shape)],
}, [
  { label: 'scalar', shapes: [[]], attrs: { shape: [2, 3] } },
  { label: 'row', shapes: [[4]], attrs: { shape: [3, 4] } },
  { label: 'column', shapes: [[3, 1]], attrs: { shape: [3, 4] } },
  { label: 'batched', shapes: [[1, 3, 1]], attrs: { shape: [2, 3, 4] } },
]);

export const reshape = (x: Tensor, shape: Shape): Tensor => reshapeOp([x], { shape: [...shape] });
export const transpose = (x: Tensor): Tensor => transposeOp([x], undefined);
export const broadcastTo = (x: Tensor, shape: Shape): Tensor => broadcastOp([x], { shape: [...shape] });
