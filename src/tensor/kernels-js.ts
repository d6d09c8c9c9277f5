/**
 * The reference kernels in plain TypeScript, for float32 and float64 alike.
 * Every faster backend is tested against these.
 */
import type { Backend, BinaryKind, UnaryKind } from './backend.js';
import type { Data, Shape } from './tensor.js';

function stridesOf(shape: Shape): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) { s[i] = acc; acc *= shape[i]!; }
  return s;
}

/** Strides of `shape` seen from a broadcast output: 0 along axes of size 1. */
function broadcastStrides(shape: Shape): number[] {
  const s = stridesOf(shape);
  for (let i = 0; i < shape.length; i++) if (shape[i] === 1) s[i] = 0;
  return s;
}

const binaryFns: Record<BinaryKind, (x: number, y: number) => number> = {
  add: (x, y) => x + y,
  sub: (x, y) => x - y,
  mul: (x, y) => x * y,
  div: (x, y) => x / y,
  max: (x, y) => (x >= y ? x : y),
  min: (x, y) => (x <= y ? x : y),
  reluGrad: (g, y) => (y > 0 ? g : 0),
};

function softplus(x: number): number {
  // Stable: log(1 + e^x) = max(x, 0) + log1p(e^-|x|).
  return Math.max(x, 0) + Math.log1p(Math.exp(-Math.abs(x)));
}

function sigmoid(x: number): number {
  if (x >= 0) return 1 / (1 + Math.exp(-x));
  const e = Math.exp(x);
  return e / (1 + e);
}

const unaryFns: Record<UnaryKind, (x: number) => number> = {
  neg: (x) => -x,
  exp: Math.exp,
  log: Math.log,
  sqrt: Math.sqrt,
  abs: Math.abs,
  relu: (x) => (x > 0 ? x : 0),
  sigmoid,
  tanh: Math.tanh,
  softplus,
};

function binary(kind: BinaryKind, a: Data, aShape: Shape, b: Data, bShape: Shape, out: Data, outShape: Shape): void {
  const n = out.length;
  const f = binaryFns[kind];
  if (a.length === n && b.length === n) {
    if (kind === 'add') { for (let i = 0; i < n; i++) out[i] = a[i]! + b[i]!; return; }
    if (kind === 'mul') { for (let i = 0; i < n; i++) out[i] = a[i]! * b[i]!; return; }
    for (let i = 0; i < n; i++) out[i] = f(a[i]!, b[i]!);
    return;
  }
  if (b.length === 1) {
    const y = b[0]!;
    for (let i = 0; i < n; i++) out[i] = f(a[i % a.length]!, y);
    if (a.length === n) return;
  }
  const rank = outShape.length;
  if (rank === 0) { out[0] = f(a[0]!, b[0]!); return; }
  const sa = broadcastStrides(aShape);
  const sb = broadcastStrides(bShape);
  const last = rank - 1;
  const inner = outShape[last]!;
  const ia = sa[last]!;
  const ib = sb[last]!;
  const idx = new Array<number>(rank).fill(0);
  let pa = 0;
  let pb = 0;
  for (let o = 0; o < n; o += inner) {
    if (kind === 'add') for (let j = 0; j < inner; j++) out[o + j] = a[pa + j * ia]! + b[pb + j * ib]!;
    else if (kind === 'mul') for (let j = 0; j < inner; j++) out[o + j] = a[pa + j * ia]! * b[pb + j * ib]!;
    else for (let j = 0; j < inner; j++) out[o + j] = f(a[pa + j * ia]!, b[pb + j * ib]!);
    // Odometer over the outer axes.
    for (let d = last - 1; d >= 0; d--) {
      idx[d]!++;
      pa += sa[d]!;
      pb += sb[d]!;
      if (idx[d]! < outShape[d]!) break;
      pa -= sa[d]! * outShape[d]!;
      pb -= sb[d]! * outShape[d]!;
      idx[d] = 0;
    }
  }
}

function unary(kind: UnaryKind, x: Data, out: Data): void {
  const n = x.length;
  if (kind === 'relu') { for (let i = 0; i < n; i++) { const v = x[i]!; out[i] = v > 0 ? v : 0; } return; }
  const f = unaryFns[kind];
  for (let i = 0; i < n; i++) out[i] = f(x[i]!);
}

function reduceSum(x: Data, xShape: Shape, out: Data, outShape: Shape): void {
  out.fill(0);
  const rank = xShape.length;
  if (out.length === 1) {
    let s = 0;
    for (let i = 0; i < x.length; i++) s += x[i]!;
    out[0] = s;
    return;
  }
  const so = broadcastStrides(outShape);
  const idx = new Array<number>(rank).fill(0);
  const last = rank - 1;
  const inner = xShape[last]!;
  const io = so[last]!;
  let po = 0;
  for (let i = 0; i < x.length; i += inner) {
    if (io === 0) {
      let s = out[po]!;
      for (let j = 0; j < inner; j++) s += x[i + j]!;
      out[po] = s;
    } else {
      for (let j = 0; j < inner; j++) out[po + j] = out[po + j]! + x[i + j]!;
    }
    for (let d = last - 1; d >= 0; d--) {
      idx[d]!++;
      po += so[d]!;
      if (idx[d]! < xShape[d]!) break;
      po -= so[d]! * xShape[d]!;
      idx[d] = 0;
    }
  }
}

/** Transposes an r×c matrix into out (c×r). */
export function transpose2d(x: Data, r: number, c: number, out: Data): void {
  const B = 32;
  for (let i0 = 0; i0 < r; i0 += B) {
    const i1 = Math.min(i0 + B, r);
    for (let j0 = 0; j0 < c; j0 += B) {
      const j1 = Math.min(j0 + B, c);
      for (let i = i0; i < i1; i++) for (let j = j0; j < j1; j++) out[j * r + i] = x[i * c + j]!;
    }
  }
}

const KB = 256; // k-block: keeps a panel of b in L2 while rows of a stream by

/** c(m×n) += a(m×k)·b(k×n), all contiguous, i-k-j order blocked over k, two rows at a time. */
function gemmNN(a: Data, b: Data, c: Data, m: number, n: number, k: number): void {
  for (let p0 = 0; p0 < k; p0 += KB) {
    const p1 = Math.min(p0 + KB, k);
    let i = 0;
    for (; i + 1 < m; i += 2) {
      const c0 = i * n;
      const c1 = c0 + n;
      const a0 = i * k;
      const a1 = a0 + k;
      for (let p = p0; p < p1; p++) {
        const x0 = a[a0 + p]!;
        const x1 = a[a1 + p]!;
        if (x0 === 0 && x1 === 0) continue; // ReLU activations are often zero
        const bp = p * n;
        for (let j = 0; j < n; j++) {
          const y = b[bp + j]!;
          c[c0 + j] = c[c0 + j]! + x0 * y;
          c[c1 + j] = c[c1 + j]! + x1 * y;
        }
      }
    }
    for (; i < m; i++) {
      const c0 = i * n;
      const a0 = i * k;
      for (let p = p0; p < p1; p++) {
        const x0 = a[a0 + p]!;
        if (x0 === 0) continue;
        const bp = p * n;
        for (let j = 0; j < n; j++) c[c0 + j] = c[c0 + j]! + x0 * b[bp + j]!;
      }
    }
  }
}

function matmul(a: Data, b: Data, c: Data, m: number, n: number, k: number, transA: boolean, transB: boolean, accumulate: boolean): void {
  if (!accumulate) c.fill(0);
  if (m === 0 || n === 0 || k === 0) return;
  // Pack transposed operands so that one contiguous loop serves every case.
  let A = a;
  let B = b;
  if (transA) { A = new (a.constructor as { new(n: number): Data })(m * k); transpose2d(a, k, m, A); }
  if (transB) { B = new (b.constructor as { new(n: number): Data })(k * n); transpose2d(b, n, k, B); }
  gemmNN(A, B, c, m, n, k);
}

export const jsBackend: Backend = { name: 'js', matmul, binary, unary, reduceSum };
