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
import type { StageState } from '../src/wire/index.js';

type Data = Float32Array | Float64Array;

interface Entry { kind: 'param' | 'buffer' | 'slot'; name: string; slot?: string; f64: boolean; shape: number[]; offset: number; length: number }
/** `from`, `to`: the share of the flat state's elements this copy holds. */
interface Descriptor { step: number; lastStep: number; optimizer: { type: string; t: number } | null; entries: Entry[]; from: number; to: number }

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

/** The elements a share of `of` keeps: share i of the flat state's N elements. */
export function shareRange(total: number, share: { index: number; of: number }): [number, number] {
  return [Math.floor((total * share.index) / share.of), Math.floor((total * (share.index + 1)) / share.of)];
}

export class CommitStore {
  private slots: SharedArrayBuffer[] = [];
  private next = 0;
  /** Set when a buffer was (re)allocated since the last `takeNewBuffers`. */
  private changed = false;

  /**
   * Copies `state` as the commit of `step` into the older of the two buffers: all of it, or
   * with `share` only that share of its elements (replicas hold the same state: each keeps
   * its share, and the shares together are the commit).
   */
  write(step: number, state: LiveState, share: { index: number; of: number } = { index: 0, of: 1 }): void {
    const entries: Entry[] = [];
    const datas: Data[] = [];
    let total = 0;
    const add = (kind: Entry['kind'], name: string, data: Data, shape: readonly number[], slot?: string) => {
      entries.push({ kind, name, ...(slot === undefined ? {} : { slot }), f64: data instanceof Float64Array, shape: [...shape], offset: 0, length: data.length });
      datas.push(data);
      total += data.length;
    };
    for (const [n, d, s] of state.params) add('param', n, d, s);
    for (const [n, d, s] of state.buffers) add('buffer', n, d, s);
    for (const [n, s] of Object.entries(state.optimizer?.slots ?? {})) for (const [k, d] of Object.entries(s)) add('slot', n, d, [d.length], k);
    const [from, to] = shareRange(total, share);
    // Where each entry's part of the share goes (8-byte aligned), by its element range.
    let bytes = 0;
    let at = 0;
    const parts = entries.map((e) => {
      const lo = Math.max(from, at) - at;
      const hi = Math.min(to, at + e.length) - at;
      at += e.length;
      if (hi <= lo) return null;
      e.offset = bytes;
      bytes += Math.ceil(((hi - lo) * (e.f64 ? 8 : 4)) / 8) * 8;
      return [lo, hi] as const;
    });
    const descriptor: Descriptor = { step, lastStep: state.lastStep, optimizer: state.optimizer && { type: state.optimizer.type, t: state.optimizer.t }, entries, from, to };
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
    for (const [j, e] of entries.entries()) {
      const part = parts[j];
      if (!part) continue;
      const [lo, hi] = part;
      const into = e.f64 ? new Float64Array(buf, dataStart + e.offset, hi - lo) : new Float32Array(buf, dataStart + e.offset, hi - lo);
      into.set(datas[j]!.subarray(lo, hi));
    }
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
   * The commit of `step` (copied out) from the buffers of the stores that kept it, one store
   * per share (a store that kept it all is one share), in the form getState answers.
   * @throws ChainruleError COMMIT_MISSING when a share holds no complete copy of that step
   */
  static read(shares: readonly (readonly SharedArrayBuffer[])[], step: number, where: string): StageState {
    let state: StageState | null = null;
    let arrays: Data[] = [];
    let covered = 0;
    for (const [r, buffers] of shares.entries()) {
      const found = buffers.find((b) => Atomics.load(new Int32Array(b, 0, 2), 0) === 1 && new Float64Array(b, 8, 1)[0] === step);
      if (!found) {
        const held = buffers.map((b) => (Atomics.load(new Int32Array(b, 0, 2), 0) === 1 ? `step ${new Float64Array(b, 8, 1)[0]}` : 'a torn copy')).join(', ') || 'nothing';
        throw new ChainruleError('COMMIT_MISSING', `${where}: no complete commit of step ${step} is kept${shares.length > 1 ? ` by share ${r}` : ''} (it holds ${held})`, { user: false });
      }
      const head = new Int32Array(found, 0, 2);
      const d = JSON.parse(decoder.decode(new Uint8Array(found, HEADER, head[1]!).slice())) as Descriptor;
      const dataStart = Math.ceil((HEADER + head[1]!) / 8) * 8;
      if (!state) {
        state = { params: {}, buffers: {}, optimizer: d.optimizer && { ...d.optimizer, slots: {} }, lastStep: d.lastStep };
        arrays = d.entries.map((e) => (e.f64 ? new Float64Array(e.length) : new Float32Array(e.length)));
        for (const [j, e] of d.entries.entries()) {
          const data = arrays[j]!;
          if (e.kind === 'param') state.params[e.name] = new Tensor(data, e.shape);
          else if (e.kind === 'buffer') state.buffers[e.name] = new Tensor(data, e.shape);
          else (state.optimizer!.slots[e.name] ??= {})[e.slot!] = new Tensor(data, [e.length]);
        }
      }
      let at = 0;
      for (const [j, e] of d.entries.entries()) {
        const lo = Math.max(d.from, at) - at;
        const hi = Math.min(d.to, at + e.length) - at;
        at += e.length;
        if (hi <= lo) continue;
        const part = e.f64 ? new Float64Array(found, dataStart + e.offset, hi - lo) : new Float32Array(found, dataStart + e.offset, hi - lo);
        arrays[j]!.set(part, lo);
      }
      covered += d.to - d.from;
    }
    const total = arrays.reduce((n, a) => n + a.length, 0);
    if (!state || covered !== total) throw new ChainruleError('COMMIT_MISSING', `${where}: the shares of the commit of step ${step} cover ${covered} of ${total} values`, { user: false });
    // Optimizer slots travel as float32, as getState gives them.
    for (const s of Object.values(state.optimizer?.slots ?? {})) for (const [k, t] of Object.entries(s)) if (!(t.data instanceof Float32Array)) s[k] = new Tensor(Float32Array.from(t.data), t.shape);
    return state;
  }
}
