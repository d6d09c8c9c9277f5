/**
 * `chainrule predict --model DIR --input FILE` and `chainrule evaluate --model DIR --dataset NAME`:
 * a saved model (see saved-model.ts) used from the command line.
 */
import { parseArgs } from 'node:util';
import { loadModel, readPredictInput } from './saved-model.js';
import { resolveDataset } from './inputs.js';
import { OptionError } from './options.js';
import { metricsText } from './summary.js';

function parse(argv: string[], command: string, options: Record<string, { type: 'string' | 'boolean' }>, usage: string) {
  try {
    return parseArgs({ args: argv, strict: true, allowPositionals: false, options: { ...options, help: { type: 'boolean', short: 'h' } } }).values as Record<string, string | boolean | undefined>;
  } catch (e) {
    throw new OptionError(`${command}: ${(e as Error).message.replace(/\. To specify a positional argument.*$/s, '')}`, usage);
  }
}

function required(v: string | boolean | undefined, flag: string, command: string, usage: string): string {
  if (typeof v !== 'string' || v === '') throw new OptionError(`${command}: ${flag} is required`, usage);
  return v;
}

export const predictUsage = 'chainrule predict --model DIR --input FILE.csv|FILE.json|IDX-FILE [--json]';

/** Prints one prediction per input row: the class for a classifier, else the output values. */
export function predictMain(argv: string[], out: (s: string) => void = console.log): number {
  const v = parse(argv, 'predict', { model: { type: 'string' }, input: { type: 'string' }, json: { type: 'boolean' } }, predictUsage);
  if (v['help']) { out(`Usage: ${predictUsage}`); return 0; }
  const model = loadModel(required(v['model'], '--model', 'predict', predictUsage));
  const x = readPredictInput(required(v['input'], '--input', 'predict', predictUsage), model.inputShape);
  if (model.isClassifier) {
    const classes = model.predictClasses(x);
    if (v['json']) out(JSON.stringify({ predictions: Array.from(classes) }));
    else for (const c of classes) out(String(c));
    return 0;
  }
  const y = model.predict(x);
  const width = y.size / y.shape[0]!;
  const rows = Array.from({ length: y.shape[0]! }, (_, i) => Array.from(y.data.subarray(i * width, (i + 1) * width)));
  if (v['json']) out(JSON.stringify({ predictions: rows }));
  else for (const r of rows) out(r.join(','));
  return 0;
}

export const evaluateUsage = 'chainrule evaluate --model DIR --dataset mnist|csv:PATH|idx:DIR [--label-column N|NAME | --target-columns N|NAME,...] [--json]';

/** Loss and the metrics that fit (accuracy, MSE/MAE, per-label accuracy) of a saved model on a dataset's test split (the saved input transform applied). */
export function evaluateMain(argv: string[], out: (s: string) => void = console.log): number {
  const v = parse(argv, 'evaluate', { model: { type: 'string' }, dataset: { type: 'string' }, 'label-column': { type: 'string' }, 'target-columns': { type: 'string' }, seed: { type: 'string' }, json: { type: 'boolean' } }, evaluateUsage);
  if (v['help']) { out(`Usage: ${evaluateUsage}`); return 0; }
  const model = loadModel(required(v['model'], '--model', 'evaluate', evaluateUsage));
  const label = v['label-column'] as string | undefined;
  const seed = v['seed'] === undefined ? 42 : Number(v['seed']);
  const targets = v['target-columns'] as string | undefined;
  if (label !== undefined && targets !== undefined) throw new OptionError('evaluate: --label-column and --target-columns exclude each other', evaluateUsage);
  const column = (c: string) => (/^\d+$/.test(c) ? Number(c) : c);
  const data = resolveDataset(required(v['dataset'], '--dataset', 'evaluate', evaluateUsage), {
    labelColumn: label === undefined ? undefined : column(label),
    targetColumns: targets?.split(',').map((c) => c.trim()).filter(Boolean).map(column),
    seed,
  });
  const r = model.evaluate(data.test);
  if (v['json']) out(JSON.stringify(r));
  else out(`test loss ${r.loss.toFixed(4)}${r.accuracy === null ? '' : `  test acc ${(r.accuracy * 100).toFixed(2)}%`}${metricsText({ testMse: r.mse, testMae: r.mae, testLabelAccuracy: r.labelAccuracy })}  (${r.samples} samples)`);
  return 0;
}
