/**
 * The command line: `chainrule train [flags]` and `chainrule node --port P [--host H]`.
 * Bad input (an unknown flag, a bad value, a missing file) prints what and where, exit code 2.
 */
import { parseArgs } from 'node:util';
import { Coordinator, defaultLr, defaultOptimizer, type CoordinatorOptions, type EpochReport } from './coordinator.js';

export const trainUsage = `Usage: chainrule train [options]
  --model NAME|PATH        mlp (default), cnn, lstm, vae, or a JSON model spec file
  --dataset NAME           mnist (default, the built-in digits), csv:PATH or idx:DIR
  --label-column N|NAME    the CSV label column (default: the last)
  --epochs N               (default 10)
  --batch-size N           (default 64)
  --lr X                   learning rate (default 0.05)
  --seed N                 (default 42)
  --optimizer NAME         momentum (default for mlp; adam for cnn, lstm, vae) | sgd | nesterov | adam | adamw | rmsprop
                           | cg | lbfgs | newton (full-batch methods)
  --momentum X --dampening X --weight-decay X --beta1 X --beta2 X --eps X --alpha X
  --centered --amsgrad     optimizer hyperparameters (PyTorch's names and meanings)
  --lr-schedule NAME       constant | step | exponential | cosine
  --gamma X --step-epochs N --min-lr X --warmup-steps N   its parameters
  --clip-norm X            clip the global gradient norm
  --full-batch-size N      samples per full-batch iteration (default: all)
  --iterations-per-epoch N full-batch iterations per reported epoch (default 10)
  --transform KIND         none | minmax | standardize (fitted on the training split)
  --augment-shift N --augment-rotate DEG --noise STD   seeded augmentation per epoch
  --placement KIND         local (default) | threads | grpc
  --nodes H:P,H:P          gRPC nodes for --placement grpc
  --stages K               pipeline stages (default 1), balanced by parameter count
  --partition A,B,...      explicit layers per stage instead
  --micro-batches M        micro-batches per minibatch (default 1)
  --schedule NAME          gpipe (default) | 1f1b
  --backend NAME           js | wasm | native (default: the fastest available: native when built, else wasm)
  --checkpoint PATH        write a checkpoint after every epoch
  --resume PATH            continue from a checkpoint (any placement or stage count wrote it)
  --json                   end with one JSON line summarizing the run
`;

const usage = `Usage: chainrule <command> [options]
Commands:
  train    train a model (chainrule train --help)
  node     host stages for a remote coordinator (chainrule node --port P [--host H])
`;

/** An error the user can fix: printed without a stack, exit code 2. */
export class UsageError extends Error {
  readonly code = 'USAGE';
}

function int(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  if (!/^-?\d+$/.test(v.trim())) throw new UsageError(`${flag} must be an integer, got '${v}'`);
  return Number(v);
}

function num(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  const x = Number(v);
  if (v.trim() === '' || !Number.isFinite(x)) throw new UsageError(`${flag} must be a number, got '${v}'`);
  return x;
}

export function parseTrainArgs(argv: string[]): { options: CoordinatorOptions; json: boolean; help: boolean } {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        model: { type: 'string' }, dataset: { type: 'string' }, 'label-column': { type: 'string' },
        epochs: { type: 'string' }, 'batch-size': { type: 'string' }, lr: { type: 'string' }, seed: { type: 'string' },
        optimizer: { type: 'string' }, placement: { type: 'string' }, nodes: { type: 'string' },
        stages: { type: 'string' }, partition: { type: 'string' }, 'micro-batches': { type: 'string' },
        schedule: { type: 'string' }, backend: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
        momentum: { type: 'string' }, dampening: { type: 'string' }, 'weight-decay': { type: 'string' }, beta1: { type: 'string' },
        beta2: { type: 'string' }, eps: { type: 'string' }, alpha: { type: 'string' }, centered: { type: 'boolean' }, amsgrad: { type: 'boolean' },
        'lr-schedule': { type: 'string' }, gamma: { type: 'string' }, 'step-epochs': { type: 'string' }, 'min-lr': { type: 'string' },
        'warmup-steps': { type: 'string' }, 'clip-norm': { type: 'string' }, 'full-batch-size': { type: 'string' },
        'iterations-per-epoch': { type: 'string' }, transform: { type: 'string' }, 'augment-shift': { type: 'string' },
        'augment-rotate': { type: 'string' }, noise: { type: 'string' },
        checkpoint: { type: 'string' }, resume: { type: 'string' },
      },
    }));
  } catch (e) {
    throw new UsageError(`${(e as Error).message}\n${trainUsage}`);
  }
  const label = values['label-column'];
  const options: CoordinatorOptions = {
    model: values.model,
    dataset: values.dataset,
    labelColumn: label === undefined ? undefined : /^\d+$/.test(label) ? Number(label) : label,
    epochs: int(values.epochs, '--epochs'),
    batchSize: int(values['batch-size'], '--batch-size'),
    lr: num(values.lr, '--lr'),
    seed: int(values.seed, '--seed'),
    optimizer: values.optimizer,
    placement: values.placement,
    nodes: values.nodes?.split(',').map((s) => s.trim()).filter(Boolean),
    stages: int(values.stages, '--stages'),
    partition: values.partition?.split(',').map((s) => int(s, '--partition')!),
    microBatches: int(values['micro-batches'], '--micro-batches'),
    schedule: values.schedule,
    backend: values.backend,
  };
  // Optimizer hyperparameters go into its spec; the optimizer validates them (and rejects ones it does not take).
  const hyper: Record<string, number | boolean | undefined> = {
    momentum: num(values.momentum, '--momentum'), dampening: num(values.dampening, '--dampening'),
    weightDecay: num(values['weight-decay'], '--weight-decay'), beta1: num(values.beta1, '--beta1'), beta2: num(values.beta2, '--beta2'),
    eps: num(values.eps, '--eps'), alpha: num(values.alpha, '--alpha'), centered: values.centered, amsgrad: values.amsgrad,
  };
  const given = Object.entries(hyper).filter(([, v]) => v !== undefined) as [string, number | boolean][];
  if (given.length > 0) {
    const type = values.optimizer ?? defaultOptimizer(values.model);
    const spec: Record<string, number | string | boolean> = { type, ...Object.fromEntries(given) };
    if (options.lr !== undefined) spec.lr = options.lr;
    options.optimizer = spec as CoordinatorOptions['optimizer'];
  }
  const sched = values['lr-schedule'];
  if (sched !== undefined) {
    const lr = options.lr ?? defaultLr(values.optimizer ?? defaultOptimizer(values.model));
    const gamma = num(values.gamma, '--gamma');
    const base: Record<string, unknown> =
      sched === 'constant' ? { type: 'constant', lr }
        : sched === 'step' ? { type: 'step', lr, everyEpochs: int(values['step-epochs'], '--step-epochs') ?? 1, gamma: gamma ?? 0.5 }
          : sched === 'exponential' ? { type: 'exponential', lr, gamma: gamma ?? 0.9 }
            : sched === 'cosine' ? { type: 'cosine', lr, minLr: num(values['min-lr'], '--min-lr') ?? 0, totalSteps: -1 }
              : (() => { throw new UsageError(`--lr-schedule must be one of constant, step, exponential, cosine, got '${sched}'`); })();
    const warmup = int(values['warmup-steps'], '--warmup-steps');
    options.lrSchedule = (warmup ? { type: 'warmup', warmupSteps: warmup, schedule: base } : base) as CoordinatorOptions['lrSchedule'];
  }
  options.checkpoint = values.checkpoint;
  options.resume = values.resume;
  options.clipNorm = num(values['clip-norm'], '--clip-norm');
  options.fullBatchSize = int(values['full-batch-size'], '--full-batch-size');
  options.iterationsPerEpoch = int(values['iterations-per-epoch'], '--iterations-per-epoch');
  if (values.transform !== undefined) {
    if (!['none', 'minmax', 'standardize'].includes(values.transform)) throw new UsageError(`--transform must be one of none, minmax, standardize, got '${values.transform}'`);
    options.transform = values.transform as CoordinatorOptions['transform'];
  }
  const augment = { shift: num(values['augment-shift'], '--augment-shift'), rotate: num(values['augment-rotate'], '--augment-rotate'), noise: num(values.noise, '--noise') };
  if (Object.values(augment).some((v) => v !== undefined)) {
    options.augment = Object.fromEntries(Object.entries(augment).filter(([, v]) => v !== undefined));
  }
  for (const k of Object.keys(options) as (keyof CoordinatorOptions)[]) if (options[k] === undefined) delete options[k];
  if (options.partition && options.stages === undefined) options.stages = options.partition.length;
  return { options, json: values.json ?? false, help: values.help ?? false };
}

function progressLine(r: EpochReport, epochs: number): string {
  const acc = r.testAccuracy === null ? '' : `  test acc ${(r.testAccuracy * 100).toFixed(2)}%`;
  return `epoch ${String(r.epoch).padStart(String(epochs).length)}/${epochs}  train loss ${r.trainLoss.toFixed(4)}  test loss ${r.testLoss.toFixed(4)}${acc}  ${Math.round(r.samplesPerSecond)} samples/s  (${r.droppedSamples} dropped)`;
}

export async function trainMain(argv: string[], out: (s: string) => void = console.log): Promise<number> {
  const { options, json, help } = parseTrainArgs(argv);
  if (help) { out(trainUsage); return 0; }
  const c = new Coordinator({ ...options, onEpoch: (r) => out(progressLine(r, c.options.epochs)) });
  try {
    out(`chainrule: training ${typeof options.model === 'string' ? options.model : 'mlp'} on ${typeof options.dataset === 'string' ? options.dataset : 'mnist'} (${c.data.train.size} train / ${c.data.test.size} test), ${c.placementName}, ${c.stages} stage(s), ${c.options.microBatches} micro-batch(es), ${c.options.schedule}`);
    const summary = await c.train();
    if (json) out(JSON.stringify(summary));
    else out(`weights sha256 ${summary.weightsSha256}`);
  } finally {
    await c.close();
  }
  return 0;
}

/** Errors the user can fix (what and where): exit code 2, no stack. */
function isUserError(e: unknown): boolean {
  return typeof (e as { code?: unknown })?.code === 'string';
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    if (cmd === 'train') return await trainMain(rest);
    if (cmd === 'node') {
      const { nodeMain } = await import('../node/cli.js');
      return await nodeMain(rest);
    }
    if (cmd === undefined || cmd === '--help' || cmd === '-h') { console.log(usage); return cmd === undefined ? 2 : 0; }
    throw new UsageError(`unknown command '${cmd}'\n${usage}`);
  } catch (e) {
    if (isUserError(e)) {
      console.error(`chainrule: ${(e as Error).message}`);
      return 2;
    }
    console.error(e);
    return 1;
  }
}
