/**
 * The live progress bar of `chainrule train` on a terminal: one bar per epoch (cli-progress)
 * with the steps, the ETA, the epoch's running loss and samples/s. The CLI shows it only when
 * standard error is a terminal and --json is off; on a pipe nothing of it is written.
 *
 * @example
 * const bar = new EpochProgress(process.stderr, 10);
 * onStep: (s) => bar.step(s)        // starts a new bar at each epoch's first step
 * onEpoch: (r) => { bar.stop(); console.log(progressLine(r, 10)); }
 */
import cliProgress from 'cli-progress';
import type { StepInfo } from './summary.js';

export class EpochProgress {
  private bar: cliProgress.SingleBar | null = null;
  private lossSum = 0;
  private steps = 0;

  constructor(private readonly stream: NodeJS.WritableStream, private readonly epochs: number) {}

  step(s: StepInfo): void {
    const fresh = this.bar === null || s.batch === 1;
    if (fresh) {
      this.stop();
      this.lossSum = 0;
      this.steps = 0;
    }
    this.lossSum += s.loss;
    this.steps++;
    const payload = { epoch: s.epoch, loss: (this.lossSum / this.steps).toFixed(4), rate: Math.round(s.samplesPerSecond) };
    if (!fresh) { this.bar!.update(s.batch, payload); return; }
    this.bar = new cliProgress.SingleBar({
      stream: this.stream,
      format: `epoch {epoch}/${this.epochs} {bar} {value}/{total} steps | ETA {eta_formatted} | loss {loss} | {rate} samples/s`,
      barsize: 24,
      clearOnComplete: true,
      hideCursor: false,
      etaBuffer: 50,
      fps: 10,
    }, cliProgress.Presets.shades_classic);
    this.bar.start(s.batches, s.batch, payload);
  }

  /** Clears the bar from the terminal (before an epoch's line, at the end, on an error). */
  stop(): void {
    const bar = this.bar;
    this.bar = null;
    bar?.stop();
  }
}
