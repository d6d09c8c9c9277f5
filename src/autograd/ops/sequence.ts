/**
 * Sequence ops: slice along an axis, concatenate along an axis, and gather rows of a table
 * (the embedding lookup). Recurrent cells are composed from these and the element-wise ops,
 * so backpropagation through time follows from the tape.
 */
import { Tensor, allocate, fmtShape, sizeOf } from '../../tensor/tensor.js';
import { normAxis, ShapeError } from '../../tensor/functional.js';
import { defineOp } from '../registry.js';
import { reshape } from './shape.js';

/** (outer, n, inner): the sizes before, along and after `axis`. */
function split3(shape: readonly number[], axis: number): [number, number, number] {
  let outer = 1;
  for (let i = 0; i < axis; i++) outer *= shape[i]!;
  let inner = 1;
  for (let i = axis + 1; i < shape.length; i++) inner *= shape[i]!;
  return [outer, shape[axis]!, inner];
}

interface SliceAttrs { axis: number; start: number; end: number }

function checkSlice(x: Tensor, { axis, start, end }: SliceAttrs): number {
  if (x.rank === 0) throw new ShapeError(`slice: needs rank >= 1, got ${fmtShape(x.shape)}`);
  const a = normAxis('slice', axis, x.rank);
  const n = x.shape[a]!;
  if (!(Number.isInteger(start) && Number.isInteger(end) && 0 <= start && start <= end && end <= n)) {
    throw new ShapeError(`slice: range [${start}, ${end}) is not within axis ${axis} of ${fmtShape(x.shape)} (length ${n})`);
  }
  return a;
}

/** Copies lanes [start, end) of axis a between a full tensor and its slice (either way). */
function copySlice(full: Tensor, part: Tensor, a: number, start: number, toPart: boolean): void {
  const [outer, n, inner] = split3(full.shape, a);
  const m = part.shape[a]!;
  const chunk = m * inner;
  for (let o = 0; o < outer; o++) {
    const f0 = (o * n + start) * inner;
    const p0 = o * chunk;
    if (toPart) part.data.set(full.data.subarray(f0, f0 + chunk), p0);
    else full.data.set(part.data.subarray(p0, p0 + chunk), f0);
  }
}

/** x[..., start:end, ...] along one axis (a copy); its gradient is scattered back into zeros. */
const sliceOp = defineOp<SliceAttrs, null>({
  name: 'slice',
  forward: ([x], attrs) => {
    const a = checkSlice(x!, attrs);
    const shape = x!.shape.map((d, i) => (i === a ? attrs.end - attrs.start : d));
    const out = Tensor.zeros(shape, x!.dtype);
    copySlice(x!, out, a, attrs.start, true);
    return { out, saved: null };
  },
  backward: (gy, { inputs: [x], attrs }) => {
    const gx = Tensor.zeros(x!.shape, x!.dtype);
    copySlice(gx, gy, normAxis('slice', attrs.axis, x!.rank), attrs.start, false);
    return [gx];
  },
}, [
  { label: 'vector', shapes: [[6]], attrs: { axis: 0, start: 1, end: 4 } },
  { label: 'time step of [n, T, F]', shapes: [[2, 3, 4]], attrs: { axis: 1, start: 2, end: 3 } },
  { label: 'gate chunk, last axis', shapes: [[3, 8]], attrs: { axis: -1, start: 4, end: 6 } },
  { label: 'empty', shapes: [[2, 3]], attrs: { axis: 1, start: 1, end: 1 } },
]);

/** Joins tensors along an existing axis; its gradient is the matching slice of gy for each input. */
const concatOp = defineOp<{ axis: number }, null>({
  name: 'concat',
  forward: (xs, { axis }) => {
    if (xs.length === 0) throw new ShapeError('concat: needs at least one tensor');
    const first = xs[0]!;
    if (first.rank === 0) throw new ShapeError('concat: cannot concatenate scalars (stack them instead)');
    const a = normAxis('concat', axis, first.rank);
    let total = 0;
    for (const [i, x] of xs.entries()) {
      if (x.dtype !== first.dtype) throw new TypeError(`concat: dtypes differ, input 0 is ${first.dtype}, input ${i} is ${x.dtype}`);
      if (x.rank !== first.rank || x.shape.some((d, j) => j !== a && d !== first.shape[j])) {
        throw new ShapeError(`concat: input ${i} ${fmtShape(x.shape)} does not match input 0 ${fmtShape(first.shape)} off axis ${axis}`);
      }
      total += x.shape[a]!;
    }
    const shape = first.shape.map((d, j) => (j === a ? total : d));
    const out = Tensor.zeros(shape, first.dtype);
    let start = 0;
    for (const x of xs) {
      copySlice(out, x, a, start, false);
      start += x.shape[a]!;
    }
    return { out, saved: null };
  },
  backward: (gy, { inputs, attrs: { axis }, needsGrad }) => {
    const a = normAxis('concat', axis, gy.rank);
    let start = 0;
    return inputs.map((x, i) => {
      const s = start;
      start += x.shape[a]!;
      if (!needsGrad[i]) return null;
      const gx = Tensor.zeros(x.shape, x.dtype);
      copySlice(gy, gx, a, s, true);
      return gx;
    });
  },
}, [
  { label: 'two vectors', shapes: [[2], [3]], attrs: { axis: 0 } },
  { label: 'three along time', shapes: [[2, 1, 3], [2, 2, 3], [2, 1, 3]], attrs: { axis: 1 } },
  { label: 'last axis', shapes: [[3, 2], [3, 4]], attrs: { axis: -1 } },
]);

export interface GatherAttrs {
  /** Row numbers into the table, row-major over `shape`. */
  indices: Int32Array;
  shape: number[];
}

/**
 * Rows of a table [rows, dim] picked by integer indices: out[...shape, dim]. The gradient
 * of a row used several times is the sum of its uses (added in index order, so it is
 * deterministic).
 */
const gatherOp = defineOp<GatherAttrs, null>({
  name: 'gather',
  forward: ([table], { indices, shape }) => {
    if (table!.rank !== 2) throw new ShapeError(`gather: the table must be [rows, dim], got ${fmtShape(table!.shape)}`);
    if (sizeOf(shape) !== indices.length) {
      throw new ShapeError(`gather: ${indices.length} indices do not fill the index shape ${fmtShape(shape)}`);
    }
    const [rows, dim] = table!.shape as [number, number];
    const out = allocate(table!.dtype, indices.length * dim);
    for (let i = 0; i < indices.length; i++) {
      const r = indices[i]!;
      if (!(r >= 0 && r < rows)) throw new RangeError(`gather: index ${r} at position ${i} is out of range [0, ${rows})`);
      out.set(table!.data.subarray(r * dim, (r + 1) * dim), i * dim);
    }
    return { out: new Tensor(out, [...shape, dim]), saved: null };
  },
  backward: (gy, { inputs: [table], attrs: { indices } }) => {
    const dim = table!.shape[1]!;
    const g = allocate(table!.dtype, table!.size);
    const d = gy.data;
    for (let i = 0; i < indices.length; i++) {
      const o = indices[i]! * dim;
      for (let j = 0; j < dim; j++) g[o + j] = g[o + j]! + d[i * dim + j]!;
    }
    return [new Tensor(g, table!.shape)];
  },
}, [
  { label: 'repeated rows', shapes: [[5, 3]], attrs: { indices: Int32Array.from([1, 3, 1, 0, 1, 4]), shape: [2, 3] } },
  { label: 'flat', shapes: [[4, 2]], attrs: { indices: Int32Array.from([2, 2]), shape: [2] } },
]);

/** x[start:end] along `axis` (negative axes count from the end). */
export const slice = (x: Tensor, axis: number, start: number, end: number): Tensor => sliceOp([x], { axis, start, end });

/**
 * One index along an axis, dropping it: the time step t of a [n, T, F] batch.
 * @example const xt = select(x, 1, t); // [n, F]
 */
export const select = (x: Tensor, axis: number, index: number): Tensor => {
  const a = normAxis('select', axis, x.rank);
  return reshape(slice(x, a, index, index + 1), x.shape.filter((_, i) => i !== a));
};

/** Joins tensors along an existing axis. */
export const concat = (xs: Tensor[], axis: number): Tensor => concatOp(xs, { axis });

/**
 * Stacks same-shaped tensors along a new axis.
 * @example stack(hs, 1) // T tensors [n, H] → [n, T, H]
 */
export const stack = (xs: Tensor[], axis: number): Tensor => {
  if (xs.length === 0) throw new ShapeError('stack: needs at least one tensor');
  const rank = xs[0]!.rank + 1;
  const a = normAxis('stack', axis, rank);
  return concat(xs.map((x) => {
    const s = [...x.shape];
    s.splice(a, 0, 1);
    return reshape(x, s);
  }), a);
};

/**
 * Embedding lookup: rows of `table` [rows, dim] at integer `indices` laid out as `shape`.
 * @example gather(E, Int32Array.from([3, 1, 3]), [3]) // [3, dim]; row 3's gradient gets two uses
 */
export const gather = (table: Tensor, indices: Int32Array, shape: readonly number[] = [indices.length]): Tensor =>
  gatherOp([table], { indices, shape: [...shape] });
