/**
 * The Coordinator: the programmatic API behind `chainrule train`. It splits each
 * minibatch into micro-batches, drives a pipeline schedule over the stage actors
 * (wherever they run), has every stage sum its gradients in micro-batch order, scales
 * them once (1/batch size) and steps the optimizer, then evaluates.
 *
 * @example
 * import { Coordinator } from 'chainrule';
 * const c = new Coordinator({ model: 'mlp', dataset: 'mnist', epochs: 3, placement: 'threads', stages: 2, microBatches: 4 });
 * const summary = await c.train();   // { testAccuracy, weightsSha256, ... }
 * await c.close();
 */
import { createHash } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { Tensor } from '../src/tensor/tensor.js';
import { backend } from '../src/tensor/backend.js';
import { nativeKernel } from '../src/tensor/native/index.js';
import { selectBackend } from '../src/tensor/select.js';
import {
  Batcher, evalBatches, splitMicroBatches, fitTransform, type MicroBatch, applyTransform, augmentBatch, augmentStream,
  type AugmentOptions, type Dataset, type TransformKind, type TransformSpec,
} from '../src/data/index.js';
import { builtinModel, layerParameterCounts, validateModelSpec, getLoss, SpecError, type ModelSpec } from '../src/nn/index.js';
import { noGrad } from '../src/autograd/index.js';
import { formatAction, expectReply, encodeValue, decodeValue, type NamedTensors, type OptimizerStepArgs, type Request, type Schedule, type StageState, type StepReport, type Targets } from '../src/wire/index.js';
import {
  createOptimizer, createLrSchedule, clipScale, minimizeCG, minimizeLBFGS, minimizeNewton, minimizeNewtonCG,
  type LrSchedule, type LrScheduleSpec, type MinimizeOptions, type MinimizeResult, type Objective, type OptimizerSpec,
} from '../src/optim/index.js';
import { getSchedule, validateSchedule } from './schedules/index.js';
import { balancedPartition, explicitPartition } from './partition.js';
import { resolveDataset, type DataSplit } from './datasets.js';
import { createTransport, type StageHandle, type Transport } from './transports/index.js';

export interface CoordinatorOptions {
  /** 'mlp' (built-in), a path to a JSON model spec, or the spec itself. */
  model?: string | ModelSpec;
  /** 'mnist', 'csv:PATH', or train/test datasets. */
  dataset?: string | DataSplit;
  labelColumn?: number | string;
  epochs?: number;
  batchSize?: number;
  lr?: number;
  seed?: number;
  /** An optimizer name ('sgd', ...) or a full spec. */
  optimizer?: string | OptimizerSpec;
  /** 'local' | 'threads' | 'grpc', or a Transport of your own (e.g. a mixed placement). */
  placement?: string | Transport;
  nodes?: string[];
  stages?: number;
  /** Layers per stage, e.g. [3, 2]; default: balanced by parameter count. */
  partition?: number[];
  microBatches?: number;
  schedule?: string;
  /** Kernel backend ('js' | 'wasm' | 'native'); default: the fastest available. */
  backend?: string;
  evalBatchSize?: number;
  /** A learning-rate schedule for element-wise optimizers (its own lr overrides `lr`). */
  lrSchedule?: LrScheduleSpec;
  /** Clip gradients to this global norm (over every stage) before each step. */
  clipNorm?: number;
  /** Full-batch methods (cg, lbfgs, newton): samples per iteration (default: the whole training set). */
  fullBatchSize?: number;
  /** Full-batch methods: iterations per reported epoch (default 10). */
  iterationsPerEpoch?: number;
  /** Input transform fitted on the training split only, applied to both splits. */
  transform?: TransformKind;
  /** Seeded per-epoch augmentation of training batches. */
  augment?: AugmentOptions;
  /** Write a checkpoint here after every epoch. */
  checkpoint?: string;
  /** Continue from this checkpoint (weights, optimizer state, step and epoch counts). */
  resume?: string;
  /** Called after every epoch. */
  onEpoch?: (r: EpochReport) => void;
}

/** Everything a deterministic resume needs (the data order and dropout streams follow from seed, epoch and step). */
interface Checkpoint {
  format: 'chainrule-checkpoint';
  version: 1;
  model: ModelSpec;
  seed: number;
  optimizer: OptimizerSpec;
  epochsDone: number;
  stepCount: number;
  state: StageState;
}

/** Methods that need the whole gradient vector and run from the coordinator. */
const fullBatchMethods: Record<string, (obj: Objective, x0: Float64Array, o: MinimizeOptions & Record<string, unknown>) => Promise<MinimizeResult>> = {
  cg: (obj, x0, o) => minimizeCG(obj, x0, { variant: 'PR+', ...o }),
  lbfgs: (obj, x0, o) => minimizeLBFGS(obj, x0, o),
  // Exact Newton for small models; Hessian-free Newton–CG beyond. Parameters are float32,
  // so the Hessian-vector differences need a coarser step than float64 would.
  newton: (obj, x0, o) => (obj.size <= 2000 ? minimizeNewton(obj, x0, { epsilon: 1e-3, ...o }) : minimizeNewtonCG(obj, x0, { epsilon: 1e-3, cgMaxIter: 20, damping: 0.01, ...o })),
};

export interface EpochReport {
  epoch: number;
  trainLoss: number;
  testLoss: number;
  testAccuracy: number | null;
  samplesPerSecond: number;
  droppedSamples: number;
  seconds: number;
}

export interface TrainSummary {
  epochs: number;
  trainLoss: number;
  testLoss: number;
  testAccuracy: number | null;
  samplesPerSecond: number;
  droppedSamples: number;
  droppedPerEpoch: number;
  weightsSha256: string;
  placement: string;
  stages: number;
  partition: number[];
  microBatches: number;
  schedule: string;
  bubbleFraction: number;
  theoreticalBubbleFraction: number;
  backend: string;
  /** The native backend's sgemm microkernel ('avx512', 'avx2+fma', 'generic'); null for the others. */
  backendKernel: string | null;
  optimizer: string;
  seed: number;
  batchSize: number;
  lr: number;
  parameters: number;
  /** Full-batch methods: gradient and loss evaluations. */
  gradEvals?: number;
  lossEvals?: number;
  transform?: TransformSpec;
}

export class OptionError extends Error {
  readonly code = 'BAD_OPTION';
  constructor(message: string) {
    super(message);
    this.name = 'OptionError';
  }
}

function positiveInt(v: unknown, name: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw new OptionError(`${name} must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}

function loadModelSpec(model: string | ModelSpec, data: DataSplit): ModelSpec {
  if (typeof model !== 'string') return validateModelSpec(model);
  if (model.endsWith('.json') || model.includes('/')) {
    let text: string;
    try {
      text = readFileSync(model, 'utf8');
    } catch (e) {
      throw new OptionError(`--model: cannot read model spec file ${model}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw new SpecError(`${model}: not valid JSON (${(e as Error).message})`);
    }
    return validateModelSpec(json, model);
  }
  return builtinModel(model, data.train.inputShape, data.train.numClasses);
}

let runCounter = 0;

/** A cosine schedule with totalSteps -1 (the CLI's) runs over the whole training run. */
function withTotalSteps(spec: LrScheduleSpec, total: number): LrScheduleSpec {
  if (spec.type === 'cosine' && spec.totalSteps === -1) return { ...spec, totalSteps: total };
  if (spec.type === 'warmup') return { ...spec, schedule: withTotalSteps(spec.schedule, total) };
  return spec;
}

/** Momentum SGD for the MLP and user models (as PyTorch's reference run); Adam for the built-in CNN, LSTM and VAE. */
export function defaultOptimizer(model: CoordinatorOptions['model']): string {
  return model === 'cnn' || model === 'lstm' || model === 'vae' ? 'adam' : 'momentum';
}

/** Learning rates that train the built-in digits well, per optimizer. */
const defaultLrs: Record<string, number> = { sgd: 0.05, momentum: 0.02, nesterov: 0.02, adam: 1e-3, adamw: 1e-3, rmsprop: 1e-3 };

export function defaultLr(optimizer: CoordinatorOptions['optimizer']): number {
  const type = optimizer === undefined ? 'momentum' : typeof optimizer === 'string' ? optimizer : optimizer.type;
  return defaultLrs[type] ?? 0.05;
}

export class Coordinator {
  readonly options: Required<Pick<CoordinatorOptions, 'model' | 'dataset' | 'epochs' | 'batchSize' | 'lr' | 'seed' | 'optimizer' | 'placement' | 'stages' | 'microBatches' | 'schedule' | 'evalBatchSize'>> & CoordinatorOptions;
  readonly transformSpec: TransformSpec | undefined;
  /** Set for full-batch methods: the name of the method. */
  readonly fullBatch: string | null;
  private readonly lrAt: LrSchedule | null;
  private layout: { stage: number; name: string; shape: readonly number[]; size: number }[] = [];
  readonly data: DataSplit;
  readonly spec: ModelSpec;
  readonly optimizerSpec: OptimizerSpec;
  readonly bounds: number[];
  readonly schedulePlan: Schedule;
  readonly run = `run-${process.pid}-${Date.now().toString(36)}-${runCounter++}`;
  private transport: Transport | null = null;
  private handles: StageHandle[] = [];
  private stepCount = 0;
  private epochsDone = 0;
  private busyMs = 0;
  private stageWallMs = 0;

  constructor(opts: CoordinatorOptions = {}) {
    const o = {
      model: 'mlp', dataset: 'mnist', epochs: 10, batchSize: 64, lr: defaultLr(opts.optimizer ?? defaultOptimizer(opts.model)), seed: 42, optimizer: defaultOptimizer(opts.model),
      placement: 'local', stages: 1, microBatches: 1, schedule: 'gpipe', evalBatchSize: 500, ...opts,
    };
    positiveInt(o.epochs, 'epochs');
    positiveInt(o.batchSize, 'batchSize');
    positiveInt(o.stages, 'stages');
    positiveInt(o.microBatches, 'microBatches');
    positiveInt(o.evalBatchSize, 'evalBatchSize');
    if (!(typeof o.lr === 'number' && Number.isFinite(o.lr) && o.lr > 0)) throw new OptionError(`lr must be a positive number, got ${JSON.stringify(o.lr)}`);
    if (!(typeof o.seed === 'number' && Number.isSafeInteger(o.seed))) throw new OptionError(`seed must be an integer, got ${JSON.stringify(o.seed)}`);
    if (o.batchSize % o.microBatches !== 0) {
      throw new OptionError(`batch size ${o.batchSize} is not divisible by ${o.microBatches} micro-batches; choose a batch size that is a multiple of ${o.microBatches}`);
    }
    this.options = o;
    if (opts.backend !== undefined || backend().name === 'js') selectBackend(opts.backend);
    let data = typeof o.dataset === 'string' ? resolveDataset(o.dataset, { labelColumn: o.labelColumn, seed: o.seed }) : o.dataset;
    if (o.transform && o.transform !== 'none') {
      // Statistics from the training split only; the test split reuses them.
      this.transformSpec = fitTransform(o.transform, data.train);
      data = { train: applyTransform(this.transformSpec, data.train), test: applyTransform(this.transformSpec, data.test) };
    }
    this.data = data;
    if (o.batchSize > this.data.train.size) throw new OptionError(`batch size ${o.batchSize} is larger than the training set (${this.data.train.size} samples)`);
    this.spec = loadModelSpec(o.model, this.data);
    this.optimizerSpec = typeof o.optimizer === 'string' ? { type: o.optimizer, lr: o.lr } : { ...o.optimizer, lr: o.optimizer.lr ?? o.lr };
    this.fullBatch = this.optimizerSpec.type in fullBatchMethods ? this.optimizerSpec.type : null;
    if (!this.fullBatch) createOptimizer(this.optimizerSpec); // validates the name and hyperparameters now
    this.lrAt = o.lrSchedule ? createLrSchedule(withTotalSteps(o.lrSchedule, o.epochs * this.stepsPerEpoch)) : null;
    if (o.clipNorm !== undefined && !(typeof o.clipNorm === 'number' && o.clipNorm > 0)) throw new OptionError(`clipNorm must be a positive number, got ${JSON.stringify(o.clipNorm)}`);
    if (o.fullBatchSize !== undefined) positiveInt(o.fullBatchSize, 'fullBatchSize');
    positiveInt(o.iterationsPerEpoch ?? 10, 'iterationsPerEpoch');
    const counts = layerParameterCounts(this.spec);
    this.bounds = o.partition ? explicitPartition(o.partition, counts.length) : balancedPartition(counts, o.stages);
    const stages = this.bounds.length - 1;
    if (stages !== o.stages && !opts.partition) throw new OptionError(`stages ${o.stages} does not match the partition`);
    this.options.stages = stages;
    this.schedulePlan = getSchedule(o.schedule)(stages, o.microBatches);
    validateSchedule(this.schedulePlan, stages, o.microBatches);
  }

  get stages(): number { return this.bounds.length - 1; }
  get stepsPerEpoch(): number { return Math.floor(this.data.train.size / this.options.batchSize); }
  get placementName(): string { return typeof this.options.placement === 'string' ? this.options.placement : this.options.placement.kind; }

  /** Starts the stage actors and configures them (idempotent). */
  async open(): Promise<void> {
    if (this.transport) return;
    const o = this.options;
    this.transport = typeof o.placement === 'string' ? createTransport(o.placement, { nodes: o.nodes }) : o.placement;
    this.handles = await this.transport.open(this.stages, this.run);
    await Promise.all(this.handles.map(async (h, s) => {
      const reply = await h.request(this.req(s, {
        type: 'configure',
        config: { model: this.spec, start: this.bounds[s]!, end: this.bounds[s + 1]!, seed: o.seed, stages: this.stages, capacity: this.fullBatchPlan()?.microBatches ?? o.microBatches, backend: backend().name },
      }));
      expectReply(reply, 'configured', h.name);
    }));
    this.layout = [];
    for (const [s, h] of this.handles.entries()) {
      const tensors = expectReply(await h.request(this.req(s, { type: 'getParams' })), 'tensors', h.name).tensors;
      for (const [name, t] of Object.entries(tensors)) this.layout.push({ stage: s, name, shape: t.shape, size: t.size });
    }
  }

  /** Full-batch methods: the batch is cut into micro-batches of `batchSize` samples. */
  private fullBatchPlan(): { samples: number; microBatches: number } | null {
    if (!this.fullBatch) return null;
    const n = Math.min(this.options.fullBatchSize ?? this.data.train.size, this.data.train.size);
    const microBatches = Math.max(1, Math.floor(n / this.options.batchSize));
    return { samples: microBatches * this.options.batchSize, microBatches };
  }

  private req<T extends Request['type']>(stage: number, body: { type: T } & Omit<Extract<Request, { type: T }>, 'run' | 'stage' | 'step' | 'microBatch' | 'type'>, microBatch = -1): Request {
    return { run: this.run, stage, step: this.stepCount, microBatch, ...body } as unknown as Request;
  }

  private targetsOf(x: Tensor, y: Int32Array): Targets {
    return this.spec.autoencoder ? x : y;
  }

  /** One optimizer step on one minibatch; returns the summed loss. */
  async step(x: Tensor, y: Int32Array): Promise<number> {
    await this.open();
    const parts = splitMicroBatches(x, y, this.options.microBatches);
    const lr = this.lrAt ? this.lrAt(this.stepCount, this.stepsPerEpoch) : this.optimizerSpec.lr;
    let gradScale = 1 / x.shape[0]!;
    // Without clipping no global quantity is needed first: each stage steps as soon as its
    // backwards are done, in the same request.
    const optimize = this.options.clipNorm === undefined ? { optimizer: this.optimizerSpec, lr, gradScale } : undefined;
    const { loss } = await this.pipelineStep(parts, this.schedulePlan, optimize);
    if (!optimize) {
      // The global norm needs every stage's share; each stage then scales its own gradients.
      const shares = await Promise.all(this.handles.map(async (h, s) => expectReply(await h.request(this.req(s, { type: 'gradSquares' })), 'value', h.name).value));
      gradScale *= clipScale(shares.reduce((a, b) => a + b, 0) * gradScale * gradScale, this.options.clipNorm!);
      await Promise.all(this.handles.map(async (h, s) => {
        const reply = await h.request(this.req(s, { type: 'optimizerStep', optimizer: this.optimizerSpec, lr, gradScale }));
        expectReply(reply, 'ok', h.name);
      }));
    }
    this.stepCount++;
    return loss;
  }

  /**
   * One pipelined pass of the schedule over the micro-batches, on every stage at once
   * (optionally with the optimizer step folded in). Returns the summed loss of all stages,
   * auxiliary terms included, in micro-batch order.
   */
  private async pipelineStep(parts: MicroBatch[], schedule: Schedule, optimize?: OptimizerStepArgs): Promise<{ loss: number }> {
    const K = this.stages;
    const reports = await Promise.all(this.handles.map(async (h, s) => expectReply(await h.request(this.req(s, {
      type: 'runStep',
      actions: schedule[s]!.map(formatAction),
      inputs: s === 0 ? parts.map((p) => p.x) : undefined,
      targets: s === K - 1 ? parts.map((p) => this.targetsOf(p.x, p.y)) : undefined,
      optimize,
    })), 'stepDone', h.name).report));
    this.account(reports);
    let loss = 0;
    for (let m = 0; m < parts.length; m++) for (const r of reports) loss += r.losses[m] ?? 0;
    return { loss };
  }

  private account(reports: StepReport[]): void {
    const wall = Math.max(...reports.map((r) => r.wallMs));
    for (const r of reports) this.busyMs += r.busyMs;
    this.stageWallMs += wall * reports.length;
  }

  /** Mean loss and accuracy (for classifiers) over every sample of a dataset, without a tape. */
  async evaluate(ds: Dataset = this.data.test): Promise<{ loss: number; accuracy: number | null }> {
    await this.open();
    const lossFn = getLoss(this.spec.loss ?? 'softmaxCrossEntropy');
    const classify = !this.spec.autoencoder && (this.spec.loss ?? 'softmaxCrossEntropy') === 'softmaxCrossEntropy';
    let total = 0;
    let correct = 0;
    for (const { x, y } of evalBatches(ds, this.options.evalBatchSize)) {
      let h = x;
      for (const [s, handle] of this.handles.entries()) {
        const r = expectReply(await handle.request(this.req(s, { type: 'evaluate', x: h })), 'activations', handle.name);
        h = r.y;
        total += r.loss ?? 0; // auxiliary terms, e.g. a VAE's KL: the test loss is then the negative ELBO
      }
      total += noGrad(() => lossFn.compute(h, this.targetsOf(x, y), 'sum')).item();
      if (classify) {
        const c = h.shape[1]!;
        for (let i = 0; i < y.length; i++) {
          let best = 0;
          for (let j = 1; j < c; j++) if (h.data[i * c + j]! > h.data[i * c + best]!) best = j;
          if (best === y[i]) correct++;
        }
      }
    }
    return { loss: total / ds.size, accuracy: classify ? correct / ds.size : null };
  }

  /** Every parameter, by name, in the model's fixed order. */
  async parameters(): Promise<NamedTensors> {
    await this.open();
    const out: NamedTensors = {};
    for (const [s, h] of this.handles.entries()) {
      Object.assign(out, expectReply(await h.request(this.req(s, { type: 'getParams' })), 'tensors', h.name).tensors);
    }
    return out;
  }

  /** SHA-256 over every parameter (name, shape, raw bytes) in the fixed order: equal only for bit-identical weights. */
  async weightsSha256(): Promise<string> {
    const hash = createHash('sha256');
    for (const [name, t] of Object.entries(await this.parameters())) {
      hash.update(`${name}:${t.shape.join('x')}:${t.dtype};`);
      hash.update(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    }
    return hash.digest('hex');
  }

  /** Trains for the configured epochs and returns the summary (the `--json` object). */
  async train(): Promise<TrainSummary> {
    await this.open();
    if (this.fullBatch) return this.trainFullBatch(this.fullBatch);
    const o = this.options;
    const batcher = new Batcher(this.data.train, { batchSize: o.batchSize, seed: o.seed });
    let last: EpochReport | null = null;
    let trainedSamples = 0;
    let trainSeconds = 0;
    if (o.resume) await this.loadCheckpoint(o.resume);
    for (let e = this.epochsDone; e < o.epochs; e++) {
      const t0 = performance.now();
      let lossSum = 0;
      let samples = 0;
      let b = 0;
      for (const { x, y } of batcher.epoch(e)) {
        const input = o.augment ? new Tensor(augmentBatch(x.data as Float32Array, this.data.train.inputShape, o.augment, augmentStream(o.seed, e, b)), x.shape) : x;
        b++;
        lossSum += await this.step(input, y);
        samples += y.length;
      }
      const seconds = (performance.now() - t0) / 1000;
      trainedSamples += samples;
      trainSeconds += seconds;
      const ev = await this.evaluate();
      last = {
        epoch: e + 1, trainLoss: lossSum / samples, testLoss: ev.loss, testAccuracy: ev.accuracy,
        samplesPerSecond: samples / seconds, droppedSamples: batcher.droppedPerEpoch, seconds,
      };
      this.epochsDone = e + 1;
      if (o.checkpoint) await this.saveCheckpoint(o.checkpoint);
      o.onEpoch?.(last);
    }
    if (!last) throw new OptionError(`nothing to train: the checkpoint has ${this.epochsDone} epochs done and epochs is ${o.epochs}`);
    return this.summarize(last, trainedSamples / trainSeconds, batcher.droppedPerEpoch);
  }

  private async summarize(last: EpochReport, samplesPerSecond: number, droppedPerEpoch: number, extra: Partial<TrainSummary> = {}): Promise<TrainSummary> {
    const o = this.options;
    const K = this.stages;
    const M = o.microBatches;
    return {
      epochs: o.epochs,
      trainLoss: last.trainLoss,
      testLoss: last.testLoss,
      testAccuracy: last.testAccuracy,
      samplesPerSecond,
      droppedSamples: droppedPerEpoch * o.epochs,
      droppedPerEpoch,
      weightsSha256: await this.weightsSha256(),
      placement: this.placementName,
      stages: K,
      partition: this.bounds.slice(1).map((b, i) => b - this.bounds[i]!),
      microBatches: M,
      schedule: o.schedule,
      bubbleFraction: this.stageWallMs > 0 ? Math.max(0, 1 - this.busyMs / this.stageWallMs) : 0,
      theoreticalBubbleFraction: (K - 1) / (M + K - 1),
      backend: backend().name,
      backendKernel: backend().name === 'native' ? nativeKernel() : null,
      optimizer: this.optimizerSpec.type,
      seed: o.seed,
      batchSize: o.batchSize,
      lr: this.optimizerSpec.lr,
      parameters: layerParameterCounts(this.spec).reduce((a, b) => a + b, 0),
      transform: this.transformSpec,
      ...extra,
    };
  }

  /**
   * Writes every stage's state (parameters, buffers, optimizer slots) merged by name, so the
   * checkpoint does not depend on the placement or the stage count it was written from.
   */
  async saveCheckpoint(path: string): Promise<void> {
    await this.open();
    const merged: StageState = { params: {}, buffers: {}, optimizer: null, lastStep: -1 };
    for (const [s, h] of this.handles.entries()) {
      const st = expectReply(await h.request(this.req(s, { type: 'getState' })), 'state', h.name).state;
      Object.assign(merged.params, st.params);
      Object.assign(merged.buffers, st.buffers);
      merged.lastStep = Math.max(merged.lastStep, st.lastStep);
      if (st.optimizer) {
        merged.optimizer ??= { type: st.optimizer.type, t: st.optimizer.t, slots: {} };
        Object.assign(merged.optimizer.slots, st.optimizer.slots);
      }
    }
    const cp: Checkpoint = { format: 'chainrule-checkpoint', version: 1, model: this.spec, seed: this.options.seed, optimizer: this.optimizerSpec, epochsDone: this.epochsDone, stepCount: this.stepCount, state: merged };
    // Write then rename: a crash mid-write never leaves a torn checkpoint in place.
    writeFileSync(`${path}.tmp`, encodeValue(cp));
    renameSync(`${path}.tmp`, path);
  }

  /** Restores a checkpoint into the stages (whatever placement and stage count wrote it). */
  async loadCheckpoint(path: string): Promise<void> {
    await this.open();
    let bytes: Uint8Array;
    try {
      bytes = readFileSync(path);
    } catch (e) {
      throw new OptionError(`--resume: cannot read checkpoint ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    const cp = decodeValue(bytes, { actor: `checkpoint ${path}` }) as Checkpoint;
    if (cp?.format !== 'chainrule-checkpoint' || cp.version !== 1) throw new OptionError(`${path} is not a chainrule checkpoint (version 1)`);
    if (JSON.stringify(cp.model) !== JSON.stringify(this.spec)) throw new OptionError(`${path} was written for another model; use the same --model`);
    if (cp.seed !== this.options.seed || cp.optimizer.type !== this.optimizerSpec.type) {
      throw new OptionError(`${path} was written with seed ${cp.seed} and optimizer ${cp.optimizer.type}; resume with the same (now seed ${this.options.seed}, ${this.optimizerSpec.type})`);
    }
    await Promise.all(this.handles.map(async (h, s) => {
      const own = this.layout.filter((l) => l.stage === s).map((l) => l.name);
      const pick = <T>(m: Record<string, T>) => Object.fromEntries(own.filter((n) => n in m).map((n) => [n, m[n]!]));
      const state: StageState = {
        params: pick(cp.state.params),
        buffers: cp.state.buffers,
        optimizer: cp.state.optimizer ? { type: cp.state.optimizer.type, t: cp.state.optimizer.t, slots: pick(cp.state.optimizer.slots) } : null,
        lastStep: cp.state.lastStep,
      };
      expectReply(await h.request(this.req(s, { type: 'setState', state })), 'ok', h.name);
    }));
    this.epochsDone = cp.epochsDone;
    this.stepCount = cp.stepCount;
  }

  /** Every parameter as one float64 vector, in the layout's fixed order. */
  private async flatParameters(): Promise<Float64Array> {
    const named = await this.parameters();
    const x = new Float64Array(this.layout.reduce((n, l) => n + l.size, 0));
    let off = 0;
    for (const l of this.layout) { x.set(named[l.name]!.data, off); off += l.size; }
    return x;
  }

  /** Writes a flat vector back into every stage's parameters. */
  private async setFlatParameters(x: Float64Array): Promise<void> {
    const perStage: NamedTensors[] = this.handles.map(() => ({}));
    let off = 0;
    for (const l of this.layout) {
      perStage[l.stage]![l.name] = new Tensor(Float32Array.from(x.subarray(off, off + l.size)), l.shape);
      off += l.size;
    }
    await Promise.all(this.handles.map(async (h, s) => expectReply(await h.request(this.req(s, { type: 'setParams', params: perStage[s]! })), 'ok', h.name)));
  }

  /**
   * Conjugate gradient, L-BFGS or Newton over the (full) training batch. Each loss and
   * gradient evaluation is one pipelined step over all micro-batches, wherever the
   * stages run; the minimizer sees one flat vector.
   */
  private async trainFullBatch(method: string): Promise<TrainSummary> {
    const o = this.options;
    const plan = this.fullBatchPlan()!;
    const order = new Batcher(this.data.train, { batchSize: plan.samples, seed: o.seed }).epoch(0).next().value!;
    const parts = splitMicroBatches(order.x, order.y, plan.microBatches);
    const schedule = getSchedule(o.schedule)(this.stages, plan.microBatches);
    validateSchedule(schedule, this.stages, plan.microBatches);
    const K = this.stages;
    let evalSeconds = 0;
    const objective: Objective = {
      size: this.layout.reduce((n, l) => n + l.size, 0),
      evaluate: async (x) => {
        const t0 = performance.now();
        await this.setFlatParameters(x);
        const { loss } = await this.pipelineStep(parts, schedule);
        const grads: NamedTensors = {};
        for (const [s, h] of this.handles.entries()) Object.assign(grads, expectReply(await h.request(this.req(s, { type: 'gradients' })), 'tensors', h.name).tensors);
        this.stepCount++;
        const grad = new Float64Array(objective.size);
        let off = 0;
        for (const l of this.layout) {
          const g = grads[l.name]!.data;
          for (let i = 0; i < l.size; i++) grad[off + i] = g[i]! / plan.samples;
          off += l.size;
        }
        evalSeconds += (performance.now() - t0) / 1000;
        return { loss: loss / plan.samples, grad };
      },
    };
    const per = o.iterationsPerEpoch ?? 10;
    let last: EpochReport | null = null;
    let epochStart = performance.now();
    const report = async (iteration: number, loss: number, x: Float64Array) => {
      await this.setFlatParameters(x);
      const ev = await this.evaluate();
      const seconds = (performance.now() - epochStart) / 1000;
      last = { epoch: Math.ceil(iteration / per), trainLoss: loss, testLoss: ev.loss, testAccuracy: ev.accuracy, samplesPerSecond: (plan.samples * this.stepCount) / Math.max(evalSeconds, 1e-9), droppedSamples: this.data.train.size - plan.samples, seconds };
      o.onEpoch?.(last);
      epochStart = performance.now();
    };
    const result = await fullBatchMethods[method]!(objective, await this.flatParameters(), {
      maxIter: o.epochs * per,
      tol: 1e-7,
      onIteration: async (info) => {
        if (info.iteration % per === 0) await report(info.iteration, info.loss, info.x);
      },
    });
    await this.setFlatParameters(result.x);
    // The last partial epoch (or a run that converged early) still gets its report.
    if (last === null || result.iterations % per !== 0) await report(Math.max(1, result.iterations), result.loss, result.x);
    return this.summarize(last!, (plan.samples * result.gradEvals) / Math.max(evalSeconds, 1e-9), this.data.train.size - plan.samples, {
      epochs: last!.epoch, gradEvals: result.gradEvals, lossEvals: result.lossEvals, microBatches: plan.microBatches, theoreticalBubbleFraction: (K - 1) / (plan.microBatches + K - 1),
    });
  }


  async close(): Promise<void> {
    const t = this.transport;
    this.transport = null;
    if (t) await t.close();
  }
}
