/**
 * A stage's inbox for activations and gradients from its neighbours, keyed by
 * (kind, step, micro-batch). Bounded: a delivery beyond `capacity` waits until the stage
 * takes one (back-pressure). A duplicate delivery is acknowledged and dropped.
 */
import type { Tensor } from '../src/tensor/tensor.js';

type Kind = 'activation' | 'gradient';
const key = (kind: Kind, step: number, mb: number) => `${kind}:${step}:${mb}`;

export class Inbox {
  private items = new Map<string, Tensor>();
  private seen = new Set<string>();
  private takers = new Map<string, (t: Tensor) => void>();
  private waitingSpace: (() => void)[] = [];
  private step = -1;

  constructor(private capacity: number, private readonly timeoutMs: number, private readonly actor: string) {}

  setCapacity(c: number): void { this.capacity = c; }

  /** Starts a step: forgets everything of earlier steps. */
  beginStep(step: number): void {
    if (step === this.step) return;
    this.step = step;
    for (const k of [...this.items.keys()]) if (Number(k.split(':')[1]) < step) this.items.delete(k);
    for (const k of [...this.seen]) if (Number(k.split(':')[1]) < step) this.seen.delete(k);
  }

  async deliver(kind: Kind, step: number, mb: number, t: Tensor): Promise<void> {
    const k = key(kind, step, mb);
    if (this.seen.has(k) || step < this.step) return; // a duplicate (or stale) message is applied once
    this.seen.add(k);
    const taker = this.takers.get(k);
    if (taker) {
      this.takers.delete(k);
      taker(t);
      return;
    }
    while (this.items.size >= this.capacity) await new Promise<void>((r) => this.waitingSpace.push(r));
    this.items.set(k, t);
  }

  take(kind: Kind, step: number, mb: number): Promise<Tensor> {
    const k = key(kind, step, mb);
    const t = this.items.get(k);
    if (t !== undefined) {
      this.items.delete(k);
      this.waitingSpace.shift()?.();
      return Promise.resolve(t);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.takers.delete(k);
        reject(new Error(`${this.actor}: waited ${this.timeoutMs / 1000} s for the ${kind} of micro-batch ${mb} (step ${step}); is the neighbouring stage alive?`));
      }, this.timeoutMs);
      this.takers.set(k, (v) => { clearTimeout(timer); resolve(v); });
    });
  }

  get size(): number { return this.items.size; }
}
