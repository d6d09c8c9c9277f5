/** Broadcasting arithmetic and element-wise maths. */
import { Tensor } from '../../tensor/tensor.js';
import { binaryRaw, mapRaw, sumTo, unaryRaw, zipRaw } from '../../tensor/functional.js';
import { binaryShapes, defineOp, unaryShapes } from '../registry.js';

export type Operand = Tensor | number;

/** Numbers become scalars of the other operand's dtype. */
export function lift(x: Operand, like: Tensor): Tensor {
  return typeof x === 'number' ? Tensor.scalar(x, like.dtype) : x;
}

const addOp = defineOp<undefined, null>({
  name: 'add',
  forward: ([a, b]) => ({ out: binaryRaw('add', a!, b!), saved: null }),
  // Addition passes the gradient on (summed down over broadcast axes).
  backward: (gy, { inputs: [a, b] }) => [sumTo(gy, a!.shape), sumTo(gy, b!.shape)],
}, binaryShapes());

const subOp = defineOp<undefined, null>({
  name: 'sub',
  forward: ([a, b]) => ({ out: binaryRaw('sub', a!, b!), saved: null }),
  backward: (gy, { inputs: [a, b], needsGrad }) => [
    sumTo(gy, a!.shape),
    needsGrad[1] ? unaryRaw('neg', sumTo(gy, b!.shape)) : null,
  ],
}, binaryShapes());

const mulOp = defineOp<undefined, null>({
  name: 'mul',
  forward: ([a, b]) => ({ out: binaryRaw('mul', a!, b!), saved: null }),
  // Multiplication swaps the inputs: d(ab)/da = b, d(ab)/db = a.
  backward: (gy, { inputs: [a, b], needsGrad }) => [
    needsGrad[0] ? sumTo(binaryRaw('mul', gy, b!), a!.shape) : null,
    needsGrad[1] ? sumTo(binaryRaw('mul', gy, a!), b!.shape) : null,
  ],
}, binaryShapes());

const divOp = defineOp<undefined, null>({
  name: 'div',
  forward: ([a, b]) => ({ out: binaryRaw('div', a!, b!), saved: null }),
  backward: (gy, { inputs: [a, b], out, needsGrad }) => [
    needsGrad[0] ? sumTo(binaryRaw('div', gy, b!), a!.shape) : null,
    // d(a/b)/db = -(a/b)/b
    needsGrad[1] ? sumTo(unaryRaw('neg', binaryRaw('div', binaryRaw('mul', gy, out), b!)), b!.shape) : null,
  ],
}, binaryShapes(['any', 'awayFromZero']));

/**
 * NOTE: at ties (a == b) maximum and minimum split the gradient equally between
 * the inputs, as PyTorch does.
 */
function extremumOp(name: 'maximum' | 'minimum', kind: 'max' | 'min') {
  const pick = (x: number, y: number, first: boolean) => (x === y ? 0.5 : (kind === 'max' ? x > y : x < y) === first ? 1 : 0);
  return defineOp<undefined, null>({
    name,
    forward: ([a, b]) => ({ out: binaryRaw(kind, a!, b!), saved: null }),
    backward: (gy, { inputs: [a, b], needsGrad }) => {
      const A = binaryRaw('add', a!, Tensor.zeros(gy.shape, gy.dtype));
      const B = binaryRaw('add', b!, Tensor.zeros(gy.shape, gy.dtype));
      return [
        needsGrad[0] ? sumTo(zipRaw([gy, A, B], (g, x, y) => g * pick(x, y, true)), a!.shape) : null,
        needsGrad[1] ? sumTo(zipRaw([gy, A, B], (g, x, y) => g * pick(x, y, false)), b!.shape) : null,
      ];
    },
  }, binaryShapes());
}
const maximumOp = extremumOp('maximum', 'max');
const minimumOp = extremumOp('minimum', 'min');

const negOp = defineOp<undefined, null>({
  name: 'neg',
  forward: ([x]) => ({ out: unaryRaw('neg', x!), saved: null }),
  backward: (gy) => [unaryRaw('neg', gy)],
}, unaryShapes());

const expOp = defineOp<undefined, null>({
  name: 'exp',
  forward: ([x]) => ({ out: unaryRaw('exp', x!), saved: null }),
  backward: (gy, { out }) => [binaryRaw('mul', gy, out)],
}, unaryShapes());

const logOp = defineOp<undefined, null>({
  name: 'log',
  forward: ([x]) => ({ out: unaryRaw('log', x!), saved: null }),
  backward: (gy, { inputs: [x] }) => [binaryRaw('div', gy, x!)],
}, unaryShapes('positive'));

const sqrtOp = defineOp<undefined, null>({
  name: 'sqrt',
  forward: ([x]) => ({ out: unaryRaw('sqrt', x!), saved: null }),
  backward: (gy, { out }) => [zipRaw([gy, out], (g, s) => g / (2 * s))],
}, unaryShapes('positive'));

/** x ** p for a constant exponent p. */
const powOp = defineOp<{ p: number }, null>({
  name: 'pow',
  forward: ([x], { p }) => ({ out: mapRaw(x!, (v) => Math.pow(v, p)), saved: null }),
  backward: (gy, { inputs: [x], attrs: { p } }) => [zipRaw([gy, x!], (g, v) => g * p * Math.pow(v, p - 1))],
}, [
  { label: 'square', shapes: [[3, 4]], attrs: { p: 2 } },
  { label: 'cube scalar', shapes: [[]], attrs: { p: 3 } },
  { label: 'fractional', shapes: [[5]], attrs: { p: 1.5 }, domain: 'positive' },
  { label: 'reciprocal', shapes: [[2, 3]], attrs: { p: -1 }, domain: 'positive' },
]);

/** NOTE: abs'(0) = 0 (the subgradient PyTorch uses). */
const absOp = defineOp<undefined, null>({
  name: 'abs',
  forward: ([x]) => ({ out: unaryRaw('abs', x!), saved: null }),
  backward: (gy, { inputs: [x] }) => [zipRaw([gy, x!], (g, v) => (v > 0 ? g : v < 0 ? -g : 0))],
}, unaryShapes('awayFromZero'));

export const add = (a: Operand, b: Operand): Tensor => { const [x, y] = pair(a, b); return addOp([x, y], undefined); };
export const sub = (a: Operand, b: Operand): Tensor => { const [x, y] = pair(a, b); return subOp([x, y], undefined); };
export const mul = (a: Operand, b: Operand): Tensor => { const [x, y] = pair(a, b); return mulOp([x, y], undefined); };
export const div = (a: Operand, b: Operand): Tensor => { const [x, y] = pair(a, b); return divOp([x, y], undefined); };
export const maximum = (a: Operand, b: Operand): Tensor => { const [x, y] = pair(a, b); return maximumOp([x, y], undefined); };
export const minimum = (a: Operand, b: Operand): Tensor => { const [x, y] = pair(a, b); return minimumOp([x, y], undefined); };
export const neg = (x: Tensor): Tensor => negOp([x], undefined);
export const exp = (x: Tensor): Tensor => expOp([x], undefined);
export const log = (x: Tensor): Tensor => logOp([x], undefined);
export const sqrt = (x: Tensor): Tensor => sqrtOp([x], undefined);
export const pow = (x: Tensor, p: number): Tensor => powOp([x], { p });
export const abs = (x: Tensor): Tensor => absOp([x], undefined);

function pair(a: Operand, b: Operand): [Tensor, Tensor] {
  if (typeof a === 'number' && typeof b === 'number') return [Tensor.scalar(a), Tensor.scalar(b)];
  const like = (typeof a === 'number' ? b : a) as Tensor;
  return [lift(a, like), lift(b, like)];
}
