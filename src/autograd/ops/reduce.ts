/** Reductions: sum, mean (composed), max and min along an axis. */
import { Tensor, allocate } from '../../tensor/tensor.js';
import { broadcastRaw, normAxis, sumRaw } from '../../tensor/functional.js';
import { defineOp, type CheckCase } from '../registry.js';
import { forEachLane } from './activation.js';
import { mul } from './elementwise.js';

interface AxisAttrs { axis?: number; keepDims: boolean }

const reduceChecks: CheckCase<AxisAttrs>[] = [
  { label: 'all of scalar', shapes: [[]], attrs: { keepDims: false } },
  { label: 'all of matrix', shapes: [[3, 4]], attrs: { keepDims: false } },
  { label: 'axis 0', shapes: [[3, 4]], attrs: { axis: 0, keepDims: false } },
  { label: 'axis -1 kept', shapes: [[3, 4]], attrs: { axis: -1, keepDims: true } },
  { label: 'batched middle', shapes: [[2, 3, 4]], attrs: { axis: 1, keepDims: false } },
];

/** The reduced shape with the axis kept as 1, to broadcast a gradient back. */
function keptShape(shape: readonly number[], axis: number | undefined): number[] {
  if (axis === undefined) return shape.map(() => 1);
  const a = normAxis('reduce', axis, shape.length);
  return shape.map((d, i) => (i === a ? 1 : d));
}

const sumOp = defineOp<AxisAttrs, null>({
  name: 'sum',
  forward: ([x], { axis, keepDims }) => ({ out: sumRaw(x!, axis, keepDims), saved: null }),
  // The gradient of a sum is repeated (broadcast) back over the summed axes.
  backward: (gy, { inputs: [x], attrs: { axis } }) => [broadcastRaw(gy.view(keptShape(x!.shape, axis)), x!.shape)],
}, reduceChecks);

/**
 * NOTE: at ties the gradient of max/min is split equally among the tied elements
 * (as PyTorch's amax/amin).
 */
function extremeAlong(name: 'max' | 'min') {
  const better = name === 'max' ? (a: number, b: number) => a > b : (a: number, b: number) => a < b;
  return defineOp<{ axis: number; keepDims: boolean }, null>({
    name,
    forward: ([x], { axis, keepDims }) => {
      const a = normAxis(name, axis, x!.rank);
      const kept = keptShape(x!.shape, a);
      const out = allocate(x!.dtype, x!.size / x!.shape[a]!);
      let k = 0;
      // Lanes come in the same order as the reduced output's elements.
      forEachLane(x!.shape, a, (off, st, n) => {
        let m = x!.data[off]!;
        for (let i = 1; i < n; i++) if (better(x!.data[off + i * st]!, m)) m = x!.data[off + i * st]!;
        out[k++] = m;
      });
      void kept;
      return { out: new Tensor(out, keepDims ? kept : x!.shape.filter((_, i) => i !== a)), saved: null };
    },
    backward: (gy, { inputs: [x], out, attrs: { axis } }) => {
      const a = normAxis(name, axis, x!.rank);
      const gx = allocate(x!.dtype, x!.size);
      let k = 0;
      forEachLane(x!.shape, a, (off, st, n) => {
        const m = out.data[k]!;
        let ties = 0;
        for (let i = 0; i < n; i++) if (x!.data[off + i * st] === m) ties++;
        for (let i = 0; i < n; i++) if (x!.data[off + i * st] === m) gx[off + i * st] = gy.data[k]! / ties;
        k++;
      });
      return [new Tensor(gx, x!.shape)];
    },
  }, [
    { label: 'rows', shapes: [[3, 4]], attrs: { axis: -1, keepDims: false } },
    { label: 'axis 0 kept', shapes: [[3, 4]], attrs: { axis: 0, keepDims: true } },
    { label: 'vector', shapes: [[6]], attrs: { axis: 0, keepDims: false } },
  ]);
}
const maxOp = extremeAlong('max');
const minOp = extremeAlong('min');

/** Sum over all axes, or over one (dropping it unless keepDims). */
export const sum = (x: Tensor, axis?: number, keepDims = false): Tensor => sumOp([x], { axis, keepDims });
/** Mean: a sum scaled by 1/n (a composite, no backward of its own). */
export const mean = (x: Tensor, axis?: number, keepDims = false): Tensor => {
  const n = axis === undefined ? x.size : x.shape[normAxis('mean', axis, x.rank)]!;
  return mul(sum(x, axis, keepDims), 1 / n);
};
export const max = (x: Tensor, axis = -1, keepDims = false): Tensor => maxOp([x], { axis, keepDims });
export const min = (x: Tensor, axis = -1, keepDims = false): Tensor => minOp([x], { axis, keepDims });
