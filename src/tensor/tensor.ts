/**
 * A contiguous, row-major tensor: a shape and a flat typed array.
 * float32 is the default; float64 is there for gradient checks.
 *
 * The autograd fields (`requiresGrad`, `grad`, `producer`) live here so that the
 * tape can find them, but this file knows nothing of the tape.
 */
import { currentArena } from './arena.js';

export type DType = 'float32' | 'float64';
export type Data = Float32Array | Float64Array;
export type Shape = readonly number[];

export function sizeOf(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function checkShape(shape: Shape, where: string): void {
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) {
      throw new RangeError(`${where}: shape [${shape.join(', ')}] must hold non-negative integers`);
    }
  }
}

/** A zero-filled buffer: from the step arena while one runs (src/tensor/arena.ts), else a new one. */
export function allocate(dtype: DType, n: number): Data {
  const arena = currentArena();
  if (arena) return arena.take(dtype, n);
  return dtype === 'float64' ? new Float64Array(n) : new Float32Array(n);
}

/**
 * A buffer for an output that the kernel then writes in full (every element, whatever the
 * inputs): from the arena while one runs, not zeroed; else a new (zeroed) one.
 */
export function allocateOutput(dtype: DType, n: number): Data {
  const arena = currentArena();
  if (arena) return arena.takeUninitialized(dtype, n);
  return dtype === 'float64' ? new Float64Array(n) : new Float32Array(n);
}

/** A zero-filled Int32Array of indices that dies with the step's tape (from the arena while one runs). */
export function allocateIndices(n: number): Int32Array {
  return currentArena()?.takeIndices(n) ?? new Int32Array(n);
}

/** A zero-filled buffer that outlives the step (a gradient, a cache): never from an arena. */
export function allocatePersistent(dtype: DType, n: number): Data {
  return dtype === 'float64' ? new Float64Array(n) : new Float32Array(n);
}

export function dtypeOf(data: Data): DType {
  return data instanceof Float64Array ? 'float64' : 'float32';
}

export const fmtShape = (shape: Shape): string => `[${shape.join(', ')}]`;

export function sameShape(a: Shape, b: Shape): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Gradient work a backward pass left pending on a tensor (autograd's deferred weight
 * gradients): done before `.grad` is read, dropped when the gradient is zeroed.
 */
export interface PendingGrad {
  /** Adds the pending contributions into the gradient (its buffer from `ownGrad`). */
  flush(): void;
  /** The gradient was zeroed: drop what is pending. */
  reset(): void;
}

export class Tensor {
  readonly shape: Shape;
  readonly data: Data;
  /** Leaves with requiresGrad get `.grad` filled (accumulated) by backward. */
  requiresGrad: boolean;
  /** Set by whoever defers gradient work on this tensor (see PendingGrad). */
  pendingGrad: PendingGrad | null = null;
  private storedGrad: Tensor | null = null;
  /** Name of the op that produced this tensor on a tape; null for leaves. */
  producer: string | null = null;
  /** Optional name (parameters carry theirs, e.g. `0.weight`). */
  name: string | undefined;
  /** Made by Tensor.param: its gradient buffer outlives steps (never from a step arena). */
  isParameter = false;

  constructor(data: Data, shape: Shape, requiresGrad = false) {
    checkShape(shape, 'Tensor');
    if (data.length !== sizeOf(shape)) {
      throw new RangeError(`Tensor: data length ${data.length} does not match shape ${fmtShape(shape)} (${sizeOf(shape)} elements)`);
    }
    this.data = data;
    this.shape = Object.freeze([...shape]);
    this.requiresGrad = requiresGrad;
  }

  /**
   * Moves the values into `storage` (same length and type) and makes it this tensor's data:
   * for a parameter that replicas on threads keep once, in shared memory. Only before anything
   * holds on to the old data (a stage does it as it is configured).
   */
  moveDataTo(storage: Data): void {
    if (storage.length !== this.data.length || dtypeOf(storage) !== this.dtype) throw new RangeError(`moveDataTo: a ${dtypeOf(storage)} array of ${storage.length} elements for a ${this.dtype} tensor of ${this.size}`);
    storage.set(this.data as never);
    (this as { data: Data }).data = storage;
  }

  get size(): number { return this.data.length; }
  get rank(): number { return this.shape.length; }
  get dtype(): DType { return dtypeOf(this.data); }

  static zeros(shape: Shape, dtype: DType = 'float32'): Tensor {
    checkShape(shape, 'Tensor.zeros');
    return new Tensor(allocate(dtype, sizeOf(shape)), shape);
  }

  static full(shape: Shape, value: number, dtype: DType = 'float32'): Tensor {
    const t = Tensor.zeros(shape, dtype);
    t.data.fill(value);
    return t;
  }

  static ones(shape: Shape, dtype: DType = 'float32'): Tensor {
    return Tensor.full(shape, 1, dtype);
  }

  static scalar(value: number, dtype: DType = 'float32'): Tensor {
    return Tensor.full([], value, dtype);
  }

  /** Builds a tensor from numbers; the shape defaults to a vector. */
  static from(values: ArrayLike<number>, shape: Shape = [values.length], dtype: DType = 'float32'): Tensor {
    const data = allocate(dtype, values.length);
    data.set(values as ArrayLike<number>);
    return new Tensor(data, shape);
  }

  /** A parameter: a leaf that collects gradients. */
  static param(data: Data, shape: Shape, name?: string): Tensor {
    const t = new Tensor(data, shape, true);
    t.name = name;
    t.isParameter = true;
    return t;
  }

  item(): number {
    if (this.size !== 1) throw new RangeError(`item(): tensor of shape ${fmtShape(this.shape)} has ${this.size} elements, expected 1`);
    return this.data[0]!;
  }

  toArray(): number[] { return Array.from(this.data); }

  /** A copy with no autograd history. */
  clone(): Tensor {
    return new Tensor(this.data.slice(), this.shape);
  }

  /** Same data, a new shape (no copy, no autograd history). */
  view(shape: Shape): Tensor {
    return new Tensor(this.data, shape);
  }

  to(dtype: DType): Tensor {
    if (dtype === this.dtype) return this;
    const d = allocate(dtype, this.size);
    d.set(this.data);
    return new Tensor(d, this.shape, this.requiresGrad);
  }

  /** The accumulated gradient, pending work included (null before any backward reached it). */
  get grad(): Tensor | null {
    if (this.pendingGrad !== null) this.pendingGrad.flush();
    return this.storedGrad;
  }

  /** Replaces the gradient (pending work is done first, into the gradient being replaced). */
  set grad(g: Tensor | null) {
    if (this.pendingGrad !== null) this.pendingGrad.flush();
    this.storedGrad = g;
  }

  /** The gradient buffer as it stands, without doing pending work; a zeroed one when there is none. */
  ownGrad(): Tensor {
    this.storedGrad ??= this.zeroedGradBuffer();
    return this.storedGrad;
  }

  /** Whether a gradient is stored (pending work aside): false from zeroGrad until something lands. */
  get hasOwnGrad(): boolean { return this.storedGrad !== null; }

  /**
   * Becomes the gradient and is returned, not zeroed, for a caller that writes every element
   * (a product with k > 0): saves zero-filling a buffer only to add to it. Only while there is
   * no gradient.
   */
  gradToOverwrite(): Tensor {
    if (this.storedGrad !== null) throw new Error('gradToOverwrite: the tensor already has a gradient to add to');
    this.storedGrad = this.takeGradBuffer().buffer;
    return this.storedGrad;
  }

  /**
   * Clears the accumulated gradient (`grad` becomes null) and drops pending work. Its buffer
   * is kept for the next backward, so training allocates no gradient buffers per step: a
   * gradient read before zeroGrad must be copied if it is needed after the next backward.
   */
  zeroGrad(): void {
    this.pendingGrad?.reset();
    if (this.storedGrad !== null) this.spareGrad = this.storedGrad;
    this.storedGrad = null;
  }

  /**
   * The buffer the next gradient accumulates into (instead of the one zeroGrad released):
   * e.g. a view of shared memory that other threads read.
   */
  useGradBuffer(buffer: Tensor): void {
    if (buffer.size !== this.size || buffer.dtype !== this.dtype) throw new RangeError(`useGradBuffer: a ${buffer.dtype} buffer of ${buffer.size} elements for a ${this.dtype} tensor of ${this.size}`);
    this.spareGrad = buffer;
  }

  /** A zero-filled gradient of this tensor's shape, in the buffer zeroGrad released when there is one. */
  zeroedGradBuffer(): Tensor {
    const { buffer, reused } = this.takeGradBuffer();
    if (reused) buffer.data.fill(0);
    return buffer;
  }

  /** The buffer zeroGrad released (as it is: `reused`) when it fits, else a new zeroed one. */
  private takeGradBuffer(): { buffer: Tensor; reused: boolean } {
    const spare = this.spareGrad;
    this.spareGrad = null;
    if (spare !== null && spare.size === this.size && spare.dtype === this.dtype) return { buffer: spare, reused: true };
    // A parameter's is kept across steps for the next backward: never from a step arena. Any
    // other tensor's (an op's output, a stage's input) dies with the step's tape.
    return { buffer: new Tensor(this.isParameter ? allocatePersistent(this.dtype, this.size) : allocate(this.dtype, this.size), this.shape), reused: false };
  }

  private spareGrad: Tensor | null = null;

  toString(): string {
    return `Tensor(${this.dtype}, ${fmtShape(this.shape)})`;
  }
}
