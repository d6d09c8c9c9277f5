/**
 * The native backend: a Node addon (native/, built by node-gyp at install when a C compiler
 * is present) with a register-tiled sgemm (12×32 AVX-512, 6×16 AVX2/FMA or portable C,
 * chosen at run time by CPU detection; a packed right operand can be kept for later products,
 * `Backend.packed`; large products split among kernel threads, `Backend.kernelThreads`), and element-wise, reduction, conv and optimizer
 * kernels that give the reference kernels' exact bits (exp, log, sigmoid, tanh, softplus:
 * within one float32 ulp). Float32Arrays are handed over as they are (no copy); float64
 * data and the cases the addon does not cover go to `jsBackend`.
 *
 * @example
 * if (nativeAvailable()) setBackend(createNativeBackend());
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Backend, BinaryKind, ConvGeometry, ConvKernels, OptimizerKernels, PackedMatmul, PackedMatrix, UnaryKind } from '../backend.js';
import { jsBackend } from '../kernels-js.js';
import type { Data, Shape } from '../tensor.js';

interface Addon {
  kernel(): string;
  kernels(): string[];
  useKernel(name: string): void;
  sgemm(a: Float32Array, b: Float32Array, c: Float32Array, m: number, n: number, k: number, transA: number, transB: number, accumulate: number): void;
  sgemmPacking(a: Float32Array, b: Float32Array, c: Float32Array, m: number, n: number, k: number, transA: number, transB: number, accumulate: number, into: unknown): unknown;
  sgemmPacked(a: Float32Array, packed: unknown, c: Float32Array, m: number, transA: number, accumulate: number): void;
  packedKernel(packed: unknown): string;
  binary(kind: number, a: Float32Array, aMode: number, b: Float32Array, bMode: number, out: Float32Array, n: number, inner: number): void;
  unary(kind: number, x: Float32Array, out: Float32Array, n: number): void;
  sumAll(x: Float32Array, n: number): number;
  /** Absent from addons built before it. */
  allFinite?(x: Float32Array, n: number): boolean;
  /** Absent from addons built before it. */
  setThreads?(n: number): void;
  threads?(): number;
  splitProducts?(): number;
  sumRows(x: Float32Array, rows: number, cols: number, out: Float32Array): void;
  sumCols(x: Float32Array, rows: number, cols: number, out: Float32Array): void;
  sgd(p: Float32Array, g: Float32Array, scale: number, lr: number, wd: number): void;
  momentum(p: Float32Array, g: Float32Array, b: Float32Array, scale: number, lr: number, mu: number, dampening: number, wd: number, nesterov: number, fresh: number): void;
  adam(p: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, vmax: Float32Array | null, scale: number,
    stepSize: number, sqrtBc2: number, shrink: number, l2: number, b1: number, b2: number, eps: number): void;
  im2colT(x: Float32Array, b: number, geometry: Int32Array, colT: Float32Array): void;
  col2imT(colT: Float32Array, b: number, geometry: Int32Array, x: Float32Array): void;
  maxPool(x: Float32Array, geometry: Int32Array, out: Float32Array, argmax: Int32Array): void;
  maxPoolGrad(g: Float32Array, argmax: Int32Array, gx: Float32Array): void;
  channelBias(out: Float32Array, bias: Float32Array, n: number, c: number, plane: number): void;
  channelBiasGrad(g: Float32Array, n: number, c: number, plane: number, db: Float32Array): void;
  /** Absent from addons built before them. */
  convForward?(x: Float32Array, w: Float32Array, out: Float32Array, col: Float32Array, geometry: Int32Array, o: number): void;
  convInputGrad?(gy: Float32Array, w: Float32Array, dx: Float32Array, geometry: Int32Array, o: number): void;
  convWeightGrad?(gy: Float32Array, col: Float32Array, dw: Float32Array, geometry: Int32Array, o: number): void;
}

/** Where the build puts the addon, relative to the package root. */
export const addonRelativePath = join('native', 'build', 'Release', 'chainrule_native.node');

/** The package root: the nearest folder above this module whose package.json is chainrule's. */
function packageRoot(): string | null {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'chainrule') return dir;
      } catch { /* not ours: keep looking */ }
    }
    const up = dirname(dir);
    if (up === dir) return null;
    dir = up;
  }
}

let loaded: { addon: Addon | null; why: string } | undefined;

/**
 * Loads the addon once: from `CHAINRULE_NATIVE_ADDON` when set (a path to a .node file),
 * else from the package's native/build. Never throws; `nativeUnavailableReason` says why not.
 */
function load(): { addon: Addon | null; why: string } {
  if (loaded) return loaded;
  const fromEnv = process.env['CHAINRULE_NATIVE_ADDON'];
  const root = packageRoot();
  const path = fromEnv !== undefined && fromEnv !== '' ? fromEnv : root ? join(root, addonRelativePath) : null;
  if (path === null) {
    loaded = { addon: null, why: 'cannot find the chainrule package root to look for the native addon' };
  } else if (!existsSync(path)) {
    loaded = { addon: null, why: `the native addon was not built (${path} is missing: no C compiler at install, or run \`npm run build:native\`)` };
  } else {
    try {
      loaded = { addon: createRequire(import.meta.url)(path) as Addon, why: '' };
    } catch (e) {
      loaded = { addon: null, why: `the native addon at ${path} does not load: ${(e as Error).message.split('\n')[0]}` };
    }
  }
  return loaded;
}

export function nativeAvailable(): boolean { return load().addon !== null; }

/** Why `nativeAvailable()` is false ('' when it is true). */
export function nativeUnavailableReason(): string { return load().why; }

/** The sgemm microkernel the addon chose for this CPU: 'avx512', 'avx2+fma' or 'generic'; null without the addon. */
export function nativeKernel(): string | null { return load().addon?.kernel() ?? null; }

/** The microkernels this CPU can run, fastest first ([] without the addon). */
export function nativeKernels(): string[] { return load().addon?.kernels() ?? []; }

const binaryKinds: Record<BinaryKind, number> = { add: 0, sub: 1, mul: 2, div: 3, max: 4, min: 5, reluGrad: 6 };
/**
 * Every unary kind runs natively. neg, abs, relu and sqrt give the reference's bits; the
 * transcendental ones use the same double formulas with the C library's exp/log/tanh, which
 * may differ from V8's in the last bit of the double, so rarely by one float32 ulp.
 */
const unaryKinds: Record<UnaryKind, number> = { neg: 0, abs: 1, relu: 2, sqrt: 3, exp: 4, log: 5, sigmoid: 6, tanh: 7, softplus: 8 };
const FULL = 0;
const SCALAR = 1;
const ROW = 2;

/** How an operand of `len` elements broadcasts to an output of n elements whose last axis is `inner`. */
function modeOf(len: number, shape: Shape, n: number, inner: number): number {
  if (len === n) return FULL;
  if (len === 1) return SCALAR;
  if (len === inner && shape[shape.length - 1] === inner) return ROW;
  return -1;
}

/**
 * A reduction of x to out that the addon sums in the reference's order: leading axes summed
 * away (rows, e.g. a bias gradient: float accumulation per output, row by row) or the last
 * axis alone (cols: one double accumulator per output); null for any other pattern.
 */
function matrixReduction(xShape: Shape, outShape: Shape): { kind: 'rows' | 'cols'; rows: number; cols: number } | null {
  const r = xShape.length;
  const prod = (from: number, to: number): number => { let p = 1; for (let d = from; d < to; d++) p *= xShape[d]!; return p; };
  let t = 0;
  while (t < r && outShape[t] === 1) t++;
  let leading = true;
  for (let d = t; d < r; d++) if (outShape[d] !== xShape[d]) leading = false;
  if (leading) return { kind: 'rows', rows: prod(0, t), cols: prod(t, r) };
  for (let d = 0; d < r - 1; d++) if (outShape[d] !== xShape[d]) return null;
  return outShape[r - 1] === 1 ? { kind: 'cols', rows: prod(0, r - 1), cols: xShape[r - 1]! } : null;
}

/**
 * The native backend; throws with the reason when the addon is not there. `kernel` pins the
 * sgemm microkernel for this backend's calls (tests and benchmarks compare them); by default
 * the addon's choice, the fastest the CPU runs.
 */
export function createNativeBackend(kernel?: string): Backend {
  const { addon, why } = load();
  if (!addon) throw new Error(`backend 'native' is unavailable: ${why}`);
  const nat = addon;
  if (kernel !== undefined && !nat.kernels().includes(kernel)) {
    throw new Error(`native kernel '${kernel}' does not run on this CPU; it runs ${nat.kernels().map((k) => `'${k}'`).join(', ')}`);
  }
  /** Runs f with this backend's microkernel (when pinned) and restores the addon's choice. */
  const pinned = <T>(f: () => T): T => {
    if (kernel === undefined) return f();
    const before = nat.kernel();
    nat.useKernel(kernel);
    try {
      return f();
    } finally {
      nat.useKernel(before);
    }
  };
  const sgemm = kernel === undefined ? nat.sgemm : (a: Float32Array, b: Float32Array, c: Float32Array, m: number, n: number, k: number, tA: number, tB: number, acc: number): void =>
    pinned(() => nat.sgemm(a, b, c, m, n, k, tA, tB, acc));

  // A pack holds the layout of the kernel that made it; products against it run that kernel.
  class NativePacked implements PackedMatrix {
    constructor(readonly handle: unknown, public n: number, public k: number, public transB: boolean) {}
  }
  const packed: PackedMatmul = {
    matmulPacking(a, b, c, m, n, k, transA, transB, accumulate, into) {
      const reuse = into instanceof NativePacked ? into : null;
      const handle = pinned(() => nat.sgemmPacking(a, b, c, m, n, k, transA ? 1 : 0, transB ? 1 : 0, accumulate ? 1 : 0, reuse ? reuse.handle : null));
      if (!reuse) return new NativePacked(handle, n, k, transB);
      reuse.n = n; // packed over in place: the same handle, now holding this op(b)
      reuse.k = k;
      reuse.transB = transB;
      return reuse;
    },
    matmulPacked(a, b, c, m, transA, accumulate) {
      if (!(b instanceof NativePacked)) throw new TypeError('native matmulPacked: the pack must come from this backend\'s matmulPacking');
      nat.sgemmPacked(a, b.handle, c, m, transA ? 1 : 0, accumulate ? 1 : 0);
    },
  };

  const optimizer: OptimizerKernels = {
    sgd: (p, g, scale, lr, wd) => nat.sgd(p, g, scale, lr, wd),
    momentum: (p, g, b, scale, lr, mu, dampening, wd, nesterov, fresh) => nat.momentum(p, g, b, scale, lr, mu, dampening, wd, nesterov ? 1 : 0, fresh ? 1 : 0),
    adam: (p, g, m, v, vmax, scale, stepSize, sqrtBc2, shrink, l2, b1, b2, eps) => nat.adam(p, g, m, v, vmax, scale, stepSize, sqrtBc2, shrink, l2, b1, b2, eps),
  };

  // One geometry buffer, refilled per call (the addon reads it before returning).
  const geo = new Int32Array(14);
  const pack = (g: ConvGeometry): Int32Array => {
    geo[0] = g.n; geo[1] = g.c; geo[2] = g.h; geo[3] = g.w; geo[4] = g.kh; geo[5] = g.kw; geo[6] = g.oh;
    geo[7] = g.ow; geo[8] = g.sh; geo[9] = g.sw; geo[10] = g.ph; geo[11] = g.pw; geo[12] = g.dh; geo[13] = g.dw;
    return geo;
  };
  const conv: ConvKernels = {
    im2colT: (x, b, g, colT) => nat.im2colT(x, b, pack(g), colT),
    col2imT: (colT, b, g, x) => nat.col2imT(colT, b, pack(g), x),
    maxPool: (x, g, out, argmax) => nat.maxPool(x, pack(g), out, argmax),
    maxPoolGrad: (g, argmax, gx) => nat.maxPoolGrad(g, argmax, gx),
    channelBias: (out, bias, n, c, plane) => nat.channelBias(out, bias, n, c, plane),
    channelBiasGrad: (g, n, c, plane, db) => nat.channelBiasGrad(g, n, c, plane, db),
    ...(typeof nat.convForward === 'function' ? {
      forward: (x: Float32Array, w: Float32Array, out: Float32Array, col: Float32Array, g: ConvGeometry, o: number) => nat.convForward!(x, w, out, col, pack(g), o),
      inputGrad: (gy: Float32Array, w: Float32Array, dx: Float32Array, g: ConvGeometry, o: number) => nat.convInputGrad!(gy, w, dx, pack(g), o),
      weightGrad: (gy: Float32Array, col: Float32Array, dw: Float32Array, g: ConvGeometry, o: number) => nat.convWeightGrad!(gy, col, dw, pack(g), o),
    } : {}),
  };

  return {
    name: 'native',
    matmul(a: Data, b: Data, c: Data, m: number, n: number, k: number, transA: boolean, transB: boolean, accumulate: boolean): void {
      if (a instanceof Float32Array && b instanceof Float32Array && c instanceof Float32Array) {
        sgemm(a, b, c, m, n, k, transA ? 1 : 0, transB ? 1 : 0, accumulate ? 1 : 0);
      } else {
        jsBackend.matmul(a, b, c, m, n, k, transA, transB, accumulate);
      }
    },
    binary(kind: BinaryKind, a: Data, aShape: Shape, b: Data, bShape: Shape, out: Data, outShape: Shape): void {
      const n = out.length;
      const inner = outShape.length > 0 ? outShape[outShape.length - 1]! : 1;
      if (a instanceof Float32Array && b instanceof Float32Array && out instanceof Float32Array && n > 0) {
        const am = modeOf(a.length, aShape, n, inner);
        const bm = modeOf(b.length, bShape, n, inner);
        if (am >= 0 && bm >= 0) {
          nat.binary(binaryKinds[kind], a, am, b, bm, out, n, inner);
          return;
        }
      }
      jsBackend.binary(kind, a, aShape, b, bShape, out, outShape);
    },
    unary(kind: UnaryKind, x: Data, out: Data): void {
      if (x instanceof Float32Array && out instanceof Float32Array) nat.unary(unaryKinds[kind], x, out, x.length);
      else jsBackend.unary(kind, x, out);
    },
    reduceSum(x: Data, xShape: Shape, out: Data, outShape: Shape): void {
      if (x instanceof Float32Array && out instanceof Float32Array && xShape.length === outShape.length) {
        if (out.length === 1) { out[0] = nat.sumAll(x, x.length); return; }
        const r = matrixReduction(xShape, outShape);
        if (r && r.kind === 'rows') { nat.sumRows(x, r.rows, r.cols, out); return; }
        if (r && r.kind === 'cols') { nat.sumCols(x, r.rows, r.cols, out); return; }
      }
      jsBackend.reduceSum(x, xShape, out, outShape);
    },
    ...(typeof nat.allFinite === 'function' ? { allFinite: (x: Float32Array) => nat.allFinite!(x, x.length) } : {}),
    ...(typeof nat.setThreads === 'function' ? { kernelThreads: { set: (n: number) => nat.setThreads!(n), get: () => nat.threads!(), splits: () => nat.splitProducts!() } } : {}),
    optimizer,
    conv,
    packed,
  };
}
