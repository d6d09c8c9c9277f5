/**
 * The sends of one step to neighbours and replica peers. Each is awaited later (back-pressure,
 * the end of the step), but a send can fail while the actor is waiting for something else;
 * the group marks every send as handled at once, so a neighbour's failure never becomes an
 * unhandled rejection that kills the process, and makes the first failure end the waits of
 * the step (`race`), so the step fails with the neighbour's error instead of a timeout later.
 *
 * @example
 * const sends = new SendGroup();
 * sends.add(link.send(msg));
 * const x = await sends.race(inbox.take('gradient', step, mb));
 * await sends.all();
 */
export class SendGroup {
  private pending: Promise<void>[] = [];
  private readonly failed: Promise<never>;
  private fail!: (e: unknown) => void;

  constructor() {
    this.failed = new Promise<never>((_, reject) => { this.fail = reject; });
    this.failed.catch(() => { /* reported through race() and all() */ });
  }

  get size(): number { return this.pending.length; }

  add(p: Promise<void>): void {
    p.catch((e: unknown) => this.fail(e));
    this.pending.push(p);
  }

  /** `p`, unless a send fails first. */
  race<T>(p: Promise<T>): Promise<T> {
    return Promise.race([p, this.failed]);
  }

  /** Waits for the oldest send. */
  async shift(): Promise<void> {
    const p = this.pending.shift();
    if (p) await this.race(p);
  }

  /** Waits for every send; the first failure is thrown. */
  async all(): Promise<void> {
    await this.race(Promise.all(this.pending));
    this.pending = [];
  }
}
