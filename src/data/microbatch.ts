/**
 * Splitting a minibatch into M equal micro-batches along the first axis, and back.
 * Each part owns a fresh buffer, so it can be transferred to a worker on its own
 * (a view would drag the whole minibatch's buffer along).
 */
import { Tensor, allocate, fmtShape } from '../tensor/tensor.js';
import { DataError, checkPositiveInt } from './errors.js';

export interface MicroBatch {
  x: Tensor;
  y: Int32Array;
}

/**
 * Splits `x` `[B, ...]` and `y` `[B]` into `m` micro-batches of `B / m` samples, in order.
 * `mergeMicroBatches` is its exact inverse.
 * @example const parts = splitMicroBatches(x, y, 4); // x [64, 784] → 4 × { x: [16, 784], y: Int32Array(16) }
 */
export function splitMicroBatches(x: Tensor, y: Int32Array, m: number): MicroBatch[] {
  checkPositiveInt(m, 'splitMicroBatches: the number of micro-batches');
  if (x.rank < 1) throw new DataError('BAD_SHAPE', `splitMicroBatches: x must have a batch axis, got shape ${fmtShape(x.shape)}`);
  const B = x.shape[0]!;
  if (y.length !== B) {
    throw new DataError('BAD_SHAPE', `splitMicroBatches: x has ${B} samples (shape ${fmtShape(x.shape)}) but y has ${y.length} labels`);
  }
  if (B === 0) throw new DataError('BAD_SHAPE', 'splitMicroBatches: cannot split an empty batch');
  if (B % m !== 0) {
    throw new DataError('BAD_SHAPE', `splitMicroBatches: batch size ${B} is not divisible by ${m} micro-batches`,
      `choose a batch size that is a multiple of ${m} (e.g. ${Math.max(m, Math.round(B / m) * m)})`);
  }
  const per = B / m;
  const rest = x.shape.slice(1);
  const stride = x.size / B;
  const parts: MicroBatch[] = [];
  for (let i = 0; i < m; i++) {
    const data = x.data.slice(i * per * stride, (i + 1) * per * stride);
    parts.push({ x: new Tensor(data, [per, ...rest]), y: y.slice(i * per, (i + 1) * per) });
  }
  return parts;
}

/** Concatenates micro-batches along the first axis, in the given order. */
export function mergeMicroBatches(parts: readonly MicroBatch[]): MicroBatch {
  if (parts.length === 0) throw new DataError('BAD_SHAPE', 'mergeMicroBatches: no micro-batches to merge');
  const first = parts[0]!.x;
  if (first.rank < 1) throw new DataError('BAD_SHAPE', `mergeMicroBatches: part 0 must have a batch axis, got shape ${fmtShape(first.shape)}`);
  const rest = first.shape.slice(1);
  let B = 0;
  let size = 0;
  for (let i = 0; i < parts.length; i++) {
    const { x, y } = parts[i]!;
    const sameRest = x.rank === first.rank && rest.every((d, k) => x.shape[k + 1] === d);
    if (!sameRest) {
      throw new DataError('BAD_SHAPE', `mergeMicroBatches: part ${i} has shape ${fmtShape(x.shape)}, part 0 has ${fmtShape(first.shape)}; all but the first axis must match`);
    }
    if (x.dtype !== first.dtype) {
      throw new DataError('BAD_SHAPE', `mergeMicroBatches: part ${i} is ${x.dtype}, part 0 is ${first.dtype}`);
    }
    if (y.length !== x.shape[0]) {
      throw new DataError('BAD_SHAPE', `mergeMicroBatches: part ${i} has ${x.shape[0]} samples but ${y.length} labels`);
    }
    B += x.shape[0]!;
    size += x.size;
  }
  const data = allocate(first.dtype, size);
  const y = new Int32Array(B);
  let at = 0;
  let row = 0;
  for (const p of parts) {
    data.set(p.x.data, at);
    y.set(p.y, row);
    at += p.x.size;
    row += p.y.length;
  }
  return { x: new Tensor(data, [B, ...rest]), y };
}
