/**
 * A weight that the micro-batches of one step share: y = x·W in the forward, dX = dY·Wᵀ in
 * the backward, and dW = Xᵀ·dY summed over the micro-batches. Two things get cheaper when a
 * step runs M thin micro-batches instead of one batch:
 *
 * - the weight gradient is deferred (the W pass of a zero-bubble schedule): each backward
 *   records its (X, dY) rows, and one product over all the rows, k = the whole batch, adds
 *   dW into `.grad` instead of M thin products each reading and writing all of it;
 * - where the backend can keep a packed operand (`Backend.packed`), W is packed once per
 *   orientation and step and the packed panels are reused by the later micro-batches.
 *
 * Both rest on one contract, the one gradient accumulation rests on anyway: the weight does
 * not change while its gradient accumulates, from `zeroGrad()` until the gradient is read.
 * Reading `.grad` (or `flush()`) does the deferred work, and ends the reuse of packs until the
 * next `zeroGrad()`. With one micro-batch a step, the bits are those of the plain matmul.
 *
 * @example
 * const shared = new SharedWeight();
 * const y = matmul(x, w, { weight: shared, microBatch: 0 }); // on a tape, then backward
 * shared.flush(); // or just read w.grad
 */
import { ChainruleError } from '../errors.js';
import { backend, type Backend, type PackedMatrix } from '../tensor/backend.js';
import { matmulAccumulate, matmulRaw } from '../tensor/functional.js';
import { Tensor, allocate, allocateOutput, allocatePersistent, fmtShape, type Data, type PendingGrad } from '../tensor/tensor.js';

/** The forward product x·W and the input gradient's dY·Wᵀ: one pack each. */
const FORWARD = 0;
const INPUT_GRAD = 1;

export class SharedWeight implements PendingGrad {
  private w: Tensor | null = null;
  /** Whether packs may be reused: from zeroGrad (or binding to a weight with no gradient yet) until the gradient is read. */
  private open = false;
  private packs: [PackedMatrix | null, PackedMatrix | null] = [null, null];
  private packed: [boolean, boolean] = [false, false];
  private uses: [number, number] = [0, 0];
  /** The use that packs: the second, or the first when the last accumulation had several. */
  private packAt: [number, number] = [2, 2];
  private packBackend: Backend | null = null;
  /** The deferred rows: X [rows, k] and dY [rows, n], micro-batch after micro-batch. */
  private xs: Data | null = null;
  private gs: Data | null = null;
  private rows = 0;
  private recordRows: number[] = [];
  private recordTags: number[] = [];
  /** Records deferred since zeroGrad, and in the last accumulation that had any. */
  private records = 0;
  private lastRecords = 0;

  /** The weight, once a product has used this (one SharedWeight serves one weight). */
  get weight(): Tensor | null { return this.w; }

  /** Rows of X·dY whose product is deferred. */
  get pendingRows(): number { return this.rows; }

  /** Binds to `w` on first use; a SharedWeight is never moved to another tensor. */
  bind(w: Tensor): void {
    if (this.w === w) return;
    if (this.w !== null) {
      throw new ChainruleError('SHARED_WEIGHT_REBOUND', `SharedWeight: already serves a weight of shape ${fmtShape(this.w.shape)}, cannot serve another (${fmtShape(w.shape)})`, { user: false });
    }
    if (w.rank !== 2) throw new ChainruleError('BAD_SHAPE', `SharedWeight: the weight must be a matrix, got shape ${fmtShape(w.shape)}`, { user: false });
    if (w.pendingGrad !== null) throw new ChainruleError('SHARED_WEIGHT_TAKEN', `SharedWeight: this weight (${fmtShape(w.shape)}) already has pending gradient work from another owner`, { user: false });
    this.open = w.grad === null; // no gradient yet: as good as zeroed
    this.w = w;
    w.pendingGrad = this;
  }

  /** x [m, k] · W [k, n]. */
  product(x: Tensor): Tensor {
    const w = this.w!;
    return this.multiply(FORWARD, x, w.shape[1]!, w.shape[0]!, false);
  }

  /** dY [m, n] · Wᵀ: the input gradient. */
  inputGradient(gy: Tensor): Tensor {
    const w = this.w!;
    return this.multiply(INPUT_GRAD, gy, w.shape[0]!, w.shape[1]!, true);
  }

  /**
   * The first use in an accumulation is a plain product (one micro-batch a step packs no more
   * than before); the second packs W on the way, and the later ones reuse the pack. Once an
   * accumulation has had several uses, the next ones pack from their first use on.
   */
  private multiply(which: 0 | 1, a: Tensor, n: number, k: number, transB: boolean): Tensor {
    const w = this.w!;
    const be = backend();
    const p = be.packed;
    if (!p || !this.open || a.rank !== 2 || !(a.data instanceof Float32Array) || !(w.data instanceof Float32Array)) {
      return matmulRaw(a, w, false, transB);
    }
    if (this.packBackend !== be) {
      this.packBackend = be;
      this.packs = [null, null];
      this.packed = [false, false];
    }
    if (a.shape[1] !== k) return matmulRaw(a, w, false, transB);
    if (++this.uses[which] < this.packAt[which] && !this.packed[which]) return matmulRaw(a, w, false, transB);
    const m = a.shape[0]!;
    // The product writes every element (k > 0 here: a row of inputs).
    const out = (k > 0 ? allocateOutput(w.dtype, m * n) : allocate(w.dtype, m * n)) as Float32Array;
    if (this.packed[which]) {
      p.matmulPacked(a.data, this.packs[which]!, out, m, false, false);
    } else {
      this.packs[which] = p.matmulPacking(a.data, w.data, out, m, n, k, false, transB, false, this.packs[which]);
      this.packed[which] = true;
    }
    return new Tensor(out, [m, n]);
  }

  /**
   * Defers dW += xᵀ·g (x [rows, k], g [rows, n], copied: the caller may reuse its buffers).
   * Deferred rows never outweigh the gradient itself: past that the pending ones are added
   * first, and a record that alone outweighs it is added at once.
   */
  defer(x: Tensor, g: Tensor, microBatch: number): void {
    const w = this.w!;
    const [k, n] = [w.shape[0]!, w.shape[1]!];
    const rows = x.shape[0]!;
    if (x.rank !== 2 || g.rank !== 2 || x.shape[1] !== k || g.shape[1] !== n || g.shape[0] !== rows) {
      throw new ChainruleError('BAD_SHAPE', `SharedWeight: cannot defer ${fmtShape(x.shape)}ᵀ · ${fmtShape(g.shape)} into a gradient of shape ${fmtShape(w.shape)}`, { user: false });
    }
    if (rows === 0) return;
    const first = this.records++ === 0;
    const limit = k * n;
    if ((this.rows + rows) * (k + n) > limit) this.compute(Infinity);
    // A record that alone outweighs the gradient, or the first when accumulations have been of
    // one record (one micro-batch a step): its product now costs what it would later, uncopied.
    if (rows * (k + n) > limit || (first && this.lastRecords === 1)) {
      this.addProduct(x, g);
      return;
    }
    const need = this.rows + rows;
    if (!this.xs || this.xs.length < need * k) {
      // Grown in steps, up to the gradient's size in all: no allocation once a step's rows are known.
      const cap = Math.min(Math.max(need, 2 * (this.xs ? this.xs.length / k : 0)), Math.floor(limit / (k + n)));
      // Kept for the next steps: never from a step arena.
      const xs = allocatePersistent(w.dtype, cap * k);
      const gs = allocatePersistent(w.dtype, cap * n);
      if (this.xs && this.rows > 0) { xs.set(this.xs.subarray(0, this.rows * k)); gs.set(this.gs!.subarray(0, this.rows * n)); }
      this.xs = xs;
      this.gs = gs;
    }
    this.xs.set(x.data, this.rows * k);
    this.gs!.set(g.data, this.rows * n);
    this.rows += rows;
    this.recordRows.push(rows);
    this.recordTags.push(microBatch);
  }

  /**
   * The W pass: adds the deferred products of micro-batches up to `through` (all by default)
   * into `.grad`, in the order they were recorded, as one product. Without `through` it also
   * ends the reuse of packs until the next zeroGrad (the weight may change after a full read).
   */
  flush(through?: number): void {
    this.compute(through ?? Infinity);
    if (through === undefined) this.open = false;
  }

  private compute(through: number): void {
    if (this.rows === 0) return;
    let records = 0;
    let rows = 0;
    while (records < this.recordTags.length && this.recordTags[records]! <= through) rows += this.recordRows[records++]!;
    if (rows === 0) return;
    const w = this.w!;
    const [k, n] = [w.shape[0]!, w.shape[1]!];
    this.addProduct(new Tensor(this.xs!.subarray(0, rows * k), [rows, k]), new Tensor(this.gs!.subarray(0, rows * n), [rows, n]));
    const left = this.rows - rows;
    if (left > 0) {
      this.xs!.copyWithin(0, rows * k, this.rows * k);
      this.gs!.copyWithin(0, rows * n, this.rows * n);
    }
    this.rows = left;
    this.recordRows.splice(0, records);
    this.recordTags.splice(0, records);
  }

  /** dW += xᵀ·g; the first product after zeroGrad writes the gradient instead of adding to zeros. */
  private addProduct(x: Tensor, g: Tensor): void {
    const w = this.w!;
    const fresh = !w.hasOwnGrad && x.shape[0]! > 0;
    matmulAccumulate(x, g, true, false, fresh ? w.gradToOverwrite() : w.ownGrad(), !fresh);
  }

  /** zeroGrad: the pending products go, and a new accumulation may reuse packs again. */
  reset(): void {
    if (this.records > 0) this.lastRecords = this.records;
    this.records = 0;
    this.rows = 0;
    this.recordRows = [];
    this.recordTags = [];
    this.open = true;
    this.packed = [false, false];
    // An accumulation of one product packs nothing; after one of several, pack from the first.
    // (A zeroGrad with no product since the last one, e.g. a second in a row, changes nothing.)
    for (const which of [FORWARD, INPUT_GRAD]) if (this.uses[which] > 0) this.packAt[which] = this.uses[which] >= 2 ? 1 : 2;
    this.uses = [0, 0];
  }
}
