/**
 * A stage's recovery commit, kept where the actor lives instead of sent to the coordinator
 * every step: at the start of a committed step the actor copies its state (parameters,
 * buffers, optimizer slots) into one of two buffers, alternately, so a copy torn by a dying
 * thread never hides the previous commit. The buffers are SharedArrayBuffers: a worker
 * thread's outlive the thread, and the coordinator reads them without it. A copy is one
 * memcpy per tensor; sending the same state through the codec costs as much as a step.
 *
 * Buffer layout: Int32 [0] = 1 when complete, [1] = descriptor bytes; Float64 [1] = step;
 * the descriptor (JSON: names, shapes, offsets, optimizer type and t) from byte 16; the
 * data 8-byte aligned after it.
 */
import { ChainruleError } from '../src/errors.js';
import { Tensor } from '../src/tensor/tensor.js';
import type { NamedTensors, StageState } from '../src/wire/index.js';

type Data = Float32Array | Float64Array;

interface Entry { kind: 'param' | 'buffer' | 'slot'; name: string; slot?: string; f64: boolean; shape: number[]; offset: number; length: number }
interface Descriptor { step: number; lastStep: number; optimizer: { type: string; t: number } | null; entries: Entry[] }

/** What a commit copies: live views of the actor's state, read once. */
export interface LiveState {
  params: [string, Data, readonly number[]][];
  buffers: [string, Data, readonly number[]][];
  optimizer: { type: string; t: number; slots: Record<string, Record<string, Data>> } | null;
  lastStep: number;
}

const HEADER = 16;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

export class CommitStore {
  private slots: SharedArrayBuffer[] = [];
  private next = 0;
  /** Set when a buffer was (re)allocated since the last `takeNewBuffers`. */
  private changed = false;

  /** Copies `state` as the commit of `step` into the older of the two buffers. */
  write(step: number, state: LiveState): void {
    const entries: Entry[] = [];
    let bytes = 0;
    const add = (kind: Entry['kind'], name: string, data: Data, shape: readonly number[], slot?: string) => {
      entries.push({ kind, name, ...(slot === undefined ? {} : { slot }), f64: data instanceof Float64Array, shape: [...shape], offset: bytes, length: data.length });
      bytes += Math.ceil(data.byteLength / 8) * 8;
    };
    for (const [n, d, s] of state.params) add('param', n, d, s);
    for (const [n, d, s] of state.buffers) add('buffer', n, d, s);
    for (const [n, s] of Object.entries(state.optimizer?.slots ?? {})) for (const [k, d] of Object.entries(s)) add('slot', n, d, [d.length], k);
    const descriptor: Descriptor = { step, lastStep: state.lastStep, optimizer: state.optimizer && { type: state.optimizer.type, t: state.optimizer.t }, entries };
    const text = encoder.encode(JSON.stringify(descriptor));
    const dataStart = Math.ceil((HEADER + text.length) / 8) * 8;
    const need = dataStart + bytes;
    const i = this.next;
    this.next = 1 - i;
    if ((this.slots[i]?.byteLength ?? -1) < need) {
      // Headroom for a descriptor that grows (the optimizer's slots appear at its first step).
      this.slots[i] = new SharedArrayBuffer(Math.ceil(need * 1.1) + 4096);
      this.changed = true;
    }
    const buf = this.slots[i]!;
    const head = new Int32Array(buf, 0, 2);
    Atomics.store(head, 0, 0);
    new Float64Array(buf, 8, 1)[0] = step;
    head[1] = text.length;
    new Uint8Array(buf, HEADER, text.length).set(text);
    const copy = (e: Entry, d: Data) => (e.f64 ? new Float64Array(buf, dataStart + e.offset, e.length) : new Float32Array(buf, dataStart + e.offset, e.length)).set(d);
    let j = 0;
    for (const [, d] of state.params) copy(entries[j++]!, d);
    for (const [, d] of state.buffers) copy(entries[j++]!, d);
    for (const s of Object.values(state.optimizer?.slots ?? {})) for (const d of Object.values(s)) copy(entries[j++]!, d);
    Atomics.store(head, 0, 1);
  }

  /** The buffers, once after each (re)allocation: the coordinator's copy of the references. */
  takeNewBuffers(): SharedArrayBuffer[] | null {
    if (!this.changed) return null;
    this.changed = false;
    return [...this.slots];
  }

  get buffers(): readonly SharedArrayBuffer[] { return this.slots; }

  /**
   * The commit of `step` from a store's buffers (copied out), in the form getState answers.
   * @throws ChainruleError COMMIT_MISSING when no complete copy of that step is there
   */
  static read(buffers: readonly SharedArrayBuffer[], step: number, where: string): StageState {
    for (const buf of buffers) {
      const head = new Int32Array(buf, 0, 2);
      if (Atomics.load(head, 0) !== 1 || new Float64Array(buf, 8, 1)[0] !== step) continue;
      const d = JSON.parse(decoder.decode(new Uint8Array(buf, HEADER, head[1]!).slice())) as Descriptor;
      const dataStart = Math.ceil((HEADER + head[1]!) / 8) * 8;
      const state: StageState = { params: {}, buffers: {}, optimizer: d.optimizer && { ...d.optimizer, slots: {} }, lastStep: d.lastStep };
      for (const e of d.entries) {
        const view = e.f64 ? new Float64Array(buf, dataStart + e.offset, e.length) : new Float32Array(buf, dataStart + e.offset, e.length);
        const into = (m: NamedTensors, data: Data) => { m[e.name] = new Tensor(data, e.shape); };
        if (e.kind === 'param') into(state.params, view.slice());
        else if (e.kind === 'buffer') into(state.buffers, view.slice());
        else (state.optimizer!.slots[e.name] ??= {})[e.slot!] = new Tensor(Float32Array.from(view), [e.length]);
      }
      return state;
    }
    const held = buffers.map((b) => (Atomics.load(new Int32Array(b, 0, 2), 0) === 1 ? `step ${new Float64Array(b, 8, 1)[0]}` : 'a torn copy')).join(', ') || 'nothing';
    throw new ChainruleError('COMMIT_MISSING', `${where}: no complete commit of step ${step} is kept (it holds ${held})`, { user: false });
  }
}
