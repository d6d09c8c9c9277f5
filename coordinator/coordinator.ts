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
import { readFileSync } from 'node:fs';
import { Tensor } from '../src/tensor/tensor.js';
import { backend } from '../src/tensor/backend.js';
import { selectBackend } from '../src/tensor/select.js';
import { Batcher, evalBatches, splitMicroBatches, type Dataset } from '../src/data/index.js';
import { builtinModel, layerParameterCounts, validateModelSpec, getLoss, SpecError, type ModelSpec } from '../src/nn/index.js';
import { noGrad } from '../src/autograd/index.js';
import { formatAction, expectReply, type NamedTensors, type Request, type Schedule, type StepReport, type Targets } from '../src/wire/index.js';
import { createOptimizer, type OptimizerSpec } from '../src/optim/index.js';
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
  /** Kernel backend ('js' | 'wasm'); default: the fastest available. */
  backend?: string;
  evalBatchSize?: number;
  /** Called after every epoch. */
  onEpoch?: (r: EpochReport) => void;
}

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
  optimizer: string;
  seed: number;
  batchSize: number;
  lr: number;
  parameters: number;
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

export class Coordinator {
  readonly options: Required<Omit<CoordinatorOptions, 'onEpoch' | 'partition' | 'nodes' | 'labelColumn' | 'backend'>> & CoordinatorOptions;
  readonly data: DataSplit;
  readonly spec: ModelSpec;
  readonly optimizerSpec: OptimizerSpec;
  readonly bounds: number[];
  readonly schedulePlan: Schedule;
  readonly run = `run-${process.pid}-${Date.now().toString(36)}-${runCounter++}`;
  private transport: Transport | null = null;
  private handles: StageHandle[] = [];
  private stepCount = 0;
  private busyMs = 0;
  private stageWallMs = 0;

  constructor(opts: CoordinatorOptions = {}) {
    const o = {
      model: 'mlp', dataset: 'mnist', epochs: 10, batchSize: 64, lr: 0.05, seed: 42, optimizer: 'sgd',
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
    this.data = typeof o.dataset === 'string' ? resolveDataset(o.dataset, { labelColumn: o.labelColumn, seed: o.seed }) : o.dataset;
    if (o.batchSize > this.data.train.size) throw new OptionError(`batch size ${o.batchSize} is larger than the training set (${this.data.train.size} samples)`);
    this.spec = loadModelSpec(o.model, this.data);
    this.optimizerSpec = typeof o.optimizer === 'string' ? { type: o.optimizer, lr: o.lr } : { ...o.optimizer, lr: o.optimizer.lr ?? o.lr };
    createOptimizer(this.optimizerSpec); // validates the name and hyperparameters now
    const counts = layerParameterCounts(this.spec);
    this.bounds = o.partition ? explicitPartition(o.partition, counts.length) : balancedPartition(counts, o.stages);
    const stages = this.bounds.length - 1;
    if (stages !== o.stages && !opts.partition) throw new OptionError(`stages ${o.stages} does not match the partition`);
    this.options.stages = stages;
    this.schedulePlan = getSchedule(o.schedule)(stages, o.microBatches);
    validateSchedule(this.schedulePlan, stages, o.microBatches);
  }

  get stages(): number { return this.bounds.length - 1; }
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
        config: { model: this.spec, start: this.bounds[s]!, end: this.bounds[s + 1]!, seed: o.seed, stages: this.stages, capacity: o.microBatches, backend: backend().name },
      }));
      expectReply(reply, 'configured', h.name);
    }));
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
    const M = this.options.microBatches;
    const parts = splitMicroBatches(x, y, M);
    const K = this.stages;
    const replies = await Promise.all(this.handles.map(async (h, s) => {
      const reply = await h.request(this.req(s, {
        type: 'runStep',
        actions: this.schedulePlan[s]!.map(formatAction),
        inputs: s === 0 ? parts.map((p) => p.x) : undefined,
        targets: s === K - 1 ? parts.map((p) => this.targetsOf(p.x, p.y)) : undefined,
      }));
      return expectReply(reply, 'stepDone', h.name).report;
    }));
    this.account(replies);
    await Promise.all(this.handles.map(async (h, s) => {
      const reply = await h.request(this.req(s, { type: 'optimizerStep', optimizer: this.optimizerSpec, lr: this.optimizerSpec.lr, gradScale: 1 / x.shape[0]! }));
      expectReply(reply, 'ok', h.name);
    }));
    this.stepCount++;
    // Losses of all stages (auxiliary terms included), summed in micro-batch order.
    let loss = 0;
    for (let m = 0; m < M; m++) for (const r of replies) loss += r.losses[m] ?? 0;
    return loss;
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
        h = expectReply(await handle.request(this.req(s, { type: 'evaluate', x: h })), 'activations', handle.name).y;
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
    const o = this.options;
    const batcher = new Batcher(this.data.train, { batchSize: o.batchSize, seed: o.seed });
    let last: EpochReport | null = null;
    let trainedSamples = 0;
    let trainSeconds = 0;
    for (let e = 0; e < o.epochs; e++) {
      const t0 = performance.now();
      let lossSum = 0;
      let samples = 0;
      for (const { x, y } of batcher.epoch(e)) {
        lossSum += await this.step(x, y);
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
      o.onEpoch?.(last);
    }
    const K = this.stages;
    const M = o.microBatches;
    return {
      epochs: o.epochs,
      trainLoss: last!.trainLoss,
      testLoss: last!.testLoss,
      testAccuracy: last!.testAccuracy,
      samplesPerSecond: trainedSamples / trainSeconds,
      droppedSamples: batcher.droppedPerEpoch * o.epochs,
      droppedPerEpoch: batcher.droppedPerEpoch,
      weightsSha256: await this.weightsSha256(),
      placement: this.placementName,
      stages: K,
      partition: this.bounds.slice(1).map((b, i) => b - this.bounds[i]!),
      microBatches: M,
      schedule: o.schedule,
      bubbleFraction: this.stageWallMs > 0 ? Math.max(0, 1 - this.busyMs / this.stageWallMs) : 0,
      theoreticalBubbleFraction: (K - 1) / (M + K - 1),
      backend: backend().name,
      optimizer: this.optimizerSpec.type,
      seed: o.seed,
      batchSize: o.batchSize,
      lr: this.optimizerSpec.lr,
      parameters: layerParameterCounts(this.spec).reduce((a, b) => a + b, 0),
    };
  }

  async close(): Promise<void> {
    const t = this.transport;
    this.transport = null;
    if (t) await t.close();
  }
}
