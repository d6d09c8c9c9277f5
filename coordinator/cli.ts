/**
 * The command line: `chainrule train [flags]`, `chainrule report DIR`, `chainrule predict`, `chainrule evaluate`,
 * `chainrule node --port P [--host H]` and `chainrule certs DIR --hosts H1,H2,...`.
 * A user error (an unknown flag, a bad value, a missing file) prints one line naming what and
 * where and exits 2; an internal error prints its stack and exits 1.
 */
import { Coordinator } from './coordinator.js';
import { parseCliOptions, trainUsage, OptionError } from './options.js';
import { metricsText, valText, type EpochReport, type StepInfo } from './summary.js';
import { displayOnly } from './train-loop.js';
import { EpochProgress } from './progress.js';
import { isUserError } from '../src/errors.js';
import { chainruleVersion } from './saved-model.js';

const usage = `Usage: chainrule <command> [options]   (chainrule --version)
Commands:
  train     train a model (chainrule train --help)
  report    write DIR/report.html from a run trained with --log-dir DIR (chainrule report DIR)
  predict   predictions of a saved model (chainrule predict --model DIR --input FILE)
  evaluate  a saved model's loss and accuracy on a dataset (chainrule evaluate --model DIR --dataset NAME)
  plan      predict samples/s and bubble of every R, K, M and schedule before running (chainrule plan --help)
  node      host actors for a remote coordinator (chainrule node --port P [--host H] [--tls DIR] [--token-file FILE])
  certs     make a CA, node and coordinator certificates and a token (chainrule certs DIR --hosts H1,H2,...)
`;

/** Where the CLI writes: results (stdout), progress and notes (stderr), and whether stderr is a terminal. */
export interface CliOutput {
  out: (s: string) => void;
  err: (s: string) => void;
  /** Gets the live progress bar; null on a pipe. */
  tty: NodeJS.WritableStream | null;
}

const processOutput = (): CliOutput => ({
  out: (s) => console.log(s),
  err: (s) => console.error(s),
  tty: process.stderr.isTTY ? process.stderr : null,
});

function progressLine(r: EpochReport, epochs: number): string {
  const acc = (r.testAccuracy === null ? '' : `  test acc ${(r.testAccuracy * 100).toFixed(2)}%`) + metricsText(r) + valText(r);
  return `epoch ${String(r.epoch).padStart(String(epochs).length)}/${epochs}  train loss ${r.trainLoss.toFixed(4)}  test loss ${r.testLoss.toFixed(4)}${acc}  ${Math.round(r.samplesPerSecond)} samples/s  (${r.droppedSamples} dropped)`;
}

/**
 * `chainrule train`. With --json, standard output holds only the summary line; the start line
 * and the epoch lines go to standard error. A progress bar is drawn on standard error only when
 * it is a terminal and --json is off.
 */
export async function trainMain(argv: string[], io: CliOutput = processOutput()): Promise<number> {
  const { options, json, help } = parseCliOptions(argv);
  if (help) { io.out(trainUsage()); return 0; }
  const note = json ? io.err : io.out;
  const tty = json ? null : io.tty;
  let bar: EpochProgress | null = null;
  const c: Coordinator = new Coordinator({
    ...options,
    onStep: tty ? displayOnly((s: StepInfo) => bar?.step(s)) : undefined,
    onEpoch: (r: EpochReport) => { bar?.stop(); note(progressLine(r, c.options.epochs)); },
  });
  if (tty) bar = new EpochProgress(tty, c.options.epochs);
  try {
    const o = c.options;
    const layout = `${o.replicas > 1 ? `${o.replicas} replicas × ` : ''}${o.virtualStages > 1 ? `${o.stages} stage(s) × ${o.virtualStages} virtual` : `${c.stages} stage(s)`}`;
    note(`chainrule: training ${typeof o.model === 'string' ? o.model : 'a model spec'} on ${typeof o.dataset === 'string' ? o.dataset : 'datasets'} (${c.data.train.size} train${c.validation ? ` / ${c.validation.size} validation` : ''} / ${c.data.test.size} test), ${c.placementName}, ${layout}, ${o.microBatches} micro-batch(es), ${o.schedule}${c.kernelThreads > 1 ? `, ${o.kernelThreads === 'auto' ? `1 or ${c.kernelThreads} kernel threads (the faster, measured after a second of steps)` : `${c.kernelThreads} kernel threads`}` : ''}`);
    if (o.resume) {
      const r = await c.loadCheckpoint(o.resume);
      note(`chainrule: resumed from ${r.path} (step ${r.step}, epoch ${r.epoch + 1}, minibatch ${r.batch} of ${c.stepsPerEpoch})${r.ignored.length ? `; passed over ${r.ignored.join(', ')} (interrupted writes)` : ''}`);
    }
    // Ctrl-C finishes the step (and checkpoints when asked); a second one quits at once.
    let interrupts = 0;
    const onInterrupt = () => {
      if (++interrupts > 1) process.exit(130);
      bar?.stop();
      io.err('chainrule: Ctrl-C: stopping after this step (Ctrl-C again to quit now)');
      c.stop();
    };
    process.on('SIGINT', onInterrupt);
    let summary;
    try {
      summary = await c.train();
    } finally {
      process.off('SIGINT', onInterrupt);
    }
    if (summary.stopped) {
      const { step, checkpoint } = summary.stopped;
      io.err(`chainrule: stopped after step ${step}; ${checkpoint ? `checkpoint written to ${checkpoint} (--resume ${o.checkpoint} goes on from it)` : 'no checkpoint was asked for (--checkpoint DIR keeps the progress)'}`);
    }
    if (summary.stoppedEarly) {
      const { epoch, bestEpoch, bestValLoss } = summary.stoppedEarly;
      note(`chainrule: stopped early after epoch ${epoch}: the validation loss has not improved for ${o.earlyStop} epoch(s); restored epoch ${bestEpoch}'s weights and optimizer state (val loss ${bestValLoss.toFixed(4)})`);
    }
    if (json) io.out(JSON.stringify(summary));
    else io.out(`weights sha256 ${summary.weightsSha256}`);
    if (o.logDir) note(`chainrule: run log in ${o.logDir} (chainrule report ${o.logDir} writes report.html)`);
    if (summary.stopped) return 130;
  } finally {
    bar?.stop();
    await c.close();
  }
  return 0;
}

/** `chainrule report DIR`: DIR/report.html from the run log that `train --log-dir DIR` wrote. */
export async function reportMain(argv: string[], io: CliOutput = processOutput()): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) { io.out('Usage: chainrule report DIR\n  writes DIR/report.html (self-contained) from the run log of chainrule train --log-dir DIR\n'); return 0; }
  if (argv.length !== 1 || argv[0]!.startsWith('-')) throw new OptionError(`chainrule report takes one directory, got ${argv.length === 0 ? 'none' : argv.map((a) => `'${a}'`).join(' ')}`, 'chainrule report DIR (the --log-dir of a training run)');
  const { writeReport } = await import('./report.js');
  io.out(`chainrule: wrote ${writeReport(argv[0]!)}`);
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    if (cmd === 'train') return await trainMain(rest);
    if (cmd === 'report') return await reportMain(rest);
    if (cmd === 'predict') return (await import('./model-cli.js')).predictMain(rest);
    if (cmd === 'evaluate') return (await import('./model-cli.js')).evaluateMain(rest);
    if (cmd === 'plan') return await (await import('./plan.js')).planMain(rest);
    if (cmd === 'node') {
      const { nodeMain } = await import('../node/cli.js');
      return await nodeMain(rest);
    }
    if (cmd === 'certs') {
      const { certsMain } = await import('./certs.js');
      return certsMain(rest);
    }
    if (cmd === undefined || cmd === '--help' || cmd === '-h') { console.log(usage); return cmd === undefined ? 2 : 0; }
    if (cmd === '--version' || cmd === '-v') { console.log(`chainrule ${chainruleVersion()} (Node ${process.versions.node})`); return 0; }
    throw new OptionError(`unknown command '${cmd}'; commands: train, report, predict, evaluate, plan, node, certs`);
  } catch (e) {
    if (isUserError(e)) {
      console.error(`chainrule: ${e.message}`);
      return 2;
    }
    console.error(e);
    return 1;
  }
}
