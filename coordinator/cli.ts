/**
 * The command line: `chainrule train [flags]` and `chainrule node --port P [--host H]`.
 * A user error (an unknown flag, a bad value, a missing file) prints one line naming what and
 * where and exits 2; an internal error prints its stack and exits 1.
 */
import { Coordinator } from './coordinator.js';
import { parseCliOptions, trainUsage, OptionError } from './options.js';
import { metricsText, type EpochReport } from './summary.js';
import { isUserError } from '../src/errors.js';

const usage = `Usage: chainrule <command> [options]
Commands:
  train     train a model (chainrule train --help)
  predict   predictions of a saved model (chainrule predict --model DIR --input FILE)
  evaluate  a saved model's loss and accuracy on a dataset (chainrule evaluate --model DIR --dataset NAME)
  node      host actors for a remote coordinator (chainrule node --port P [--host H])
`;

function progressLine(r: EpochReport, epochs: number): string {
  const acc = (r.testAccuracy === null ? '' : `  test acc ${(r.testAccuracy * 100).toFixed(2)}%`) + metricsText(r);
  return `epoch ${String(r.epoch).padStart(String(epochs).length)}/${epochs}  train loss ${r.trainLoss.toFixed(4)}  test loss ${r.testLoss.toFixed(4)}${acc}  ${Math.round(r.samplesPerSecond)} samples/s  (${r.droppedSamples} dropped)`;
}

export async function trainMain(argv: string[], out: (s: string) => void = console.log): Promise<number> {
  const { options, json, help } = parseCliOptions(argv);
  if (help) { out(trainUsage()); return 0; }
  const c = new Coordinator({ ...options, onEpoch: (r) => out(progressLine(r, c.options.epochs)) });
  try {
    const o = c.options;
    const layout = `${o.replicas > 1 ? `${o.replicas} replicas × ` : ''}${c.stages} stage(s)`;
    out(`chainrule: training ${typeof o.model === 'string' ? o.model : 'a model spec'} on ${typeof o.dataset === 'string' ? o.dataset : 'datasets'} (${c.data.train.size} train / ${c.data.test.size} test), ${c.placementName}, ${layout}, ${o.microBatches} micro-batch(es), ${o.schedule}`);
    const summary = await c.train();
    if (json) out(JSON.stringify(summary));
    else out(`weights sha256 ${summary.weightsSha256}`);
  } finally {
    await c.close();
  }
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    if (cmd === 'train') return await trainMain(rest);
    if (cmd === 'predict') return (await import('./model-cli.js')).predictMain(rest);
    if (cmd === 'evaluate') return (await import('./model-cli.js')).evaluateMain(rest);
    if (cmd === 'node') {
      const { nodeMain } = await import('../node/cli.js');
      return await nodeMain(rest);
    }
    if (cmd === undefined || cmd === '--help' || cmd === '-h') { console.log(usage); return cmd === undefined ? 2 : 0; }
    throw new OptionError(`unknown command '${cmd}'; commands: train, predict, evaluate, node`);
  } catch (e) {
    if (isUserError(e)) {
      console.error(`chainrule: ${e.message}`);
      return 2;
    }
    console.error(e);
    return 1;
  }
}
