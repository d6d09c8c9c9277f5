/**
 * Raw tensor maths with no autograd: shape rules plus a call into the backend.
 * Ops use these in their forward and backward passes.
 */
import { backend, jsBackend, type BinaryKind, type UnaryKind } from './backend.js';
import { Tensor, allocate, allocateOutput, fmtShape, sameShape, sizeOf, type Shape } from './tensor.js';

export class ShapeError extends RangeError {
  readonly code = 'SHAPE_MISMATCH';
  constructor(message: string) {
    super(message);
    this.name = 'ShapeError';
  }
}

function sameDtype(op: string, a: Tensor, b: Tensor): void {
  if (a.dtype !== b.dtype) throw new TypeError(`${op}: dtypes differ, ${a.dtype} != ${b.dtype}; convert one with .to()`);
}

/** numpy broadcasting: align from the right; each axis must match or be 1. */
export function broadcastShapes(op: string, a: Shape, b: Shape): number[] {
  const r = Math.max(a.length, b.length);
  const out = new Array<number>(r);
  for (let i = 0; i < r; i++) {
    const x = a[a.length - r + i] ?? 1;
    const y = b[b.length - r + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) {
      throw new ShapeError(`${op}: shapes ${fmtShape(a)} and ${fmtShape(b)} cannot be broadcast (axis ${i}: ${x} vs ${y})`);
    }
    out[i] = x === 1 ? y : x;
  }
  return out;
}

function padShape(shape: Shape, rank: number): number[] {
  return [...new Array<number>(rank - shape.length).fill(1), ...shape];
}

export function binaryRaw(kind: BinaryKind, a: Tensor, b: Tensor): Tensor {
  sameDtype(kind, a, b);
  const shape = broadcastShapes(kind, a.shape, b.shape);
  const out = allocateOutput(a.dtype, sizeOf(shape));
  const be = a.dtype === 'float64' ? jsBackend : backend();
  be.binary(kind, a.data, padShape(a.shape, shape.length), b.data, padShape(b.shape, shape.length), out, shape);
  return new Tensor(out, shape);
}

export function unaryRaw(kind: UnaryKind, x: Tensor): Tensor {
  const out = allocateOutput(x.dtype, x.size);
  (x.dtype === 'float64' ? jsBackend : backend()).unary(kind, x.data, out);
  return new Tensor(out, x.shape);
}

/** Applies f element by element (for backward formulas that no kernel covers). */
export function mapRaw(x: Tensor, f: (v: number, i: number) => number): Tensor {
  const out = allocateOutput(x.dtype, x.size);
  const d = x.data;
  for (let i = 0; i < d.length; i++) out[i] = f(d[i]!, i);
  return new Tensor(out, x.shape);
}

/** Element-wise combination of same-shaped tensors. */
export function zipRaw(xs: Tensor[], f: (...v: number[]) => number): Tensor {
  const first = xs[0]!;
  for (const x of xs) if (!sameShape(x.shape, first.shape)) throw new ShapeError(`zip: shapes ${fmtShape(first.shape)} and ${fmtShape(x.shape)} differ`);
  const out = allocateOutput(first.dtype, first.size);
  const n = out.length;
  // Fixed arities without spreading: this sits in hot backward passes.
  if (xs.length === 2) {
    const a = xs[0]!.data;
    const b = xs[1]!.data;
    for (let i = 0; i < n; i++) out[i] = f(a[i]!, b[i]!);
  } else if (xs.length === 3) {
    const a = xs[0]!.data;
    const b = xs[1]!.data;
    const c = xs[2]!.data;
    for (let i = 0; i < n; i++) out[i] = f(a[i]!, b[i]!, c[i]!);
  } else {
    const vals = new Array<number>(xs.length);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < xs.length; j++) vals[j] = xs[j]!.data[i]!;
      out[i] = f(...vals);
    }
  }
  return new Tensor(out, first.shape);
}

/** Sums x down to `shape` (the inverse of broadcasting). Returns x itself when shapes agree. */
export function sumTo(x: Tensor, shape: Shape): Tensor {
  if (sameShape(x.shape, shape)) return x;
  const rank = x.rank;
  if (shape.length > rank) throw new ShapeError(`sumTo: cannot reduce ${fmtShape(x.shape)} to the larger rank ${fmtShape(shape)}`);
  const padded = padShape(shape, rank);
  for (let i = 0; i < rank; i++) {
    if (padded[i] !== 1 && padded[i] !== x.shape[i]) throw new ShapeError(`sumTo: cannot reduce ${fmtShape(x.shape)} to ${fmtShape(shape)}`);
  }
  const out = allocate(x.dtype, sizeOf(shape));
  (x.dtype === 'float64' ? jsBackend : backend()).reduceSum(x.data, x.shape, out, padded);
  return new Tensor(out, shape);
}

/** Repeats x along its size-1 (or missing) axes up to `shape`. */
export function broadcastRaw(x: Tensor, shape: Shape): Tensor {
  if (sameShape(x.shape, shape)) return x;
  broadcastShapes('broadcastTo', x.shape, shape);
  const zero = Tensor.zeros(shape, x.dtype);
  return binaryRaw('add', zero, x);
}

export function normAxis(op: string, axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank) throw new ShapeError(`${op}: axis ${axis} is out of range for rank ${rank}`);
  return a;
}

/** Sums over one axis (keeping it as size 1 when keepDims) or over all axes (axis undefined). */
export function sumRaw(x: Tensor, axis?: number, keepDims = false): Tensor {
  if (axis === undefined) {
    const t = sumTo(x, []);
    return keepDims ? t.view(x.shape.map(() => 1)) : t;
  }
  const a = normAxis('sum', axis, x.rank);
  const kept = x.shape.map((d, i) => (i === a ? 1 : d));
  const out = allocate(x.dtype, sizeOf(kept));
  (x.dtype === 'float64' ? jsBackend : backend()).reduceSum(x.data, x.shape, out, kept);
  return new Tensor(out, keepDims ? kept : x.shape.filter((_, i) => i !== a));
}

/**
 * Matrix product over the last two axes: a [..., m, k] · b [k, n] (b may carry the same
 * leading axes as a, or none). transA / transB read the operand's last two axes swapped.
 */
export function matmulRaw(a: Tensor, b: Tensor, transA = false, transB = false): Tensor {
  sameDtype('matmul', a, b);
  if (a.rank < 2 || b.rank < 2) throw new ShapeError(`matmul: operands must have rank >= 2, got ${fmtShape(a.shape)} and ${fmtShape(b.shape)}`);
  const [ar, ac] = [a.shape[a.rank - 2]!, a.shape[a.rank - 1]!];
  const [br, bc] = [b.shape[b.rank - 2]!, b.shape[b.rank - 1]!];
  const [m, k] = transA ? [ac, ar] : [ar, ac];
  const [k2, n] = transB ? [bc, br] : [br, bc];
  if (k !== k2) {
    throw new ShapeError(`matmul: inner dimensions differ, ${fmtShape(a.shape)}${transA ? 'ᵀ' : ''} · ${fmtShape(b.shape)}${transB ? 'ᵀ' : ''} (${k} != ${k2})`);
  }
  const be = a.dtype === 'float64' ? jsBackend : backend();
  const batchA = a.size / (ar * ac || 1);
  const batchB = b.rank === 2 ? 1 : b.size / (br * bc || 1);
  if (b.rank > 2 && batchA !== batchB) throw new ShapeError(`matmul: batch axes differ, ${fmtShape(a.shape)} · ${fmtShape(b.shape)}`);
  if (b.rank === 2 && !transA && a.rank > 2) {
    // Leading axes of a fold into rows: one large product instead of many small ones.
    const out = k > 0 ? allocateOutput(a.dtype, batchA * m * n) : allocate(a.dtype, batchA * m * n);
    be.matmul(a.data, b.data, out, batchA * m, n, k, false, transB, false);
    return new Tensor(out, [...a.shape.slice(0, -2), m, n]);
  }
  // Every element written by the product (a product over nothing, k = 0, is zeros: those stay).
  const out = k > 0 ? allocateOutput(a.dtype, batchA * m * n) : allocate(a.dtype, batchA * m * n);
  if (batchA === 1) {
    be.matmul(a.data, b.data, out, m, n, k, transA, transB, false);
  } else {
    for (let i = 0; i < batchA; i++) {
      const av = a.data.subarray(i * m * k, (i + 1) * m * k);
      const bv = b.rank === 2 ? b.data : b.data.subarray(i * k * n, (i + 1) * k * n);
      be.matmul(av, bv, out.subarray(i * m * n, (i + 1) * m * n), m, n, k, transA, transB, false);
    }
  }
  return new Tensor(out, [...a.shape.slice(0, -2), m, n]);
}

/**
 * into += op(a)·op(b) for matrices, straight from the kernel (no temporary product):
 * how a weight gradient lands in its parameter's `.grad`; into = op(a)·op(b) when
 * `accumulate` is false.
 */
export function matmulAccumulate(a: Tensor, b: Tensor, transA: boolean, transB: boolean, into: Tensor, accumulate = true): void {
  sameDtype('matmul', a, b);
  sameDtype('matmul', a, into);
  const [m, k] = transA ? [a.shape[1]!, a.shape[0]!] : [a.shape[0]!, a.shape[1]!];
  const [k2, n] = transB ? [b.shape[1]!, b.shape[0]!] : [b.shape[0]!, b.shape[1]!];
  if (a.rank !== 2 || b.rank !== 2 || k !== k2 || !sameShape(into.shape, [m, n])) {
    throw new ShapeError(`matmul: cannot accumulate ${fmtShape(a.shape)}${transA ? 'ᵀ' : ''} · ${fmtShape(b.shape)}${transB ? 'ᵀ' : ''} into ${fmtShape(into.shape)}`);
  }
  (a.dtype === 'float64' ? jsBackend : backend()).matmul(a.data, b.data, into.data, m, n, k, transA, transB, accumulate);
}

/** Swaps the last two axes (copying). */
export function transposeRaw(x: Tensor): Tensor {
  if (x.rank < 2) throw new ShapeError(`transpose: needs rank >= 2, got ${fmtShape(x.shape)}`);
  const r = x.shape[x.rank - 2]!;
  const c = x.shape[x.rank - 1]!;
  const out = allocate(x.dtype, x.size);
  const plane = r * c;
  for (let p = 0; p < x.size; p += plane) {
    for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) out[p + j * r + i] = x.data[p + i * c + j]!;
  }
  return new Tensor(out, [...x.shape.slice(0, -2), c, r]);
}
