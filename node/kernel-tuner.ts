/**
 * `kernelThreads: 'auto'` on an actor: whether its large products are worth splitting is
 * measured, not guessed. After a warm-up, the first steps run alternately on all the threads
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
  /** Whether a product was split on a trial step with `most` (none: nothing here is large enough to split). */
  private splitOnMost = false;
  private trialStep = -1;
  private lastStep: number | null = null;
  private current: number;

  /**
   * @param most the threads this actor may use
   * @param warmup steps run on `most` before the trials (packing buffers, spawning helpers)
   * @param trials steps on each count
   * @param margin how much faster `most` must be to be kept (it holds more cores)
   */
  constructor(readonly most: number, readonly warmup = 2, readonly trials = 3, readonly margin = 0.03) {
    this.chosen = most > 1 ? null : 1;
    this.current = most;
  }

  /** The count the work of `step` runs on (a step's requests may come more than once: the same count). */
  threadsFor(step: number): number {
    if (this.chosen !== null) return this.chosen;
    if (step !== this.lastStep) {
      this.lastStep = step;
      this.trialStep++;
      const t = this.trialStep - this.warmup;
      this.current = t < 0 || t % 2 === 0 ? this.most : 1;
    }
    return this.current;
  }

  /** The count kept, or null while trying. */
  get decided(): number | null { return this.chosen; }

  /**
   * A step's measured work: `busyMs` computing, `splits` products split among helpers meanwhile
   * (none: nothing of this model is large enough to split, so one thread is as fast).
   */
  finish(step: number, busyMs: number, splits: number): void {
    if (this.chosen !== null || step !== this.lastStep || this.trialStep < this.warmup) return;
    const n = this.current;
    this.quickest.set(n, Math.min(this.quickest.get(n) ?? Infinity, busyMs));
    if (n === this.most && splits > 0) this.splitOnMost = true;
    if (this.trialStep - this.warmup + 1 < 2 * this.trials) return;
    const many = this.quickest.get(this.most) ?? Infinity;
    const one = this.quickest.get(1) ?? Infinity;
    this.chosen = this.splitOnMost && many < one * (1 - this.margin) ? this.most : 1;
  }
}
