/**
 * A stage's inbox for messages from its neighbours and its replica peers, keyed by
 * (kind, step, index). Bounded per kind: a delivery beyond its kind's capacity waits until
 * the stage takes one (back-pressure), and one kind never fills the room another needs (a
 * fast peer's gradient share cannot block the activation the stage is waiting for).
 * A duplicate delivery is acknowledged and dropped.
 */
import type { Tensor } from '../src/tensor/tensor.js';
import { ChainruleError } from '../src/errors.js';

export type InboxKind = 'activation' | 'gradient' | 'scatter' | 'gather';
const key = (kind: InboxKind, step: number, i: number) => `${kind}:${step}:${i}`;

export class Inbox {
  private items = new Map<string, Tensor>();
  private counts = new Map<InboxKind, number>();
  private seen = new Set<string>();
  private takers = new Map<string, (t: Tensor) => void>();
  private cancels = new Map<string, (e: Error) => void>();
  private waitingSpace = new Map<InboxKind, (() => void)[]>();
  private step = -1;

  /** `capacity(kind)`: how many messages of a kind may wait at once. */
  constructor(private readonly capacity: (kind: InboxKind) => number, private readonly timeoutMs: number, private readonly actor: string) {}

  /** Starts a step: forgets everything of earlier steps. */
  beginStep(step: number): void {
    if (step === this.step) return;
    this.step = step;
    for (const [k] of this.items) {
      if (Number(k.split(':')[1]) < step) {
        this.items.delete(k);
        const kind = k.split(':')[0] as InboxKind;
        this.counts.set(kind, (this.counts.get(kind) ?? 1) - 1);
      }
    }
    for (const k of [...this.seen]) if (Number(k.split(':')[1]) < step) this.seen.delete(k);
  }

  async deliver(kind: InboxKind, step: number, i: number, t: Tensor): Promise<void> {
    const k = key(kind, step, i);
    if (this.seen.has(k) || step < this.step) return; // a duplicate (or stale) message is applied once
    this.seen.add(k);
    const taker = this.takers.get(k);
    if (taker) {
      this.takers.delete(k);
      this.cancels.delete(k);
      taker(t);
      return;
    }
    while ((this.counts.get(kind) ?? 0) >= this.capacity(kind)) {
      await new Promise<void>((r) => {
        const q = this.waitingSpace.get(kind) ?? [];
        q.push(r);
        this.waitingSpace.set(kind, q);
      });
    }
    this.items.set(k, t);
    this.counts.set(kind, (this.counts.get(kind) ?? 0) + 1);
  }

  /** Whether the message is here (take would not wait). */
  has(kind: InboxKind, step: number, i: number): boolean {
    return this.items.has(key(kind, step, i));
  }

  take(kind: InboxKind, step: number, i: number, what = `the ${kind} of micro-batch ${i}`): Promise<Tensor> {
    const k = key(kind, step, i);
    const t = this.items.get(k);
    if (t !== undefined) {
      this.items.delete(k);
      this.counts.set(kind, (this.counts.get(kind) ?? 1) - 1);
      this.waitingSpace.get(kind)?.shift()?.();
      return Promise.resolve(t);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.takers.delete(k);
        this.cancels.delete(k);
        reject(new ChainruleError('PEER_TIMEOUT', `${this.actor}: waited ${this.timeoutMs / 1000} s for ${what} (step ${step}); is the neighbouring actor alive?`, { user: false }));
      }, this.timeoutMs);
      this.takers.set(k, (v) => { clearTimeout(timer); resolve(v); });
      this.cancels.set(k, (e) => { clearTimeout(timer); this.takers.delete(k); reject(e); });
    });
  }

  /**
   * Fails every wait with `why` and drops what is held: a released actor must not keep a
   * step waiting (and its timer keeping the process alive) for a neighbour that will never send.
   */
  close(why: string): void {
    const cancels = [...this.cancels.values()];
    this.cancels.clear();
    for (const c of cancels) c(new ChainruleError('ACTOR_RELEASED', `${this.actor}: ${why}`, { user: false }));
    this.items.clear();
    this.counts.clear();
    for (const q of this.waitingSpace.values()) for (const wake of q.splice(0)) wake();
  }

  get size(): number { return this.items.size; }
}
