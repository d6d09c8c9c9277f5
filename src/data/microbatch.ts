/**
 * Splitting a minibatch into M equal micro-batches along the first axis, and back; `y` (the
 * labels, or the float targets tensor) is split and merged with `x`, row for row.
 * Parts are views of the minibatch's rows, not copies: every transport copies a tensor once
 * anyway (into a worker's transfer buffer, into a gRPC envelope), the in-process one reads it
 * where it is, and what outlives the step (a recovery's log of inputs) keeps its own copy. A copy per part per step only fed the coordinator's garbage collector: in a
 * default-MLP run on two thread replicas it ran a mark-compact every 150 ms, 43 in 6 s, against
 * 6 in 12 s with views.
 */
import { Tensor, allocate, fmtShape } from '../tensor/tensor.js';
import { targetRows, type Targets } from './dataset.js';
import { DataError, checkPositiveInt } from './errors.js';

export interface MicroBatch<Y extends Targets = Targets> {
  x: Tensor;
  y: Y;
}

/** Rows [start, end) of a tensor along its first axis: a view of the same memory. */
function rows(t: Tensor, start: number, end: number): Tensor {
  const stride = t.shape[0] === 0 ? 0 : t.size / t.shape[0]!;
  return new Tensor(t.data.subarray(start * stride, end * stride), [end - start, ...t.shape.slice(1)]);
}

function sliceTargets<Y extends Targets>(y: Y, start: number, end: number): Y {
  return (y instanceof Tensor ? rows(y, start, end) : y.subarray(start, end)) as Y;
}

function describeY(y: Targets): string {
  return y instanceof Tensor ? `targets of shape ${fmtShape(y.shape)}` : `${y.length} labels`;
}

/**
 * Splits `x` `[B, ...]` and `y` (`[B]` labels or a `[B, ...]` targets tensor) into `m`
 * micro-batches of `B / m` samples, in order. `mergeMicroBatches` is its exact inverse.
 * @example const parts = splitMicroBatches(x, y, 4); // x [64, 784] → 4 × { x: [16, 784], y: Int32Array(16) }
 */
export function splitMicroBatches<Y extends Targets>(x: Tensor, y: Y, m: number): MicroBatch<Y>[] {
  checkPositiveInt(m, 'splitMicroBatches: the number of micro-batches');
  if (x.rank < 1) throw new DataError('BAD_SHAPE', `splitMicroBatches: x must have a batch axis, got shape ${fmtShape(x.shape)}`);
  if (y instanceof Tensor && y.rank < 1) throw new DataError('BAD_SHAPE', `splitMicroBatches: targets must have a batch axis, got shape ${fmtShape(y.shape)}`);
  const B = x.shape[0]!;
  if (targetRows(y) !== B) {
    throw new DataError('BAD_SHAPE', `splitMicroBatches: x has ${B} samples (shape ${fmtShape(x.shape)}) but y has ${describeY(y)}`);
  }
  if (B === 0) throw new DataError('BAD_SHAPE', 'splitMicroBatches: cannot split an empty batch');
  if (B % m !== 0) {
    throw new DataError('BAD_SHAPE', `splitMicroBatches: batch size ${B} is not divisible by ${m} micro-batches`,
      `choose a batch size that is a multiple of ${m} (e.g. ${Math.max(m, Math.round(B / m) * m)})`);
  }
  const per = B / m;
  const parts: MicroBatch<Y>[] = [];
  for (let i = 0; i < m; i++) parts.push({ x: rows(x, i * per, (i + 1) * per), y: sliceTargets(y, i * per, (i + 1) * per) });
  return parts;
}

/** Concatenates tensors along the first axis; all other axes and the dtype must match. */
function concatRows(ts: readonly Tensor[], what: string): Tensor {
  const first = ts[0]!;
  if (first.rank < 1) throw new DataError('BAD_SHAPE', `mergeMicroBatches: ${what} of part 0 must have a batch axis, got shape ${fmtShape(first.shape)}`);
  const rest = first.shape.slice(1);
  let B = 0;
  let size = 0;
  for (let i = 0; i < ts.length; i++) {
    const t = ts[i]!;
    const sameRest = t.rank === first.rank && rest.every((d, k) => t.shape[k + 1] === d);
    if (!sameRest) {
      throw new DataError('BAD_SHAPE', `mergeMicroBatches: ${what} of part ${i} has shape ${fmtShape(t.shape)}, part 0 has ${fmtShape(first.shape)}; all but the first axis must match`);
    }
    if (t.dtype !== first.dtype) throw new DataError('BAD_SHAPE', `mergeMicroBatches: ${what} of part ${i} is ${t.dtype}, part 0 is ${first.dtype}`);
    B += t.shape[0]!;
    size += t.size;
  }
  const data = allocate(first.dtype, size);
  let at = 0;
  for (const t of ts) {
    data.set(t.data, at);
    at += t.size;
  }
  return new Tensor(data, [B, ...rest]);
}

/** Concatenates micro-batches along the first axis, in the given order. */
export function mergeMicroBatches<Y extends Targets>(parts: readonly MicroBatch<Y>[]): MicroBatch<Y> {
  if (parts.length === 0) throw new DataError('BAD_SHAPE', 'mergeMicroBatches: no micro-batches to merge');
  const tensorTargets = parts[0]!.y instanceof Tensor;
  for (let i = 0; i < parts.length; i++) {
    const { x, y } = parts[i]!;
    if (x.rank < 1) throw new DataError('BAD_SHAPE', `mergeMicroBatches: part ${i} must have a batch axis, got shape ${fmtShape(x.shape)}`);
    if ((y instanceof Tensor) !== tensorTargets) {
      throw new DataError('BAD_SHAPE', `mergeMicroBatches: part ${i} has ${describeY(y)}, part 0 has ${describeY(parts[0]!.y)}; all parts must have labels or all targets`);
    }
    if (targetRows(y) !== x.shape[0]) {
      throw new DataError('BAD_SHAPE', `mergeMicroBatches: part ${i} has ${x.shape[0]} samples but ${describeY(y)}`);
    }
  }
  const x = concatRows(parts.map((p) => p.x), 'x');
  if (tensorTargets) return { x, y: concatRows(parts.map((p) => p.y as Tensor), 'targets') as Y };
  const y = new Int32Array(x.shape[0]!);
  let row = 0;
  for (const p of parts) {
    y.set(p.y as Int32Array, row);
    row += (p.y as Int32Array).length;
  }
  return { x, y: y as Y };
}
