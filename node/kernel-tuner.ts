/**
 * `kernelThreads: 'auto'` on an actor: whether its large products are worth splitting is
 * measured, not guessed. After a warm-up (2 steps and 1 s of their work), steps run alternately on all the threads
 * it may use and on one; the faster count (by each count's quickest step: a neighbour's burst
 * only slows) is kept for the rest of the run. Any count gives the same bits, so trying costs
 * nothing but the slower trial steps.
 *
 * @example
 * const tuner = new KernelThreadTuner(2);
 * const n = tuner.threadsFor(step); // run the step's work on n threads, then:
 * tuner.finish(step, busyMs, splitsDuringTheStep);
 */
export class KernelThreadTuner {
  /** The count kept, once chosen (1 at once when there is nothing to choose). */
  private chosen: number | null;
  private readonly quickest = new Map<number, number>();
  /** Whether a product was split on a trial step with `most` (none: nothing here is large enough to split), and on a warm-up step. */
  private splitOnMost = false;
  private splitWarm = false;
  /** Warm-up steps finished, and their busy time. */
  private warmSteps = 0;
  private warmMs = 0;
  /** Trial steps begun (after the warm-up). */
  private trialSteps = 0;
  private lastStep: number | null = null;
  private current: number;

  /**
   * @param most the threads this actor may use
   * @param warmup steps run on `most` before the trials (packing buffers, spawning helpers)...
   * @param warmupMs ...and at least this much of their busy time: V8 compiles the actors' hot
   *   code on helper threads in the first second or so, and trials on all the cores meanwhile
   *   share them with the compiler (a bench run's wide-MLP trial kept one thread, 1.00x of one
   *   thread where two run 1.77x).
   * @param trials steps on each count
   * @param margin how much faster `most` must be to be kept (it holds more cores)
   */
  constructor(readonly most: number, readonly warmup = 2, readonly trials = 3, readonly margin = 0.03, readonly warmupMs = 1000) {
    this.chosen = most > 1 ? null : 1;
    this.current = most;
  }

  /** The count the work of `step` runs on (a step's requests may come more than once: the same count). */
  threadsFor(step: number): number {
    if (this.chosen !== null) return this.chosen;
    if (step !== this.lastStep) {
      this.lastStep = step;
      this.current = !this.trying || this.trialSteps++ % 2 === 0 ? this.most : 1;
    }
    return this.current;
  }

  /** The count kept, or null while trying. */
  get decided(): number | null { return this.chosen; }

  /** Whether the warm-up is over (a step's finish sees what its threadsFor saw: only finish moves it). */
  private get trying(): boolean { return this.warmSteps >= this.warmup && this.warmMs >= this.warmupMs; }

  /** What the steps run on now: the count kept; through the warm-up `most` (1 if no product was large enough to split); null while the trials alternate. */
  get runsOn(): number | null { return this.chosen ?? (this.trialSteps > 0 ? null : this.splitWarm ? this.most : 1); }

  /**
   * A step's measured work: `busyMs` computing, `splits` products split among helpers meanwhile
   * (none: nothing of this model is large enough to split, so one thread is as fast).
   */
  finish(step: number, busyMs: number, splits: number): void {
    if (this.chosen !== null || step !== this.lastStep) return;
    if (!this.trying) {
      this.warmSteps++;
      this.warmMs += busyMs;
      if (splits > 0) this.splitWarm = true;
      return;
    }
    const n = this.current;
    this.quickest.set(n, Math.min(this.quickest.get(n) ?? Infinity, busyMs));
    if (n === this.most && splits > 0) this.splitOnMost = true;
    if (this.trialSteps < 2 * this.trials) return;
    const many = this.quickest.get(this.most) ?? Infinity;
    const one = this.quickest.get(1) ?? Infinity;
    this.chosen = this.splitOnMost && many < one * (1 - this.margin) ? this.most : 1;
  }
}
