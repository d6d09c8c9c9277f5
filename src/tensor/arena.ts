/**
 * A step arena: the buffers a training step's forward and backward allocate, handed out again
 * by the next step instead of being allocated anew. A step of a fixed-shape model allocates the
 * same sizes every time, so after the first step it allocates nothing: no ArrayBuffer backing
 * stores to free, hence none of V8's "external memory pressure" scavenges, which otherwise
 * stall one replica or stage every few steps (and all its peers with it) and run on helper
 * threads that take cores from the other actors.
 *
 * Only code run inside {@link Arena.run} takes from the arena, and only buffers that die with
 * the step may: a buffer kept across steps (a parameter's gradient, a cache) is allocated with
 * `allocatePersistent`. The owner calls {@link Arena.reset} when the step's tapes are gone.
 *
 * @example
 * const arena = new Arena();
 * const y = arena.run(() => model.forward(x));   // buffers from the arena
 * arena.reset();                                 // at the next step: all of them reusable
 */
import type { DType, Data } from './tensor.js';

/** Below this many elements V8 keeps a typed array on its heap: pooling would not pay. */
const POOLED_MIN = 64;

type Kind = DType | 'int32';
type Pooled = Float32Array | Float64Array | Int32Array;
const KINDS: Kind[] = ['float32', 'float64', 'int32'];
const keyOf = (kind: Kind, n: number): number => n * KINDS.length + KINDS.indexOf(kind);
const kindOf = (d: Pooled): Kind => (d instanceof Float64Array ? 'float64' : d instanceof Int32Array ? 'int32' : 'float32');
const create = (kind: Kind, n: number): Pooled => (kind === 'float64' ? new Float64Array(n) : kind === 'int32' ? new Int32Array(n) : new Float32Array(n));

let current: Arena | null = null;
/** CHAINRULE_NO_ARENA=1 (read at load, so worker threads inherit it): every step allocates anew, to compare. */
let enabled = typeof process === 'undefined' || process.env?.CHAINRULE_NO_ARENA !== '1';
/**
 * CHAINRULE_ARENA_POISON=1: a reset fills what the step took with NaN (indices with -1), so that
 * anything still reading a buffer of an earlier step computes NaN, which every stage's finite
 * watch reports, instead of silently reading another step's numbers. For tests, not for speed.
 */
let poison = typeof process !== 'undefined' && process.env?.CHAINRULE_ARENA_POISON === '1';

/** Turns poisoning on or off in this thread (see CHAINRULE_ARENA_POISON); returns the previous setting. */
export function setArenaPoison(on: boolean): boolean {
  const was = poison;
  poison = on;
  return was;
}

/** Turns step arenas on or off in this thread (tests compare both); returns the previous setting. */
export function setArenasEnabled(on: boolean): boolean {
  const was = enabled;
  enabled = on;
  return was;
}

/** The arena `allocate` takes from now (null: a plain allocation). */
export function currentArena(): Arena | null { return current; }

export class Arena {
  /** Free buffers by kind and size (see `keyOf`). */
  private readonly free = new Map<number, Pooled[]>();
  /** Handed out since the last reset. */
  private taken: Pooled[] = [];
  private takenElements = 0;
  private reusedElements = 0;

  /** A zero-filled buffer of `n` elements: a freed one when there is one. */
  take(dtype: DType, n: number): Data {
    return this.takeKind(dtype, n, true) as Data;
  }

  /** A buffer whose contents are undefined (a reused one is not zeroed): for outputs a kernel writes in full. */
  takeUninitialized(dtype: DType, n: number): Data {
    return this.takeKind(dtype, n, false) as Data;
  }

  /** A zero-filled Int32Array (indices: a max-pool's argmax), pooled like the floats. */
  takeIndices(n: number): Int32Array {
    return this.takeKind('int32', n, true) as Int32Array;
  }

  private takeKind(kind: Kind, n: number, zero: boolean): Pooled {
    if (n < POOLED_MIN) return create(kind, n);
    const list = this.free.get(keyOf(kind, n));
    let d = list?.pop();
    if (d) { if (zero) d.fill(0); this.reusedElements += n; }
    else d = create(kind, n);
    this.taken.push(d);
    this.takenElements += n;
    return d;
  }

  /** Runs `fn` (synchronous: it must not return a promise) with its allocations from this arena. */
  run<T>(fn: () => T): T {
    const outer = current;
    current = enabled ? this : null;
    try {
      const r = fn();
      if (r instanceof Promise) throw new Error('Arena.run: the function must be synchronous');
      return r;
    } finally {
      current = outer;
    }
  }

  /**
   * Everything taken since the last reset is free again: call it only when nothing taken is
   * referenced any more. Free buffers that the last step did not ask for go (a changed shape
   * leaves no garbage behind for good).
   */
  reset(): void {
    const kept = new Map<number, Pooled[]>();
    for (const d of this.taken) {
      if (poison) d.fill(d instanceof Int32Array ? -1 : NaN);
      const key = keyOf(kindOf(d), d.length);
      const list = kept.get(key);
      if (list) list.push(d); else kept.set(key, [d]);
    }
    this.free.clear();
    for (const [k, v] of kept) this.free.set(k, v);
    this.taken = [];
  }

  /** Drops every buffer (a reconfigured actor's old shapes). */
  clear(): void {
    this.free.clear();
    this.taken = [];
  }

  /** Elements handed out, and how many of them were reused buffers (for diagnostics and tests). */
  get stats(): { taken: number; reused: number } { return { taken: this.takenElements, reused: this.reusedElements }; }
}
