/**
 * The replica all-reduce through shared memory, for actors on threads of one process: one
 * SharedArrayBuffer per stage holds every replica's gradient (each replica's backward writes
 * straight into its own region) and the reduced sum. Replica r sums chunk r over the replicas
 * in order 0, 1, …, R−1 (the same arithmetic as the message path, so the bits are the same)
 * and all replicas then step from the one sum: no copies, no messages, only two barriers.
 */
import { Tensor } from '../src/tensor/tensor.js';
import { backend } from '../src/tensor/backend.js';
import { ChainruleError } from '../src/errors.js';

/** Atomics.waitAsync (in Node since 16; typed only from lib ES2024, which would also admit APIs Node 20 lacks). */
const waitAsync = (Atomics as unknown as {
  waitAsync(a: Int32Array, i: number, v: number, timeoutMs: number): { async: false; value: string } | { async: true; value: Promise<string> };
}).waitAsync;

/**
 * How long a replica spins for a peer's flag before it sleeps: a sleeping thread's wake-up
 * (an event-loop turn after the notify, an idle core woken) costs more than a balanced peer's
 * lag. Measured on 2 cores, default MLP at batch 64, 2 thread replicas: 63,000-85,000 samples/s
 * spinning against 49,000-83,000 without; no change for the CNN, whose steps are long.
 */
const SPIN_US = 100;

/** Whether flag i reached `mark` within SPIN_US of spinning. */
function spinFor(flags: Int32Array, i: number, mark: number): boolean {
  if (Atomics.load(flags, i) >= mark) return true;
  const end = performance.now() + SPIN_US / 1000;
  do {
    for (let n = 0; n < 64; n++) if (Atomics.load(flags, i) >= mark) return true;
  } while (performance.now() < end);
  return false;
}

/** Flags first (ready, summed and updated per replica), then R gradients, the sum, the parameters and SLOTS optimizer slots. */
const HEADER_BYTES = 128 * 4;
/** The most slots an element-wise optimizer keeps per parameter (Adam with amsgrad: m, v, vmax). */
const SLOTS = 3;
/** Regions besides the R gradients: the sum, the parameters, the slots. */
const EXTRA_REGIONS = 2 + SLOTS;

/** The elements of N that replica q of R sums (and, sharing the update, updates): [lo, hi), in shared memory or by messages. */
export function replicaChunk(q: number, N: number, R: number): [number, number] {
  return [Math.floor((q * N) / R), Math.floor(((q + 1) * N) / R)];
}

/** The buffer the transport allocates for stage k: `parameters` floats per region. */
export function sharedReduceBuffer(replicas: number, parameters: number): SharedArrayBuffer {
  if (replicas > 32) throw new ChainruleError('BAD_OPTION', `shared-memory reduction supports at most 32 replicas, got ${replicas}`);
  return new SharedArrayBuffer(HEADER_BYTES + (replicas + EXTRA_REGIONS) * parameters * 4);
}

export class SharedReduce {
  private readonly flags: Int32Array;
  readonly parameters: number;

  constructor(private readonly sab: SharedArrayBuffer, private readonly replicas: number, private readonly replica: number, private readonly actor: string, private readonly timeoutMs: number) {
    this.flags = new Int32Array(sab, 0, 3 * replicas);
    this.parameters = (sab.byteLength - HEADER_BYTES) / 4 / (replicas + EXTRA_REGIONS);
  }

  /**
   * The parameters every replica of the stage holds, once: each replica's optimizer updates
   * its own chunk of them (and of the slots), so the update's work and memory traffic are
   * shared instead of repeated.
   */
  get params(): Float32Array { return this.region(this.replicas + 1); }

  /** Optimizer slot j (0 ≤ j < 3) of every parameter, laid out as the parameters. */
  slot(j: number): Float32Array {
    if (j >= SLOTS) throw new ChainruleError('INTERNAL', `${this.actor}: shared memory holds ${SLOTS} optimizer slots a parameter, asked for slot ${j}`);
    return this.region(this.replicas + 2 + j);
  }

  /** After this replica updated its chunk of `step`: waits until every replica has, so that the next forward reads whole parameters. */
  async updated(step: number): Promise<void> {
    const R = this.replicas;
    const mark = step + 1;
    Atomics.store(this.flags, 2 * R + this.replica, mark);
    Atomics.notify(this.flags, 2 * R + this.replica);
    for (let q = 0; q < R; q++) await this.waitFor(2 * R + q, mark, `replica ${q}'s update`);
  }

  /** Replica q's gradient region (q = R: the reduced sum). */
  region(q: number): Float32Array {
    return new Float32Array(this.sab, HEADER_BYTES + q * this.parameters * 4, this.parameters);
  }

  get sum(): Float32Array { return this.region(this.replicas); }
  get own(): Float32Array { return this.region(this.replica); }

  /** The views of this replica's region that parameters of these sizes accumulate into. */
  ownViews(shapes: readonly (readonly number[])[]): Tensor[] {
    return this.views(this.own, shapes);
  }

  sumViews(shapes: readonly (readonly number[])[]): Tensor[] {
    return this.views(this.sum, shapes);
  }

  private views(region: Float32Array, shapes: readonly (readonly number[])[]): Tensor[] {
    let off = 0;
    return shapes.map((shape) => {
      const n = shape.reduce((a, b) => a * b, 1);
      const t = new Tensor(region.subarray(off, off + n), shape);
      off += n;
      return t;
    });
  }

  /** Publishes this replica's gradient for `step`, sums its chunk, and waits until every chunk is summed. */
  async reduce(step: number): Promise<void> {
    const R = this.replicas;
    const r = this.replica;
    const mark = step + 1; // flags start at 0; steps only grow
    Atomics.store(this.flags, r, mark);
    Atomics.notify(this.flags, r);
    for (let q = 0; q < R; q++) await this.waitFor(q, mark, `replica ${q}'s gradient`);
    const [lo, hi] = replicaChunk(r, this.parameters, R);
    const acc = this.sum.subarray(lo, hi);
    acc.set(this.region(0).subarray(lo, hi));
    for (let q = 1; q < R; q++) backend().binary('add', acc, [acc.length], this.region(q).subarray(lo, hi), [acc.length], acc, [acc.length]);
    Atomics.store(this.flags, R + r, mark);
    Atomics.notify(this.flags, R + r);
    for (let q = 0; q < R; q++) await this.waitFor(R + q, mark, `replica ${q % R}'s summed chunk`);
  }

  private async waitFor(i: number, mark: number, what: string): Promise<void> {
    if (spinFor(this.flags, i, mark)) return;
    const deadline = Date.now() + this.timeoutMs;
    for (;;) {
      const v = Atomics.load(this.flags, i);
      if (v >= mark) return;
      const left = deadline - Date.now();
      if (left <= 0) throw new ChainruleError('PEER_TIMEOUT', `${this.actor}: waited ${this.timeoutMs / 1000} s for ${what} (step ${mark - 1}); is that replica's thread alive?`, { user: false });
      const w = waitAsync(this.flags, i, v, left);
      // The timer keeps the event loop alive while we wait (waitAsync alone does not).
      if (w.async) {
        const keep = setTimeout(() => {}, left);
        await w.value;
        clearTimeout(keep);
      }
    }
  }
}
