/**
 * The Coordinator: the programmatic API behind `chainrule train`. It validates the options,
 * starts R replicas × K stages of actors wherever they are placed, feeds each replica its
 * shard of every minibatch, drives the pipeline schedule, steps the optimizer, evaluates,
 * checkpoints and summarizes.
 *
 * @example
 * import { Coordinator } from 'chainrule';
 * const c = new Coordinator({ model: 'mlp', dataset: 'mnist', epochs: 3, placement: 'threads', replicas: 2 });
 * const summary = await c.train();   // { testAccuracy, weightsSha256, ... }
 * await c.close();
 */
import { randomBytes } from 'node:crypto';
import { Tensor } from '../src/tensor/tensor.js';
import { nativeKernel } from '../src/tensor/native/index.js';
import { claimBackend } from '../src/tensor/select.js';
import { Batcher, fitTransform, applyTransform, augmentBatch, augmentStream, validateAugmentOptions, type AugmentOptions, type Dataset, type Targets, type TransformSpec } from '../src/data/index.js';
import { layerParameterCounts, type ModelSpec } from '../src/nn/index.js';
import { createOptimizer, createLrSchedule, fullBatchMethods, type LrSchedule, type OptimizerSpec } from '../src/optim/index.js';
import type { NamedTensors, Schedule } from '../src/wire/index.js';
import { lookup } from '../src/errors.js';
import { getSchedule, validateSchedule } from './schedules/index.js';
import { balancedPartition, explicitPartition } from './partition.js';
import { resolveDataset, resolveModel, type DataSplit } from './inputs.js';
import { createTransport, type Transport } from './transports/index.js';
import { OptionError, resolveOptions, optimizerSpecOf, lrScheduleOf, type CoordinatorOptions, type ResolvedOptions } from './options.js';
import { StageGroup } from './stage-group.js';
import { evaluate, type Evaluation } from './evaluate.js';
import { checkModelFitsData } from './fit.js';
import { shardMinibatch, trainStep } from './pipeline.js';
import { fullBatchPlan, trainFullBatch } from './fullbatch.js';
import { readCheckpoint, writeCheckpoint } from './checkpoint.js';
import { BubbleMeter, testMetrics, theoreticalBubble, type EpochReport, type TrainSummary } from './summary.js';
import { loadModel, saveModel } from './saved-model.js';

export class Coordinator {
  readonly options: ResolvedOptions;
  readonly data: DataSplit;
  readonly spec: ModelSpec;
  readonly transformSpec: TransformSpec | undefined;
  readonly optimizerSpec: OptimizerSpec;
  /** Set for full-batch methods: the name of the method. */
  readonly fullBatch: string | null;
  readonly bounds: number[];
  readonly schedulePlan: Schedule;
  /** Unguessable: a node tells runs apart by it. */
  readonly run = `run-${randomBytes(16).toString('hex')}`;
  private readonly augment: Required<AugmentOptions> | null;
  private readonly lrAt: LrSchedule | null;
  private readonly backendClaim: ReturnType<typeof claimBackend>;
  private readonly group: StageGroup;
  /** Busy and wall time of every actor so far: the measured bubble. */
  readonly meter = new BubbleMeter();
  private transport: Transport | null = null;
  private epochsDone = 0;

  constructor(opts: CoordinatorOptions = {}) {
    const o = resolveOptions(opts);
    this.options = o;
    const augment = { shift: o.augmentShift, rotate: o.augmentRotate, noise: o.noise };
    this.augment = Object.values(augment).some((v) => v !== undefined) ? validateAugmentOptions(Object.fromEntries(Object.entries(augment).filter(([, v]) => v !== undefined))) : null;
    let data = typeof o.dataset === 'string' ? resolveDataset(o.dataset, { labelColumn: o.labelColumn, targetColumns: o.targetColumns, seed: o.seed }) : o.dataset;
    if (o.transform !== 'none') {
      // Statistics from the training split only; the test split reuses them.
      this.transformSpec = fitTransform(o.transform, data.train);
      data = { train: applyTransform(this.transformSpec, data.train), test: applyTransform(this.transformSpec, data.test) };
    }
    this.data = data;
    if (o.batchSize > data.train.size) throw new OptionError(`options.batchSize ${o.batchSize} is larger than the training set (${data.train.size} samples)`);
    this.spec = resolveModel(o.model, data);
    checkModelFitsData(this.spec, [data.train, data.test], typeof o.model === 'string' ? o.model : 'model spec');
    this.optimizerSpec = optimizerSpecOf(o);
    this.fullBatch = lookup(fullBatchMethods, this.optimizerSpec.type) ? this.optimizerSpec.type : null;
    if (!this.fullBatch) createOptimizer(this.optimizerSpec); // validates the hyperparameters now
    if (this.fullBatch && (o.checkpoint || o.resume)) throw new OptionError(`options.${o.checkpoint ? 'checkpoint' : 'resume'} is not supported with the full-batch optimizer ${this.fullBatch}`);
    const schedule = lrScheduleOf(o);
    this.lrAt = schedule ? createLrSchedule(schedule(o.epochs * this.stepsPerEpoch)) : null;
    const counts = layerParameterCounts(this.spec);
    this.bounds = o.partition ? explicitPartition(o.partition, counts.length) : balancedPartition(counts, o.stages);
    this.schedulePlan = getSchedule(o.schedule)(this.stages, o.microBatches);
    validateSchedule(this.schedulePlan, this.stages, o.microBatches);
    this.group = new StageGroup(this.run, o.replicas, this.stages);
    // Last: nothing above may fail while the claim is held.
    this.backendClaim = claimBackend(o.backend, 'new Coordinator');
  }

  get stages(): number { return this.bounds.length - 1; }
  get replicas(): number { return this.options.replicas; }
  get stepsPerEpoch(): number { return Math.floor(this.data.train.size / this.options.batchSize); }
  get placementName(): string { return typeof this.options.placement === 'string' ? this.options.placement : this.options.placement.kind; }
  get backendName(): string { return this.backendClaim.backend.name; }

  /** Starts the actors and configures them (idempotent). */
  async open(): Promise<void> {
    if (this.transport) return;
    const o = this.options;
    this.transport = typeof o.placement === 'string' ? createTransport(o.placement, { nodes: o.nodes }) : o.placement;
    const capacity = this.fullBatch ? fullBatchPlan(this.data.train, o.batchSize, o.replicas, o.fullBatchSize).microBatches : o.microBatches;
    await this.group.open(this.transport, (k) => ({
      model: this.spec, start: this.bounds[k]!, end: this.bounds[k + 1]!, seed: o.seed, capacity, replicas: o.replicas, backend: this.backendName,
    }), this.stageParameterCounts());
    if (o.init) await this.initFrom(o.init);
  }

  /** Parameters per stage, from the spec and the partition. */
  private stageParameterCounts(): number[] {
    const counts = layerParameterCounts(this.spec);
    return this.bounds.slice(1).map((end, k) => counts.slice(this.bounds[k], end).reduce((a, b) => a + b, 0));
  }

  /** Starts from a saved model's weights (and buffers): fine-tuning. */
  private async initFrom(dir: string): Promise<void> {
    const saved = loadModel(dir);
    if (JSON.stringify(saved.spec) !== JSON.stringify(this.spec)) {
      throw new OptionError(`options.init: the model saved in ${dir} has another spec than this run's model`, 'train the same --model, or save the model you want to start from');
    }
    await this.group.setState({ params: saved.parameters(), buffers: saved.buffers(), optimizer: null, lastStep: -1 });
  }

  /**
   * Saves the model as it is now (spec, weights as safetensors, buffers, the input
   * transform) for `loadModel`, `chainrule predict` and `--init`.
   * @example await coordinator.save('models/mlp'); loadModel('models/mlp').predict(x)
   */
  async save(dir: string, metadata: Record<string, unknown> = {}): Promise<void> {
    await this.open();
    const state = await this.group.state();
    saveModel(dir, {
      spec: this.spec, params: state.params, buffers: state.buffers, transform: this.transformSpec,
      metadata: { seed: this.options.seed, optimizer: this.optimizerSpec.type, steps: this.group.step, epochs: this.epochsDone, ...metadata },
    });
  }

  /** One optimizer step on one minibatch (`y`: labels, or float targets [n, ...]); returns the summed loss. */
  async step(x: Tensor, y: Targets): Promise<number> {
    await this.open();
    const o = this.options;
    const lr = this.lrAt ? this.lrAt(this.group.step, this.stepsPerEpoch) : this.optimizerSpec.lr;
    const parts = shardMinibatch(x, y, o.replicas, o.microBatches);
    const loss = await trainStep(this.group, this.spec, parts, this.schedulePlan, this.meter, { optimizer: this.optimizerSpec, lr, gradScale: 1 / x.shape[0]!, clipNorm: o.clipNorm });
    this.group.step++;
    return loss;
  }

  /** Mean loss and the metrics that fit (accuracy, MSE/MAE, per-label accuracy) over every sample of a dataset, without a tape. */
  async evaluate(ds: Dataset = this.data.test): Promise<Evaluation> {
    await this.open();
    return evaluate(this.group, this.spec, ds, this.options.evalBatchSize);
  }

  /** The model's output for inputs `x` (already transformed like the training data), through every stage, without a tape. */
  async predict(x: Tensor): Promise<Tensor> {
    await this.open();
    let h = x;
    for (let k = 0; k < this.stages; k++) h = (await this.group.ask(k, { type: 'evaluate', x: h }, 'activations')).y;
    return h;
  }

  /** Every parameter, by name, in the model's fixed order. */
  async parameters(): Promise<NamedTensors> {
    await this.open();
    return this.group.parameters();
  }

  /** SHA-256 over every parameter (name, shape, raw bytes) in the fixed order: equal only for bit-identical weights. */
  async weightsSha256(): Promise<string> {
    await this.open();
    return this.group.weightsSha256();
  }

  /** Trains for the configured epochs and returns the summary (the `--json` object). */
  async train(): Promise<TrainSummary> {
    await this.open();
    const o = this.options;
    if (this.fullBatch) {
      const plan = fullBatchPlan(this.data.train, o.batchSize, o.replicas, o.fullBatchSize);
      const schedule = getSchedule(o.schedule)(this.stages, plan.microBatches);
      validateSchedule(schedule, this.stages, plan.microBatches);
      const r = await trainFullBatch({
        method: this.fullBatch, group: this.group, spec: this.spec, train: this.data.train, seed: o.seed, epochs: o.epochs,
        iterationsPerEpoch: o.iterationsPerEpoch, plan, schedule, meter: this.meter, evaluate: () => this.evaluate(), onEpoch: o.onEpoch,
      });
      const summary = await this.summarize(r.last, r.samplesPerSecond, this.data.train.size - plan.samples, {
        epochs: r.last.epoch, gradEvals: r.gradEvals, lossEvals: r.lossEvals, microBatches: plan.microBatches, theoreticalBubbleFraction: theoreticalBubble(this.stages, plan.microBatches),
      });
      if (o.save) await this.save(o.save, { testLoss: summary.testLoss, testAccuracy: summary.testAccuracy, weightsSha256: summary.weightsSha256 });
      return summary;
    }
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
        const input = this.augment ? new Tensor(augmentBatch(x.data as Float32Array, this.data.train.inputShape, this.augment, augmentStream(o.seed, e, b)), x.shape) : x;
        b++;
        const loss = await this.step(input, y);
        lossSum += loss;
        const n = x.shape[0]!;
        samples += n;
        o.onStep?.({ step: this.group.step, epoch: e + 1, loss: loss / n, samplesPerSecond: samples / ((performance.now() - t0) / 1000) });
      }
      const seconds = (performance.now() - t0) / 1000;
      trainedSamples += samples;
      trainSeconds += seconds;
      const ev = await this.evaluate();
      last = { epoch: e + 1, trainLoss: lossSum / samples, testLoss: ev.loss, testAccuracy: ev.accuracy, ...testMetrics(ev), samplesPerSecond: samples / seconds, droppedSamples: batcher.droppedPerEpoch, seconds };
      this.epochsDone = e + 1;
      if (o.checkpoint) await this.saveCheckpoint(o.checkpoint);
      o.onEpoch?.(last);
    }
    if (!last) throw new OptionError(`nothing to train: the checkpoint has ${this.epochsDone} epochs done and epochs is ${o.epochs}`);
    const summary = await this.summarize(last, trainedSamples / trainSeconds, batcher.droppedPerEpoch);
    if (o.save) await this.save(o.save, { testLoss: summary.testLoss, testAccuracy: summary.testAccuracy, weightsSha256: summary.weightsSha256 });
    return summary;
  }

  private async summarize(last: EpochReport, samplesPerSecond: number, droppedPerEpoch: number, extra: Partial<TrainSummary> = {}): Promise<TrainSummary> {
    const o = this.options;
    return {
      epochs: o.epochs, trainLoss: last.trainLoss, testLoss: last.testLoss, testAccuracy: last.testAccuracy,
      testMse: last.testMse, testMae: last.testMae, testLabelAccuracy: last.testLabelAccuracy, samplesPerSecond,
      droppedSamples: droppedPerEpoch * o.epochs, droppedPerEpoch, weightsSha256: await this.group.weightsSha256(),
      placement: this.placementName, replicas: o.replicas, stages: this.stages, partition: this.bounds.slice(1).map((b, i) => b - this.bounds[i]!),
      microBatches: o.microBatches, schedule: o.schedule, bubbleFraction: this.meter.fraction, theoreticalBubbleFraction: theoreticalBubble(this.stages, o.microBatches),
      backend: this.backendName, backendKernel: this.backendName === 'native' ? nativeKernel() : null,
      optimizer: this.optimizerSpec.type, seed: o.seed, batchSize: o.batchSize, lr: this.optimizerSpec.lr,
      parameters: layerParameterCounts(this.spec).reduce((a, b) => a + b, 0), transform: this.transformSpec, ...extra,
    };
  }

  /** Writes every stage's state merged by name (independent of placement, stage and replica count). */
  async saveCheckpoint(path: string): Promise<void> {
    await this.open();
    writeCheckpoint(path, { model: this.spec, seed: this.options.seed, optimizer: this.optimizerSpec, epochsDone: this.epochsDone, stepCount: this.group.step, state: await this.group.state() });
  }

  /** Restores a checkpoint into the stages (whatever placement, stage or replica count wrote it). */
  async loadCheckpoint(path: string): Promise<void> {
    await this.open();
    const cp = readCheckpoint(path, { model: this.spec, seed: this.options.seed, optimizer: this.optimizerSpec.type });
    await this.group.setState(cp.state);
    this.epochsDone = cp.epochsDone;
    this.group.step = cp.stepCount;
  }

  async close(): Promise<void> {
    const t = this.transport;
    this.transport = null;
    try {
      if (t) await t.close();
    } finally {
      this.backendClaim.release();
    }
  }
}

export type { CoordinatorOptions } from './options.js';
