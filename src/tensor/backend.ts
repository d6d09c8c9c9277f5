import type { Data, Shape } from './tensor.js';
import { jsBackend } from './kernels-js.js';
import { ChainruleError } from '../errors.js';

/** `reluGrad` is relu's backward: a where b > 0, else 0 (a the upstream gradient, b relu's output). */
export type BinaryKind = 'add' | 'sub' | 'mul' | 'div' | 'max' | 'min' | 'reluGrad';
export type UnaryKind = 'neg' | 'exp' | 'log' | 'sqrt' | 'abs' | 'relu' | 'sigmoid' | 'tanh' | 'softplus';

/**
 * The kernels every op stands on. A faster backend (WebAssembly, native) implements
 * this interface and is installed with `setBackend`; layers and ops do not change.
 * A backend may handle only float32 and hand float64 to `jsBackend` (gradient checks).
 */
export interface Backend {
  readonly name: string;
  /**
   * c (m×n) = op(a)·op(b), plus the old c when `accumulate`.
   * op(a) is m×k: a is stored m×k, or k×m when `transA`.
   * op(b) is k×n: b is stored k×n, or n×k when `transB`.
   */
  matmul(a: Data, b: Data, c: Data, m: number, n: number, k: number, transA: boolean, transB: boolean, accumulate: boolean): void;
  /** out = a ∘ b with numpy broadcasting; shapes are already padded to out's rank. */
  binary(kind: BinaryKind, a: Data, aShape: Shape, b: Data, bShape: Shape, out: Data, outShape: Shape): void;
  unary(kind: UnaryKind, x: Data, out: Data): void;
  /** Sums x into out; outShape has x's rank with 1 on every reduced axis. */
  reduceSum(x: Data, xShape: Shape, out: Data, outShape: Shape): void;
  /**
   * Fused float32 optimizer updates, when the backend has them; each optimizer in src/optim
   * keeps its TypeScript loop as the reference, and these must give the same bits.
   */
  readonly optimizer?: OptimizerKernels;
  /** The data movement around convolution and pooling (float32), when the backend has it; same bits as conv.ts's loops. */
  readonly conv?: ConvKernels;
  /**
   * Products against a float32 matrix packed once (a weight over a step's micro-batches: it
   * does not change within a step), when the backend has them; the same bits as `matmul`.
   */
  readonly packed?: PackedMatmul;
  /** Whether no element is NaN or ±Infinity, when the backend has a faster pass than src/nn/finite.ts's. */
  readonly allFinite?: (x: Float32Array) => boolean;
  /**
   * Kernel threads, when the backend has them: the calling thread's large matrix products are
   * split among `n` threads (PyTorch's `set_num_threads`), each output element computed as on
   * one thread, so the bits do not change.
   */
  readonly kernelThreads?: KernelThreads;
}

export interface KernelThreads {
  /** Threads for this JS thread's products from now on (1: not split). */
  set(n: number): void;
  get(): number;
  /** Products split among more than one thread so far, in the whole process (a product that found the pool busy ran alone). */
  splits(): number;
}

/** op(b), k×n, in a backend's own packed layout (opaque). */
export interface PackedMatrix {
  readonly n: number;
  readonly k: number;
  readonly transB: boolean;
}

export interface PackedMatmul {
  /**
   * `Backend.matmul`, keeping op(b) packed for `matmulPacked`: into `into` (an earlier pack,
   * whose memory is reused) or a new pack; returns the pack.
   */
  matmulPacking(a: Float32Array, b: Float32Array, c: Float32Array, m: number, n: number, k: number,
    transA: boolean, transB: boolean, accumulate: boolean, into: PackedMatrix | null): PackedMatrix;
  /** c (m×n) = op(a)·op(b), plus the old c when `accumulate`, with op(b) from `matmulPacking`. */
  matmulPacked(a: Float32Array, b: PackedMatrix, c: Float32Array, m: number, transA: boolean, accumulate: boolean): void;
}
/** Convolution or pooling geometry over an NCHW batch (pooling: padding 0, dilation 1). */
export interface ConvGeometry {
  n: number; c: number; h: number; w: number;
  kh: number; kw: number; oh: number; ow: number;
  sh: number; sw: number; ph: number; pw: number; dh: number; dw: number;
}

export interface ConvKernels {
  /** Sample b of x [n, c, h, w] unfolded into colT [oh·ow, c·kh·kw] (padding reads as zero). */
  im2colT(x: Float32Array, b: number, g: ConvGeometry, colT: Float32Array): void;
  /** The adjoint of im2colT: adds colT back into sample b of x. */
  col2imT(colT: Float32Array, b: number, g: ConvGeometry, x: Float32Array): void;
  /** Max pooling: out [n, c, oh, ow] and the flat index of each window's first maximum. */
  maxPool(x: Float32Array, g: ConvGeometry, out: Float32Array, argmax: Int32Array): void;
  /** Max pooling's backward: gx[argmax[k]] += g[k], k in order. */
  maxPoolGrad(g: Float32Array, argmax: Int32Array, gx: Float32Array): void;
  /** out [n, c, plane] += bias[c]. */
  channelBias(out: Float32Array, bias: Float32Array, n: number, c: number, plane: number): void;
  /** db[c] += Σ over samples and the plane of g [n, c, plane] (double per (sample, channel), as conv.ts). */
  channelBiasGrad(g: Float32Array, n: number, c: number, plane: number, db: Float32Array): void;
  /**
   * conv.ts's per-sample loops of products in one call each (and split among kernel threads),
   * when the backend has them; the same kernels in the same order, so the same bits. `o`:
   * output channels; col [n, P, K]. forward: col filled, out [n, o, P] = W·colT_bᵀ per sample;
   * inputGrad: dx (zeroed) += the input gradient; weightGrad: dw [o, K] = Σ_b dY_b·colT_b.
   */
  forward?(x: Float32Array, w: Float32Array, out: Float32Array, col: Float32Array, g: ConvGeometry, o: number): void;
  inputGrad?(gy: Float32Array, w: Float32Array, dx: Float32Array, g: ConvGeometry, o: number): void;
  weightGrad?(gy: Float32Array, col: Float32Array, dw: Float32Array, g: ConvGeometry, o: number): void;
}

/**
 * In-place parameter updates over Float32Arrays, PyTorch's formulas as in src/optim. The
 * gradient is first multiplied by `scale` and rounded to float32 (micro-batch sums → means).
 */
export interface OptimizerKernels {
  sgd(p: Float32Array, g: Float32Array, scale: number, lr: number, weightDecay: number): void;
  momentum(p: Float32Array, g: Float32Array, b: Float32Array, scale: number, lr: number, momentum: number,
    dampening: number, weightDecay: number, nesterov: boolean, fresh: boolean): void;
  adam(p: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, vmax: Float32Array | null, scale: number,
    stepSize: number, sqrtBc2: number, shrink: number, l2: number, beta1: number, beta2: number, eps: number): void;
}

let current: Backend = jsBackend;

export function backend(): Backend { return current; }

export function setBackend(b: Backend): void { current = b; }

/** The most kernel threads a thread's products are split among. */
export const MAX_KERNEL_THREADS = 64;

/** Refuses, naming `who`, a kernel thread count out of range, or one that backend b (when given) cannot run. */
export function checkKernelThreads(b: Backend | null, n: number, who: string): void {
  if (!Number.isSafeInteger(n) || n < 1 || n > MAX_KERNEL_THREADS) {
    throw new ChainruleError('BAD_KERNEL_THREADS', `${who}: kernel threads must be an integer from 1 to ${MAX_KERNEL_THREADS}, got ${JSON.stringify(n)}`);
  }
  if (b && n > 1 && !b.kernelThreads) {
    throw new ChainruleError('KERNEL_THREADS_UNAVAILABLE', `${who}: ${n} kernel threads were asked for, but backend '${b.name}' runs every product on its caller's thread`,
      { hint: 'kernel threads need the native backend (built at install with a C compiler; see `npm run build:native`): use --kernel-threads 1 or --backend native' });
  }
}

/**
 * Runs fn with this thread's products split among n kernel threads (the backend's previous
 * count after it). A backend without kernel threads runs fn as it is when n is 1, and is
 * refused otherwise, naming `who`.
 *
 * @example
 * withKernelThreads(2, () => model.forward(x));   // each large product on two cores
 */
export function withKernelThreads<T>(n: number, fn: () => T, who = 'withKernelThreads'): T {
  checkKernelThreads(current, n, who);
  const k = current.kernelThreads;
  if (!k) return fn();
  const was = k.get();
  if (was === n) return fn();
  k.set(n);
  try {
    return fn();
  } finally {
    k.set(was);
  }
}

export { jsBackend };
