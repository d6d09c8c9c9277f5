/**
 * Every option of a training run, in one table: from it come the TypeScript type of
 * `CoordinatorOptions`, the validation (messages name the field, `options.batchSize`, or the
 * flag, `--batch-size`), the defaults, the CLI flags and the `--help` text. A new option is
 * one entry here; choices are read from the registries that hold them.
 *
 * @example
 * resolveOptions({ epochs: 3, placement: 'threads' }).batchSize   // 64
 * parseCliOptions(['--epochs', '3']).options                      // { epochs: 3 }
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ChainruleError, lookup } from '../src/errors.js';
import type { ModelSpec } from '../src/nn/index.js';
import { builtinModels } from '../src/nn/index.js';
import { fullBatchMethods, optimizers, lrSchedules, type LrScheduleSpec, type OptimizerSpec } from '../src/optim/index.js';
import { TRANSFORM_KINDS, type TransformKind } from '../src/data/index.js';
import { backendNames } from '../src/tensor/select.js';
import { MAX_KERNEL_THREADS } from '../src/tensor/backend.js';
import { MAX_STEPS_PER_REQUEST } from '../src/wire/index.js';
import { transports, type Transport } from './transports/index.js';
import { interleaves, schedules } from './schedules/index.js';
import type { DataSplit } from './inputs.js';
import type { EpochReport, StepInfo } from './summary.js';

/** A user error in the options: names the field or flag and says what is allowed. */
export class OptionError extends ChainruleError {
  constructor(message: string, hint?: string) {
    super('BAD_OPTION', message, { hint });
  }
}

type Kind = 'int' | 'number' | 'string' | 'boolean' | 'list' | 'intList' | 'columns';
type Group = 'Model and data' | 'Training' | 'Optimizer' | 'Pipeline' | 'Security' | 'Checkpoints' | 'Output';

interface Def<T> {
  kind: Kind;
  group: Group;
  help: string;
  /** The flag's value name in --help (NAME, N, X, PATH...). */
  arg?: string;
  /** A fixed default, or one that follows from the other options. */
  default?: T | ((o: RawOptions) => T);
  /** How the default reads in --help, when it is not a fixed value. */
  defaultText?: string;
  /** Smallest allowed value (int, number): `min: 1` is "a positive integer". */
  min?: number;
  /** Largest allowed value (int). */
  max?: number;
  /** number: strictly above `min` (a positive number is min 0, exclusive). */
  exclusive?: boolean;
  /** number: strictly below this (a fraction in [0, 1) is min 0, below 1). */
  below?: number;
  /** The names allowed (strings), from the registry that holds them. */
  choices?: () => readonly string[];
  /** Extra names allowed besides `choices` (e.g. a path for --model). */
  accepts?: (v: string) => boolean;
  /** A field of the optimizer's spec (an optimizer hyperparameter), not an option of its own. */
  into?: 'optimizer';
  /** CLI only (not a Coordinator option), or API only (no flag). */
  only?: 'cli' | 'api';
  /** Short flag. */
  short?: string;
  /** The flag's name when it is not the key in kebab case (`skip-nonfinite`). */
  flag?: string;
  /** Phantom: the option's TypeScript type. */
  readonly type?: T;
}

const def = <T>(d: Omit<Def<T>, 'type'>): Def<T> => d as Def<T>;
/** An option that always has a value after resolution. */
type DefaultedDef<T> = Def<T> & { default: T | ((o: RawOptions) => T) };
const withDefault = <T>(d: Omit<DefaultedDef<T>, 'type'>): DefaultedDef<T> => d as DefaultedDef<T>;

const isPath = (v: string) => v.endsWith('.json') || v.includes('/') || v.includes('\\');
const optimizerNames = () => [...Object.keys(optimizers), ...Object.keys(fullBatchMethods)];

/** Momentum SGD for the MLP and user models (as PyTorch's reference run); Adam for the built-in CNN, LSTM and VAE. */
export function defaultOptimizer(model: unknown): string {
  return model === 'cnn' || model === 'lstm' || model === 'vae' ? 'adam' : 'momentum';
}

/** Learning rates that train the built-in digits well, per optimizer. */
const defaultLrs: Record<string, number> = { sgd: 0.05, momentum: 0.02, nesterov: 0.02, adam: 1e-3, adamw: 1e-3, rmsprop: 1e-3 };

export function defaultLr(optimizer: unknown): number {
  const type = optimizer === undefined ? 'momentum' : typeof optimizer === 'string' ? optimizer : (optimizer as OptimizerSpec).type;
  return lookup(defaultLrs, type) ?? 0.05;
}

export const optionTable = {
  model: withDefault<string | ModelSpec>({ kind: 'string', group: 'Model and data', arg: 'NAME|PATH', default: 'mlp', choices: () => Object.keys(builtinModels), accepts: isPath, help: 'a built-in model or a JSON model spec file' }),
  dataset: withDefault<string | DataSplit>({ kind: 'string', group: 'Model and data', arg: 'NAME', default: 'mnist', choices: () => ['mnist'], accepts: (v) => /^(csv|idx):./.test(v), help: 'the built-in digits, csv:PATH or idx:DIR' }),
  labelColumn: def<number | string>({ kind: 'string', group: 'Model and data', arg: 'N|NAME', defaultText: 'the last', help: 'the CSV label column' }),
  targetColumns: def<(number | string)[]>({ kind: 'columns', group: 'Model and data', arg: 'N|NAME,...', help: 'CSV columns of float targets (regression, multi-label) instead of a label column' }),
  transform: withDefault<TransformKind>({ kind: 'string', group: 'Model and data', arg: 'KIND', default: 'none', choices: () => TRANSFORM_KINDS, help: 'input transform fitted on the training split' }),
  augmentShift: def<number>({ kind: 'number', group: 'Model and data', arg: 'N', min: 0, help: 'seeded random shifts of training images, up to N pixels' }),
  augmentRotate: def<number>({ kind: 'number', group: 'Model and data', arg: 'DEG', min: 0, help: 'seeded random rotations, up to DEG degrees' }),
  noise: def<number>({ kind: 'number', group: 'Model and data', arg: 'STD', min: 0, help: 'Gaussian noise added to training inputs' }),

  epochs: withDefault<number>({ kind: 'int', group: 'Training', arg: 'N', default: 10, min: 1, help: 'passes over the training set' }),
  batchSize: withDefault<number>({ kind: 'int', group: 'Training', arg: 'N', default: 64, min: 1, help: 'samples per minibatch (the partial last one is dropped)' }),
  seed: withDefault<number>({ kind: 'int', group: 'Training', arg: 'N', default: 42, help: 'seeds the initial weights, the shuffling, dropout and augmentation' }),
  evalBatchSize: withDefault<number>({ kind: 'int', group: 'Training', arg: 'N', default: 500, min: 1, help: 'samples per evaluation batch' }),
  clipNorm: def<number>({ kind: 'number', group: 'Training', arg: 'X', min: 0, exclusive: true, help: 'clip the global gradient norm (over every stage) to X' }),
  validationSplit: withDefault<number>({ kind: 'number', group: 'Training', arg: 'F', default: 0, min: 0, below: 1, help: 'hold out the last fraction F of the training set (before shuffling) as a validation set, reported each epoch (valLoss, valAccuracy...); never trained on' }),
  earlyStop: def<number>({ kind: 'int', group: 'Training', arg: 'PATIENCE', min: 1, help: "stop once the validation loss has not improved for PATIENCE epochs, and restore the best epoch's weights and optimizer state (needs --validation-split)" }),
  skipNonFinite: def<boolean>({ kind: 'boolean', group: 'Training', flag: 'skip-nonfinite', help: 'skip a step in which a NaN or infinity appears (no update on any stage or replica; counted as skippedSteps, a warning each) instead of stopping the run' }),
  fullBatchSize: def<number>({ kind: 'int', group: 'Training', arg: 'N', min: 1, defaultText: 'all', help: 'full-batch methods: samples per iteration' }),
  iterationsPerEpoch: withDefault<number>({ kind: 'int', group: 'Training', arg: 'N', default: 10, min: 1, help: 'full-batch methods: iterations per reported epoch' }),

  optimizer: withDefault<string | OptimizerSpec>({ kind: 'string', group: 'Optimizer', arg: 'NAME', default: (o) => defaultOptimizer(o.model), defaultText: 'momentum; adam for cnn, lstm, vae', choices: optimizerNames, help: 'an element-wise or a full-batch (cg, lbfgs, newton) optimizer' }),
  lr: withDefault<number>({ kind: 'number', group: 'Optimizer', arg: 'X', min: 0, exclusive: true, default: (o) => defaultLr(o.optimizer ?? defaultOptimizer(o.model)), defaultText: "the optimizer's: sgd 0.05, momentum 0.02, adam 0.001", help: 'learning rate' }),
  momentum: def<number>({ into: 'optimizer', kind: 'number', group: 'Optimizer', arg: 'X', help: 'momentum factor (momentum, nesterov, rmsprop)' }),
  dampening: def<number>({ into: 'optimizer', kind: 'number', group: 'Optimizer', arg: 'X', help: 'momentum dampening' }),
  weightDecay: def<number>({ into: 'optimizer', kind: 'number', group: 'Optimizer', arg: 'X', help: 'L2 penalty (decoupled for adamw)' }),
  beta1: def<number>({ into: 'optimizer', kind: 'number', group: 'Optimizer', arg: 'X', help: "Adam's first-moment decay" }),
  beta2: def<number>({ into: 'optimizer', kind: 'number', group: 'Optimizer', arg: 'X', help: "Adam's second-moment decay" }),
  eps: def<number>({ into: 'optimizer', kind: 'number', group: 'Optimizer', arg: 'X', help: 'added to the denominator (adam, rmsprop)' }),
  alpha: def<number>({ into: 'optimizer', kind: 'number', group: 'Optimizer', arg: 'X', help: "RMSProp's smoothing constant" }),
  centered: def<boolean>({ into: 'optimizer', kind: 'boolean', group: 'Optimizer', help: 'centered RMSProp' }),
  amsgrad: def<boolean>({ into: 'optimizer', kind: 'boolean', group: 'Optimizer', help: 'AMSGrad variant of Adam' }),
  lrSchedule: def<string | LrScheduleSpec>({ kind: 'string', group: 'Optimizer', arg: 'NAME', defaultText: 'constant', choices: () => Object.keys(lrSchedules).filter((k) => k !== 'warmup'), help: 'learning-rate schedule' }),
  gamma: def<number>({ kind: 'number', group: 'Optimizer', arg: 'X', min: 0, exclusive: true, defaultText: 'step 0.5, exponential 0.9', help: 'decay factor of the step and exponential schedules' }),
  stepEpochs: def<number>({ kind: 'int', group: 'Optimizer', arg: 'N', min: 1, defaultText: '1', help: 'epochs between decays of the step schedule' }),
  minLr: def<number>({ kind: 'number', group: 'Optimizer', arg: 'X', min: 0, defaultText: '0', help: 'final rate of the cosine schedule' }),
  warmupSteps: def<number>({ kind: 'int', group: 'Optimizer', arg: 'N', min: 1, help: 'linear warm-up steps before the schedule' }),

  placement: withDefault<string | Transport>({ kind: 'string', group: 'Pipeline', arg: 'KIND', default: 'local', choices: () => Object.keys(transports), help: 'where the stage actors run' }),
  nodes: def<string[]>({ kind: 'list', group: 'Pipeline', arg: 'H:P,...', help: 'gRPC nodes for --placement grpc (actors placed replica-major, round robin)' }),
  replicas: withDefault<number>({ kind: 'int', group: 'Pipeline', arg: 'R', default: 1, min: 1, help: 'data-parallel replicas of the pipeline (each takes a shard of every minibatch)' }),
  stages: withDefault<number>({ kind: 'int', group: 'Pipeline', arg: 'K', default: (o) => (Array.isArray(o.partition) ? o.partition.length / (typeof o.virtualStages === 'number' ? o.virtualStages : 1) : 1), defaultText: '1', min: 1, help: 'pipeline stages, balanced by parameter count' }),
  partition: def<number[] | 'auto'>({ kind: 'intList', group: 'Pipeline', arg: 'A,B,...|auto', accepts: (v) => v === 'auto', help: 'explicit layers per stage instead (K·V entries with --virtual-stages V); auto: balance the stages by measured time (each layer timed for a few passes first)' }),
  microBatches: withDefault<number>({ kind: 'int', group: 'Pipeline', arg: 'M', default: 1, min: 1, help: 'micro-batches per replica and minibatch' }),
  schedule: withDefault<string>({ kind: 'string', group: 'Pipeline', arg: 'NAME', default: 'gpipe', choices: () => Object.keys(schedules), help: 'pipeline schedule' }),
  virtualStages: withDefault<number>({ kind: 'int', group: 'Pipeline', arg: 'V', default: 1, min: 1, help: "with --schedule interleaved-1f1b: model chunks per stage (Megatron's interleaved 1F1B): the model is cut into K·V chunks, stage (device) d holding chunks d, d+K, ... on one thread or node, so the bubble shrinks from (K−1)/(M+K−1) to (K−1)/(V·M+K−1) for V times more messages; needs M a multiple of K" }),
  commitEvery: def<number | 'auto'>({ kind: 'int', group: 'Pipeline', arg: 'N|auto', min: 0, accepts: (v) => v === 'auto', defaultText: 'auto (0 for the local placement)', help: 'commit every stage\'s state every N steps, so a lost node or thread is rebuilt from it and the steps since replayed; 0: no recovery; auto: where the actors keep the commits in memory (threads, replicas over several nodes) every 8 steps (with several steps to a request, --steps-per-request, at the start of the first request after 8), where the coordinator fetches them as often as a commit costs 5% of the time and at least every 64 steps' }),
  stepsPerRequest: withDefault<number | 'auto'>({ kind: 'int', group: 'Pipeline', arg: 'N|auto', default: 'auto', min: 1, max: MAX_STEPS_PER_REQUEST, accepts: (v) => v === 'auto', help: "training steps sent to the actors in one request, run back to back (the same bits as one step a request): short steps then pay the round trip between the coordinator and the actors once per request, not once per step. auto: as many as take about 200 ms, at most 32 (1 for steps of 100 ms or more, for the first steps, which time them, and where an onStep callback or a trace must see each step); a request also ends at each checkpoint and recovery commit. Not with clipNorm or skipNonFinite (the coordinator decides between steps) or virtualStages; 1 on the local placement (its requests are calls); onStep runs once per step, after its request" }),
  spares: def<string[]>({ kind: 'list', group: 'Pipeline', arg: 'H:P,...', help: 'spare gRPC nodes that replace lost ones (without: this process takes over, with a warning)' }),
  backend: def<string>({ kind: 'string', group: 'Pipeline', arg: 'NAME', choices: () => backendNames, defaultText: 'native when built, else wasm; or CHAINRULE_BACKEND', help: 'kernel backend' }),
  kernelThreads: withDefault<number | 'auto'>({ kind: 'int', group: 'Pipeline', arg: 'N|auto', default: 1, min: 1, max: MAX_KERNEL_THREADS, accepts: (v) => v === 'auto', help: "threads each actor splits its large matrix products among (as PyTorch's set_num_threads; native backend): the bits do not change. auto: this host's cores shared among the threads that compute here (local: all of them; threads: cores / actors, at least 1; on gRPC nodes each node's own; 1 where the backend has none), kept only if each actor's first steps run faster on them than on one: in full runs on 2 cores a 784-1024×5 MLP at batch 256 kept 2 (1.5-1.6×), the CNN 2 (1.3×). Not the default: for a model of short steps (the default MLP at batch 64) the first steps sometimes favour 2, and the run then went at half speed. On C cores keep replicas × stages × N ≤ C" }),

  tls: def<string>({ kind: 'string', group: 'Security', arg: 'DIR', help: 'mutual TLS with the gRPC nodes: DIR/ca.pem, DIR/coordinator.pem, DIR/coordinator-key.pem (from chainrule certs)' }),
  tokenFile: def<string>({ kind: 'string', group: 'Security', arg: 'FILE', help: 'send the bearer token in FILE with every call to the gRPC nodes' }),
  advertise: def<string>({ kind: 'string', group: 'Security', arg: 'HOST', help: "this host's name or IP as nodes on other hosts reach it: stages this process serves (taking over a lost node) listen on every interface, advertised as HOST; needs --tls with node.pem naming HOST" }),

  checkpoint: def<string>({ kind: 'string', group: 'Checkpoints', arg: 'DIR', help: 'commit crash-safe checkpoints DIR/step-N (fsynced, hashed, renamed into place)' }),
  checkpointEvery: def<number>({ kind: 'int', group: 'Checkpoints', arg: 'N', min: 1, defaultText: 'every epoch', help: 'checkpoint every N optimizer steps (mid-epoch too)' }),
  keep: withDefault<number>({ kind: 'int', group: 'Checkpoints', arg: 'K', default: 3, min: 1, help: 'complete checkpoints kept; older ones are deleted after each commit' }),
  resume: def<string>({ kind: 'string', group: 'Checkpoints', arg: 'DIR', help: 'continue from the newest verified checkpoint in DIR (any placement, stage or replica count wrote it)' }),

  save: def<string>({ kind: 'string', group: 'Checkpoints', arg: 'DIR', help: 'save the trained model (spec and safetensors weights) to DIR for predict, evaluate and --init' }),
  init: def<string>({ kind: 'string', group: 'Checkpoints', arg: 'DIR', help: "start from a saved model's weights (fine-tuning); the model spec must match" }),

  logDir: def<string>({ kind: 'string', group: 'Output', arg: 'DIR', help: 'write metrics.jsonl, trace.json, summary.json and run.json there (see chainrule report DIR)' }),
  traceSteps: withDefault<number>({ kind: 'int', group: 'Output', arg: 'N', default: 5, min: 0, help: 'with --log-dir: trace the last N steps of the run into trace.json' }),
  config: def<string>({ kind: 'string', group: 'Output', only: 'cli', arg: 'FILE', help: 'read options from a JSON file ({"epochs": 3, "batch-size": 128, ...}: flag names without --); flags given too override it' }),
  json: def<boolean>({ kind: 'boolean', group: 'Output', only: 'cli', help: 'print only the JSON summary on standard output (progress goes to standard error)' }),
  help: def<boolean>({ kind: 'boolean', group: 'Output', only: 'cli', short: 'h', help: 'print this help' }),

  onEpoch: def<(r: EpochReport) => void | Promise<void>>({ kind: 'string', group: 'Output', only: 'api', help: 'called after every epoch (awaited; a throw ends train() with that error, its summary so far in err.summary)' }),
  onStep: def<(r: StepInfo) => void | Promise<void>>({ kind: 'string', group: 'Output', only: 'api', help: 'called after every optimizer step (awaited, like onEpoch)' }),
} as const;

type Table = typeof optionTable;
type TypeOf<D> = D extends Def<infer T> ? T : never;
type ApiKey = { [K in keyof Table]: Table[K] extends { only: 'cli' } ? never : K }[keyof Table];
type CliKey = { [K in keyof Table]: Table[K] extends { only: 'api' } ? never : K }[keyof Table];
type Defaulted = { [K in ApiKey]: Table[K] extends DefaultedDef<unknown> ? K : never }[ApiKey];

/** The options of a Coordinator (every field optional; see `optionTable` for each one's meaning and default). */
export type CoordinatorOptions = { [K in ApiKey]?: TypeOf<Table[K]> };
/** The options after validation, with every default filled in. */
export type ResolvedOptions = CoordinatorOptions & { [K in Defaulted]: TypeOf<Table[K]> };
type RawOptions = Record<string, unknown>;

const kebab = (k: string) => lookup(optionTable as Record<string, Def<unknown>>, k)?.flag ?? k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
export const flagOf = (key: string) => `--${kebab(key)}`;
const entries = Object.entries(optionTable) as [keyof Table, Def<unknown>][];

type Naming = (key: string) => string;
const apiNaming: Naming = (k) => `options.${k}`;

function describeValue(v: unknown): string {
  if (typeof v === 'string') return `'${v}'`;
  try { return JSON.stringify(v) ?? String(v); } catch { return String(v); }
}

/** Checks one option's value against its entry; throws an OptionError naming it. */
function checkValue(key: string, d: Def<unknown>, v: unknown, name: Naming): void {
  const where = name(key);
  const bad = (what: string) => { throw new OptionError(`${where} must be ${what}, got ${describeValue(v)}`); };
  switch (d.kind) {
    case 'int': {
      if (typeof v === 'string' && d.accepts?.(v)) return;
      // An int that also takes a word (--commit-every N|auto) says so.
      const or = d.accepts && d.arg?.includes('|') ? ` or ${d.arg.split('|')[1]}` : '';
      if (typeof v !== 'number' || !Number.isSafeInteger(v)) bad((d.min === 1 ? 'a positive integer' : d.min === 0 ? 'a non-negative integer' : 'an integer') + or);
      if (d.min !== undefined && (v as number) < d.min) bad((d.min === 1 ? 'a positive integer' : `an integer >= ${d.min}`) + or);
      if (d.max !== undefined && (v as number) > d.max) bad(`an integer from ${d.min ?? '-∞'} to ${d.max}`);
      return;
    }
    case 'number': {
      const what = d.below !== undefined ? `a number in ${d.exclusive ? '(' : '['}${d.min ?? '-∞'}, ${d.below})`
        : d.min === 0 ? (d.exclusive ? 'a positive number' : 'a non-negative number') : d.min !== undefined ? `a number ${d.exclusive ? '>' : '>='} ${d.min}` : 'a finite number';
      if (typeof v !== 'number' || !Number.isFinite(v)) bad(what);
      if (d.min !== undefined && ((v as number) < d.min || (d.exclusive && v === d.min))) bad(what);
      if (d.below !== undefined && (v as number) >= d.below) bad(what);
      return;
    }
    case 'boolean':
      if (typeof v !== 'boolean') bad('true or false');
      return;
    case 'list':
      if (!Array.isArray(v) || v.length === 0 || !v.every((s) => typeof s === 'string' && s.length > 0)) bad('a non-empty list of names');
      return;
    case 'intList':
      if (typeof v === 'string' && d.accepts?.(v)) return;
      if (!Array.isArray(v) || v.length === 0 || !v.every((s) => Number.isSafeInteger(s) && s > 0)) bad(`a list of positive integers${d.accepts ? ` or ${d.arg?.split('|')[1]}` : ''}`);
      return;
    case 'columns':
      if (!Array.isArray(v) || v.length === 0 || !v.every((s) => (typeof s === 'string' && s.length > 0) || (Number.isSafeInteger(s) && s >= 0))) {
        bad('a non-empty list of column names or 0-based indices');
      }
      return;
    case 'string': {
      if (d.only === 'api') { if (typeof v !== 'function') bad('a function'); return; }
      // The API also takes objects here (a model spec, datasets, a Transport...): their own code checks them.
      if (typeof v !== 'string') { if (typeof v === 'object' && v !== null) return; bad('a string'); }
      const s = v as string;
      if (d.choices && lookup(Object.fromEntries(d.choices().map((c) => [c, true])), s) === undefined && !(d.accepts?.(s))) {
        const choices = d.choices().join(', ');
        throw new OptionError(`${where} must be one of ${choices}${d.accepts ? ` (or ${d.arg?.includes('PATH') ? 'a path to a JSON file' : 'csv:PATH or idx:DIR'})` : ''}, got '${s}'`);
      }
      if (s.trim() === '') bad('a non-empty string');
    }
  }
}

/**
 * Validates options and fills in the defaults. Every check that needs no data happens
 * here, before any actor starts.
 * @throws OptionError naming the field (or the flag, for `naming` = flagOf).
 */
export function resolveOptions(opts: CoordinatorOptions = {}, naming: Naming = apiNaming): ResolvedOptions {
  if (opts === null || typeof opts !== 'object') throw new OptionError(`options must be an object, got ${describeValue(opts)}`);
  const raw: RawOptions = {};
  for (const [k, v] of Object.entries(opts)) {
    const d = lookup(optionTable as Record<string, Def<unknown>>, k);
    if (!d || d.only === 'cli') {
      const near = entries.filter(([name]) => name.toLowerCase().startsWith(k.toLowerCase().slice(0, 4))).map(([n]) => n);
      throw new OptionError(`${naming(k)} is not an option${near.length ? `; did you mean ${near.join(', ')}?` : ''}`);
    }
    if (v === undefined) continue;
    checkValue(k, d, v, naming);
    raw[k] = v;
  }
  for (const [k, d] of entries) {
    if (raw[k] !== undefined || d.default === undefined) continue;
    raw[k] = typeof d.default === 'function' ? (d.default as (o: RawOptions) => unknown)(raw) : d.default;
  }
  const o = raw as ResolvedOptions;
  if (Array.isArray(o.partition) && opts.stages !== undefined && o.partition.length !== o.stages * o.virtualStages) {
    throw new OptionError(o.virtualStages > 1
      ? `${naming('partition')} lists ${o.partition.length} chunks but ${naming('stages')} ${o.stages} × ${naming('virtualStages')} ${o.virtualStages} makes ${o.stages * o.virtualStages}`
      : `${naming('partition')} lists ${o.partition.length} stages but ${naming('stages')} is ${o.stages}`);
  }
  checkVirtualStages(o, naming);
  if (typeof o.stepsPerRequest === 'number' && o.stepsPerRequest > 1) {
    const between = [o.clipNorm !== undefined && 'clipNorm', o.skipNonFinite === true && 'skipNonFinite', o.virtualStages > 1 && 'virtualStages']
      .filter((k): k is 'clipNorm' | 'skipNonFinite' | 'virtualStages' => k !== false);
    if (between.length > 0) {
      throw new OptionError(`${naming('stepsPerRequest')} ${o.stepsPerRequest} cannot be used with ${between.map(naming).join(' or ')}: the coordinator must see every step before the next one starts`, `use ${naming('stepsPerRequest')} 1 or auto`);
    }
  }
  const shards = o.replicas * o.microBatches;
  if (o.batchSize % shards !== 0) {
    const what = o.replicas > 1 ? `${o.replicas} replicas × ${o.microBatches} micro-batches` : `${o.microBatches} micro-batches`;
    throw new OptionError(`${naming('batchSize')} ${o.batchSize} is not divisible by ${what}`, `choose a batch size that is a multiple of ${shards}`);
  }
  const scheduleParams = (['gamma', 'stepEpochs', 'minLr', 'warmupSteps'] as const).filter((k) => o[k] !== undefined);
  if (scheduleParams.length > 0 && typeof o.lrSchedule !== 'string') {
    throw new OptionError(`${scheduleParams.map(naming).join(', ')} ${scheduleParams.length > 1 ? 'are' : 'is'} only used with ${naming('lrSchedule')} NAME`);
  }
  if (o.earlyStop !== undefined && !(o.validationSplit > 0)) {
    throw new OptionError(`${naming('earlyStop')} needs ${naming('validationSplit')} F > 0: it watches the loss on the held-out samples`, `set ${naming('validationSplit')} to 0.1, for instance (the last 10% of the training set)`);
  }
  for (const k of ['checkpointEvery', 'keep'] as const) {
    if (opts[k] !== undefined && o.checkpoint === undefined) throw new OptionError(`${naming(k)} is only used with ${naming('checkpoint')} DIR`);
  }
  if (o.targetColumns !== undefined) {
    if (o.labelColumn !== undefined) throw new OptionError(`${naming('labelColumn')} and ${naming('targetColumns')} exclude each other`, 'labels are for classification, target columns for regression or multi-label');
    // Only when the dataset is given here: a config file may hold one and the flags the other.
    if (opts.dataset !== undefined && (typeof o.dataset !== 'string' || !o.dataset.startsWith('csv:'))) {
      throw new OptionError(`${naming('targetColumns')} is only used with a CSV ${naming('dataset')} (csv:PATH)`);
    }
  }
  if (o.placement === 'grpc' && !o.nodes) throw new OptionError(`${naming('placement')} grpc needs ${naming('nodes')} host:port[,host:port...]`);
  if (o.nodes && typeof o.placement === 'string' && o.placement !== 'grpc') {
    throw new OptionError(`${naming('nodes')} is only used with ${naming('placement')} grpc (got ${o.placement})`);
  }
  for (const k of ['tls', 'tokenFile', 'advertise'] as const) {
    if (o[k] !== undefined && o.placement !== 'grpc') {
      throw new OptionError(`${naming(k)} is only used with ${naming('placement')} grpc (got ${typeof o.placement === 'string' ? o.placement : `a ${o.placement.kind} Transport object, which takes its own`})`);
    }
  }
  return o;
}

/** `virtualStages` V > 1: an interleaving schedule, a partition of K·V chunks, M a multiple of K, a placement that co-locates a device's chunks. */
function checkVirtualStages(o: ResolvedOptions, naming: Naming): void {
  const V = o.virtualStages;
  if (V === 1) return;
  const interleaving = Object.keys(schedules).filter(interleaves);
  if (!interleaves(o.schedule)) {
    throw new OptionError(`${naming('virtualStages')} ${V} needs an interleaved schedule, got ${naming('schedule')} ${o.schedule}`, `pass ${naming('schedule')} ${interleaving.join(' or ')}, or ${naming('virtualStages')} 1`);
  }
  if (Array.isArray(o.partition) && o.partition.length % V !== 0) {
    throw new OptionError(`${naming('partition')} lists ${o.partition.length} chunks, not a multiple of ${naming('virtualStages')} ${V}`, `list K·${V} chunk sizes (chunk v goes to stage v mod K)`);
  }
  if (o.microBatches % o.stages !== 0) {
    throw new OptionError(`${naming('microBatches')} ${o.microBatches} is not a multiple of ${naming('stages')} ${o.stages}: ${o.schedule} with ${naming('virtualStages')} ${V} sends the micro-batches round the stages in groups of K`,
      `use ${naming('microBatches')} ${Math.max(1, Math.ceil(o.microBatches / o.stages)) * o.stages} (a multiple of ${o.stages})`);
  }
  const placement = typeof o.placement === 'string' ? o.placement : null;
  // (The placements whose transport hostsVirtualStages; a Transport object is checked when it opens.)
  const hosts: string[] = ['local', 'threads', 'grpc'];
  if (placement !== null && !hosts.includes(placement)) {
    throw new OptionError(`${naming('virtualStages')} ${V} is not supported with ${naming('placement')} ${placement}: a stage's ${V} chunks must share a thread or process`, `use ${naming('placement')} ${hosts.join(', ')}, or ${naming('virtualStages')} 1`);
  }
}

const cliEntries = entries.filter(([, d]) => d.only !== 'api') as [CliKey, Def<unknown>][];

function fromText(key: string, d: Def<unknown>, text: string): unknown {
  const flag = flagOf(key);
  const int = (s: string) => {
    if (!/^-?\d+$/.test(s.trim())) throw new OptionError(`${flag} must be an integer${d.accepts && d.arg?.includes('|') ? ` or ${d.arg.split('|')[1]}` : ''}, got '${s}'`);
    return Number(s);
  };
  switch (d.kind) {
    case 'int': return d.accepts?.(text) ? text : int(text);
    case 'number': {
      const x = Number(text);
      if (text.trim() === '' || !Number.isFinite(x)) throw new OptionError(`${flag} must be a number, got '${text}'`);
      return x;
    }
    case 'list': return text.split(',').map((s) => s.trim()).filter(Boolean);
    case 'intList': return d.accepts?.(text) ? text : text.split(',').map(int);
    case 'columns': return text.split(',').map((s) => s.trim()).filter(Boolean).map((s) => (/^\d+$/.test(s) ? Number(s) : s));
    default: return key === 'labelColumn' && /^\d+$/.test(text) ? Number(text) : text;
  }
}

/**
 * Parses `chainrule train` flags into validated options (errors name the flag).
 * @example parseCliOptions(['--epochs', '3', '--json']) // { options: { epochs: 3, ... }, json: true, help: false }
 */
export function parseCliOptions(argv: string[]): { options: CoordinatorOptions; json: boolean; help: boolean } {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv, strict: true, allowPositionals: false,
      options: Object.fromEntries(cliEntries.map(([k, d]) => [kebab(k), { type: d.kind === 'boolean' ? 'boolean' : 'string', ...(d.short ? { short: d.short } : {}) }])),
    }) as { values: Record<string, string | boolean | undefined> });
  } catch (e) {
    throw new OptionError((e as Error).message.replace(/\. To specify a positional argument.*$/s, ''), 'see chainrule train --help');
  }
  const options: Record<string, unknown> = typeof values['config'] === 'string' ? readConfigFile(values['config']) : {};
  for (const [k, d] of cliEntries) {
    const v = values[kebab(k)];
    if (v === undefined || d.only === 'cli') continue;
    options[k] = typeof v === 'string' ? fromText(k, d, v) : v;
  }
  const help = values['help'] === true;
  // Validated now, naming flags, so that a bad value never reaches an actor.
  if (!help) resolveOptions(options as CoordinatorOptions, flagOf);
  return { options: options as CoordinatorOptions, json: values['json'] === true, help };
}

/**
 * Options from a JSON config file: an object whose keys are flag names (`batch-size`, or the
 * option's own name, `batchSize`) with JSON values of the flag's kind; validated by name.
 */
export function readConfigFile(path: string): Record<string, unknown> {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    throw new OptionError(`--config ${path}: cannot read it as JSON (${why})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new OptionError(`--config ${path}: must hold a JSON object of options, got ${describeValue(json)}`);
  const out: Record<string, unknown> = {};
  for (const [name, v] of Object.entries(json)) {
    const key = entries.find(([k]) => kebab(k) === name)?.[0] ?? name.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
    const d = lookup(optionTable as Record<string, Def<unknown>>, key);
    if (!d || d.only !== undefined) throw new OptionError(`--config ${path}: '${name}' is not an option of chainrule train (see chainrule train --help)`);
    // Strings go through the flag's own parsing ("--epochs 3" and "epochs": "3" mean the same).
    out[key] = typeof v === 'string' && d.kind !== 'string' ? fromText(key, d, v) : v;
  }
  const naming = (k: string) => `--config ${path}: '${kebab(k)}'`;
  resolveOptions(out as CoordinatorOptions, naming);
  return out;
}

/** The `chainrule train --help` text, generated from the table. */
export function trainUsage(): string {
  const lines = ['Usage: chainrule train [options]'];
  let group = '';
  for (const [k, d] of cliEntries) {
    if (d.group !== group) { group = d.group; lines.push('', `${group}:`); }
    const left = `  ${flagOf(k)}${d.short ? `, -${d.short}` : ''}${d.kind === 'boolean' ? '' : ` ${d.arg ?? 'X'}`}`;
    const choices = d.choices ? ` (${d.choices().join(' | ')}${d.accepts ? ' | ' + (d.arg?.includes('PATH') ? 'PATH' : 'csv:PATH | idx:DIR') : ''})` : '';
    const dflt = d.defaultText ?? (d.default !== undefined && typeof d.default !== 'function' ? String(d.default) : undefined);
    lines.push(`${left.padEnd(30)} ${d.help}${choices}${dflt !== undefined ? `; default ${dflt}` : ''}`);
  }
  return lines.join('\n') + '\n';
}

/** The optimizer's spec: its name (or the spec given) with the learning rate and every hyperparameter given. */
export function optimizerSpecOf(o: ResolvedOptions): OptimizerSpec {
  const given = Object.fromEntries(entries.filter(([k, d]) => d.into === 'optimizer' && o[k as ApiKey] !== undefined).map(([k]) => [k, o[k as ApiKey]]));
  if (typeof o.optimizer !== 'string') {
    if (Object.keys(given).length > 0) throw new OptionError(`options.${Object.keys(given)[0]} cannot be combined with an optimizer spec object; put it into the spec`);
    return { ...o.optimizer, lr: o.optimizer.lr ?? o.lr };
  }
  return { type: o.optimizer, lr: o.lr, ...given } as OptimizerSpec;
}

/**
 * The learning-rate schedule's spec for a run of `totalSteps` steps (cosine runs over the
 * whole run), or null for a constant rate.
 */
export function lrScheduleOf(o: ResolvedOptions): ((totalSteps: number) => LrScheduleSpec) | null {
  const s = o.lrSchedule;
  if (s === undefined) return null;
  if (typeof s !== 'string') return (total) => withTotalSteps(s, total);
  const lr = o.lr;
  const base = (total: number): LrScheduleSpec =>
    s === 'step' ? { type: 'step', lr, everyEpochs: o.stepEpochs ?? 1, gamma: o.gamma ?? 0.5 }
      : s === 'exponential' ? { type: 'exponential', lr, gamma: o.gamma ?? 0.9 }
        : s === 'cosine' ? { type: 'cosine', lr, minLr: o.minLr ?? 0, totalSteps: total }
          : { type: 'constant', lr };
  return (total) => (o.warmupSteps ? { type: 'warmup', warmupSteps: o.warmupSteps, schedule: base(total) } as LrScheduleSpec : base(total));
}

/** A cosine schedule with totalSteps -1 runs over the whole training run. */
function withTotalSteps(spec: LrScheduleSpec, total: number): LrScheduleSpec {
  if (spec.type === 'cosine' && spec.totalSteps === -1) return { ...spec, totalSteps: total };
  if (spec.type === 'warmup') return { ...spec, schedule: withTotalSteps(spec.schedule, total) };
  return spec;
}
