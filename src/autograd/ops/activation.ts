/** Activations, each its own op with its derivative beside it. */
import { Tensor, allocate, fmtShape } from '../../tensor/tensor.js';
import { binaryRaw, mapRaw, normAxis, unaryRaw, zipRaw, ShapeError } from '../../tensor/functional.js';
import { defineOp, unaryShapes, type CheckCase } from '../registry.js';

/** NOTE: relu'(0) = 0, the subgradient PyTorch uses. */
const reluOp = defineOp<undefined, null>({
  name: 'relu',
  forward: ([x]) => ({ out: unaryRaw('relu', x!), saved: null }),
  backward: (gy, { out }) => [binaryRaw('reluGrad', gy, out)],
}, unaryShapes('awayFromZero'));

/** NOTE: at 0 the slope is `slope` (x > 0 ? 1 : slope), as PyTorch. */
const leakyReluOp = defineOp<{ slope: number }, null>({
  name: 'leakyRelu',
  forward: ([x], { slope }) => ({ out: mapRaw(x!, (v) => (v > 0 ? v : v * slope)), saved: null }),
  backward: (gy, { inputs: [x], attrs: { slope } }) => [zipRaw([gy, x!], (g, v) => (v > 0 ? g : g * slope))],
}, unaryShapes('awayFromZero').map((c) => ({ ...c, attrs: { slope: 0.01 } })));

const sigmoidOp = defineOp<undefined, null>({
  name: 'sigmoid',
  forward: ([x]) => ({ out: unaryRaw('sigmoid', x!), saved: null }),
  backward: (gy, { out }) => {
    const gx = allocate(out.dtype, out.size);
    const g = gy.data;
    const y = out.data;
    for (let i = 0; i < gx.length; i++) gx[i] = g[i]! * y[i]! * (1 - y[i]!);
    return [new Tensor(gx, out.shape)];
  },
}, unaryShapes());

const tanhOp = defineOp<undefined, null>({
  name: 'tanh',
  forward: ([x]) => ({ out: unaryRaw('tanh', x!), saved: null }),
  backward: (gy, { out }) => {
    const gx = allocate(out.dtype, out.size);
    const g = gy.data;
    const y = out.data;
    for (let i = 0; i < gx.length; i++) gx[i] = g[i]! * (1 - y[i]! * y[i]!);
    return [new Tensor(gx, out.shape)];
  },
}, unaryShapes());

const softplusOp = defineOp<undefined, null>({
  name: 'softplus',
  forward: ([x]) => ({ out: unaryRaw('softplus', x!), saved: null }),
  backward: (gy, { inputs: [x] }) => [zipRaw([gy, unaryRaw('sigmoid', x!)], (g, s) => g * s)],
}, unaryShapes());

/** Walks every 1-D lane along `axis`: f(offset, stride, length). */
export function forEachLane(shape: readonly number[], axis: number, f: (offset: number, stride: number, n: number) => void): void {
  const n = shape[axis]!;
  let inner = 1;
  for (let i = axis + 1; i < shape.length; i++) inner *= shape[i]!;
  let outer = 1;
  for (let i = 0; i < axis; i++) outer *= shape[i]!;
  for (let o = 0; o < outer; o++) for (let i = 0; i < inner; i++) f(o * n * inner + i, inner, n);
}

/** Stable softmax or log-softmax along one axis (subtracts the lane maximum). */
function softmaxRaw(x: Tensor, axis: number, logSpace: boolean): Tensor {
  if (x.rank === 0) throw new ShapeError(`softmax: needs rank >= 1, got ${fmtShape(x.shape)}`);
  const a = normAxis('softmax', axis, x.rank);
  const out = allocate(x.dtype, x.size);
  const d = x.data;
  forEachLane(x.shape, a, (off, st, n) => {
    let m = -Infinity;
    for (let i = 0; i < n; i++) m = Math.max(m, d[off + i * st]!);
    let s = 0;
    for (let i = 0; i < n; i++) s += Math.exp(d[off + i * st]! - m);
    const ls = Math.log(s);
    for (let i = 0; i < n; i++) {
      const z = d[off + i * st]! - m;
      out[off + i * st] = logSpace ? z - ls : Math.exp(z - ls);
    }
  });
  return new Tensor(out, x.shape);
}

const axisChecks: CheckCase<{ axis: number }>[] = [
  { label: 'vector', shapes: [[5]], attrs: { axis: -1 } },
  { label: 'batched rows', shapes: [[3, 4]], attrs: { axis: -1 } },
  { label: 'axis 0', shapes: [[3, 4]], attrs: { axis: 0 } },
  { label: 'rank 3 middle', shapes: [[2, 3, 4]], attrs: { axis: 1 } },
];

const softmaxOp = defineOp<{ axis: number }, null>({
  name: 'softmax',
  forward: ([x], { axis }) => ({ out: softmaxRaw(x!, axis, false), saved: null }),
  // dx = s ⊙ (g − Σ g⊙s) along the axis
  backward: (gy, { out, attrs: { axis } }) => {
    const gx = allocate(out.dtype, out.size);
    const s = out.data;
    const g = gy.data;
    forEachLane(out.shape, normAxis('softmax', axis, out.rank), (off, st, n) => {
      let dot = 0;
      for (let i = 0; i < n; i++) dot += g[off + i * st]! * s[off + i * st]!;
      for (let i = 0; i < n; i++) gx[off + i * st] = s[off + i * st]! * (g[off + i * st]! - dot);
    });
    return [new Tensor(gx, out.shape)];
  },
}, axisChecks);

const logSoftmaxOp = defineOp<{ axis: number }, null>({
  name: 'logSoftmax',
  forward: ([x], { axis }) => ({ out: softmaxRaw(x!, axis, true), saved: null }),
  // dx = g − softmax ⊙ Σ g along the axis
  backward: (gy, { out, attrs: { axis } }) => {
    const gx = allocate(out.dtype, out.size);
    const ls = out.data;
    const g = gy.data;
    forEachLane(out.shape, normAxis('logSoftmax', axis, out.rank), (off, st, n) => {
      let sum = 0;
      for (let i = 0; i < n; i++) sum += g[off + i * st]!;
      for (let i = 0; i < n; i++) gx[off + i * st] = g[off + i * st]! - Math.exp(ls[off + i * st]!) * sum;
    });
    return [new Tensor(gx, out.shape)];
  },
}, axisChecks);

export { softmaxRaw };
export const relu = (x: Tensor): Tensor => reluOp([x], undefined);
export const leakyRelu = (x: Tensor, slope = 0.01): Tensor => leakyReluOp([x], { slope });
export const sigmoid = (x: Tensor): Tensor => sigmoidOp([x], undefined);
export const tanh = (x: Tensor): Tensor => tanhOp([x], undefined);
export const softplus = (x: Tensor): Tensor => softplusOp([x], undefined);
export const softmax = (x: Tensor, axis = -1): Tensor => softmaxOp([x], { axis });
export const logSoftmax = (x: Tensor, axis = -1): Tensor => logSoftmaxOp([x], { axis });
