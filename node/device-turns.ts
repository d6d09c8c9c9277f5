/**
 * One device's order of computation when it hosts several stage actors (the V chunks of an
 * interleaved schedule, on one thread or in one process): each actor runs its own list, but
 * takes the device's turn before each action, so the device computes in the schedule's order,
 * not in whichever order its actors' messages happen to arrive.
 *
 * @example
 * const turns = new DeviceTurns('device 0', 120_000);
 * turns.begin(step, ['0F0', '2F0', '2B0', '0B0']);   // by every actor of the device
 * await turns.turn(step, '2F0');  // resolves once 0F0 is done
 * turns.done(step, '2F0');
 */
import { ChainruleError } from '../src/errors.js';

export class DeviceTurnError extends ChainruleError {
  constructor(code: string, message: string) {
    super(code, message);
  }
}

/** What `finished` waits for: the turn after the device's last action. */
const END = '';

interface Waiter { text: string; resolve: () => void; reject: (e: Error) => void; timer: ReturnType<typeof setTimeout> }

export class DeviceTurns {
  private step = -1;
  private order: readonly string[] = [];
  private pos = 0;
  private failed: Error | null = null;
  private waiters: Waiter[] = [];

  constructor(readonly name: string, private readonly timeoutMs = 120_000) {}

  /** Starts step `step` with the device's whole action list (every actor of the device gives the same). */
  begin(step: number, order: readonly string[]): void {
    if (step > this.step) {
      this.abandon(new DeviceTurnError('STALE_STEP', `${this.name}: step ${this.step} was given up for step ${step}`));
      this.step = step;
      this.order = order;
      this.pos = 0;
      this.failed = null;
      return;
    }
    if (step < this.step) throw new DeviceTurnError('STALE_STEP', `${this.name}: step ${step} is older than the current step ${this.step}`);
    if (order.length !== this.order.length || order.some((t, i) => t !== this.order[i])) {
      throw new DeviceTurnError('DEVICE_ORDER', `${this.name}: the actors of this device were given different orders for step ${step}`);
    }
  }

  /** Resolves when `text` is the device's next action of step `step`. */
  turn(step: number, text: string): Promise<void> {
    if (step !== this.step) return Promise.reject(new DeviceTurnError('STALE_STEP', `${this.name}: ${text} of step ${step}, but the device is at step ${this.step}`));
    if (this.failed) return Promise.reject(this.failed);
    if (this.order[this.pos] === text) return Promise.resolve();
    if (text !== END && !this.order.slice(this.pos + 1).includes(text)) {
      return Promise.reject(new DeviceTurnError('DEVICE_ORDER', `${this.name}: ${text} is not among the device's actions still to run in step ${step} (${this.order.slice(this.pos).join(' ')})`));
    }
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.timer !== timer);
        reject(new DeviceTurnError('TIMEOUT', `${this.name}: waited ${this.timeoutMs / 1000} s ${text === END ? 'for the end of its step' : `for its turn to run ${text}`}; the device's next action, ${this.order[this.pos]}, has not run`));
      }, this.timeoutMs);
      this.waiters.push({ text, resolve, reject, timer });
    });
  }

  /**
   * Resolves once every action of the device's step has run: for what comes after them (each
   * stage's W pass, which then fills the end of the step instead of delaying the device's
   * remaining backwards, on which other devices wait).
   */
  finished(step: number): Promise<void> {
    if (step === this.step && !this.failed && this.pos >= this.order.length) return Promise.resolve();
    return this.turn(step, END);
  }

  /** `text`, the device's current action, is done: the next one may start. */
  done(step: number, text: string): void {
    if (step !== this.step || this.order[this.pos] !== text) return;
    this.pos++;
    const next = this.order[this.pos] ?? END;
    // One waiter for an action; every stage of the device for the end.
    const woken = this.waiters.filter((w) => w.text === next);
    if (woken.length === 0) return;
    this.waiters = this.waiters.filter((w) => w.text !== next);
    for (const w of woken) {
      clearTimeout(w.timer);
      w.resolve();
    }
  }

  /** An actor of the device failed in step `step`: the others stop waiting for their turns. */
  fail(step: number, e: unknown, who: string): void {
    if (step !== this.step || this.failed) return;
    this.failed = new DeviceTurnError('DEVICE_FAILED', `${this.name}: ${who}, on the same device, failed: ${(e as Error)?.message ?? String(e)}`);
    this.abandon(this.failed);
  }

  private abandon(e: Error): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) {
      clearTimeout(w.timer);
      w.reject(e);
    }
  }
}
