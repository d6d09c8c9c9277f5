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
import { startNode, type RunningNode } from '../node/server.js';
import { Tensor } from '../src/tensor/tensor.js';
import { nativeKernel } from '../src/tensor/native/index.js';
import { claimBackend } from '../src/tensor/select.js';
import { Batcher, type MicroBatch, fitTransform, applyTransform, augmentBatch, augmentStream, validateAugmentOptions, type AugmentOptions, type Dataset, type Targets, type TransformSpec } from '../src/data/index.js';
import { layerParameterCounts, type ModelSpec } from '../src/nn/index.js';
import { createOptimizer, createLrSchedule, fullBatchMethods, type LrSchedule, type LrScheduleSpec, type OptimizerSpec } from '../src/optim/index.js';
import { formatAction, type NamedTensors, type Schedule, type StageState } from '../src/wire/index.js';
import { ChainruleError, lookup } from '../src/errors.js';
import { getSchedule, validateSchedule } from './schedules/index.js';
import { balancedPartition, explicitPartition } from './partition.js';
import { resolveDataset, resolveModel, type DataSplit } from './inputs.js';
import { createTransport, type Transport } from './transports/index.js';
import { OptionError, resolveOptions, optimizerSpecOf, lrScheduleOf, type CoordinatorOptions, type ResolvedOptions } from './options.js';
import { StageGroup } from './stage-group.js';
import { evaluate, isClassifier, type Evaluation } from './evaluate.js';
import { checkModelFitsData } from './fit.js';
import { shardMinibatch, trainStep, type TraceAsk } from './pipeline.js';
import { fullBatchPlan, trainFullBatch } from './fullbatch.js';
import { checkCheckpointTarget, checkStateFits, datasetSha256, readCheckpoint, writeCheckpoint, type RunIdentity } from './checkpoint.js';
import { BubbleMeter, testMetrics, theoreticalBubble, type EpochReport, type ResumedFrom, type StepInfo, type TrainSummary } from './summary.js';
import { chainruleVersion, loadModel, saveModel } from './saved-model.js';
import { Recovery } from './recovery.js';
import { RunLog, jsonOptions } from './run-log.js';
import { StepTracer } from './trace.js';

/** A position in training: epoch, the next minibatch in it, and that epoch's summed loss and samples so far. */
interface Cursor { epoch: number; batch: number; lossSum: number; samples: number }

const newRunId = () => `run-${randomBytes(16).toString('hex')}`;

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
  private readonly augment: Required<AugmentOptions> | null;
  private readonly lrSchedule: LrScheduleSpec | null;
  private readonly lrAt: LrSchedule | null;
  private readonly backendClaim: ReturnType<typeof claimBackend>;
  private group: StageGroup;
  private readonly recovery: Recovery | null;
  /** The gRPC nodes in use: a lost one is replaced here by a spare or by a node in this process. */
  private nodes: string[] | undefined;
  private readonly spares: string[];
  private readonly ownNodes: RunningNode[] = [];
  /** Busy and wall time of every actor so far: the measured bubble. */
  readonly meter = new BubbleMeter();
  private transport: Transport | null = null;
  /** Where training goes on: epoch, next minibatch in it, and that epoch's loss and samples so far. */
  private cursor: Cursor = { epoch: 0, batch: 0, lossSum: 0, samples: 0 };
  /** The cursor after each of the last steps, by steps done: a recovery's commit lags by up to commitEvery steps. */
  private readonly cursors = new Map<number, Cursor>();
  private readonly commitEvery: number;
  private trainSha256: string | null = null;
  /** The checkpoint this run resumed from, once loaded. */
  resumedFrom: ResumedFrom | null = null;

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
    this.lrSchedule = schedule ? schedule(o.epochs * this.stepsPerEpoch) : null;
    this.lrAt = this.lrSchedule ? createLrSchedule(this.lrSchedule) : null;
    const counts = layerParameterCounts(this.spec);
    this.bounds = o.partition ? explicitPartition(o.partition, counts.length) : balancedPartition(counts, o.stages);
    this.schedulePlan = getSchedule(o.schedule)(this.stages, o.microBatches);
    validateSchedule(this.schedulePlan, this.stages, o.microBatches);
    this.group = new StageGroup(newRunId(), o.replicas, this.stages);
    this.nodes = o.nodes ? [...o.nodes] : undefined;
    this.spares = [...(o.spares ?? [])];
    const commitEvery = o.commitEvery ?? (o.placement === 'local' ? 0 : 1);
    this.commitEvery = commitEvery;
    if (o.spares && o.placement !== 'grpc') throw new OptionError(`options.spares is only used with options.placement grpc (got ${this.placementName})`);
    this.recovery = commitEvery > 0 && !this.fullBatch ? new Recovery(commitEvery, {
      reopen: (lost, commit) => this.reopen(lost, commit),
      restore: async (state, step) => { await this.group.setState(state); this.group.step = step; },
      replay: async (parts) => { await this.runParts(parts); },
    }) : null;
    // Last: nothing above may fail while the claim is held.
    this.backendClaim = claimBackend(o.backend, 'new Coordinator');
  }

  get stages(): number { return this.bounds.length - 1; }
  get replicas(): number { return this.options.replicas; }
  get stepsPerEpoch(): number { return Math.floor(this.data.train.size / this.options.batchSize); }
  get placementName(): string { return typeof this.options.placement === 'string' ? this.options.placement : this.options.placement.kind; }
  get backendName(): string { return this.backendClaim.backend.name; }
  /** Unguessable (a node tells runs apart by it); a new one after a recovery. */
  get run(): string { return this.group.run; }

  /** Starts the actors and configures them (idempotent). */
  async open(): Promise<void> {
    if (this.transport) return;
    const o = this.options;
    this.transport = typeof o.placement === 'string' ? createTransport(o.placement, { nodes: this.nodes, tls: o.tls, tokenFile: o.tokenFile }) : o.placement;
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
      metadata: { seed: this.options.seed, optimizer: this.optimizerSpec.type, steps: this.group.step, epochs: this.cursor.epoch, ...metadata },
    });
  }

  /** One optimizer step on one minibatch (`y`: labels, or float targets [n, ...]); returns the summed loss. */
  async step(x: Tensor, y: Targets): Promise<number> {
    return (await this.stepWith(x, y)).loss;
  }

  private async stepWith(x: Tensor, y: Targets, trace?: TraceAsk): Promise<{ loss: number; lr: number; gradNorm?: number }> {
    await this.open();
    const parts = shardMinibatch(x, y, this.options.replicas, this.options.microBatches);
    const run = () => this.runParts(parts, trace);
    const loss = this.recovery ? await this.recovery.run(this.group.step, parts, () => this.transport!, run, () => this.group.state()) : await run();
    return { loss, ...this.lastStep };
  }

  /** The learning rate and (with clipping) the gradient norm of the last step runParts ran. */
  private lastStep: { lr: number; gradNorm?: number } = { lr: 0 };

  private async runParts(parts: MicroBatch[][], trace?: TraceAsk): Promise<number> {
    const o = this.options;
    const lr = this.lrAt ? this.lrAt(this.group.step, this.stepsPerEpoch) : this.optimizerSpec.lr;
    const samples = parts.reduce((n, r) => r.reduce((m, p) => m + p.x.shape[0]!, n), 0);
    const r = await trainStep(this.group, this.spec, parts, this.schedulePlan, this.meter, { optimizer: this.optimizerSpec, lr, gradScale: 1 / samples, clipNorm: o.clipNorm, trace });
    this.group.step++;
    this.lastStep = { lr, ...(r.gradNorm === undefined ? {} : { gradNorm: r.gradNorm }) };
    return r.loss;
  }

  /**
   * The test split's (or `ds`'s) confusion matrix, counts[true][predicted]; null for a
   * model that is not a classifier.
   * @example (await c.confusionMatrix())![3]![5]   // test samples of class 3 predicted as 5
   */
  async confusionMatrix(ds: Dataset = this.data.test): Promise<number[][] | null> {
    await this.open();
    if (!isClassifier(this.spec)) return null;
    const counts: number[][] = [];
    await evaluate(this.group, this.spec, ds, this.options.evalBatchSize, counts);
    return counts;
  }

  /** After the loss of a host: the run reopened (a new run id) with the lost gRPC nodes replaced. */
  private async reopen(lost: string[], commit: { step: number; state: StageState }): Promise<string> {
    const old = this.transport;
    this.transport = null;
    await old?.close().catch(() => {});
    let replacement = this.placementName;
    if (this.nodes) {
      for (const address of lost) {
        const i = this.nodes.indexOf(address);
        if (i < 0) continue;
        let spare = this.spares.shift();
        if (spare === undefined && this.ownNodes.length > 0) {
          // This process took over once already: a second loss ends the run, its progress kept.
          const path = this.options.checkpoint;
          const written = path ? this.commitCheckpoint(path, commit.step, commit.state) : null;
          throw new ChainruleError('NO_SPARE', `node ${address} was lost at step ${this.group.step} and no spare is left (an earlier loss already moved actors into this process); ${written ? `the checkpoint of step ${commit.step} written to ${written}` : 'pass --checkpoint to keep the progress next time'}`,
            { hint: 'start more nodes and pass them with --spares, then --resume the checkpoint' });
        }
        if (spare === undefined) {
          console.warn(`chainrule: node ${address} was lost and no spare is left: its actors now run in this process`);
          const n = await startNode({ port: 0 });
          this.ownNodes.push(n);
          spare = n.address;
        }
        for (let j = 0; j < this.nodes.length; j++) if (this.nodes[j] === address) this.nodes[j] = spare;
        replacement = spare;
      }
    }
    const step = this.group.step;
    this.group = new StageGroup(newRunId(), this.options.replicas, this.stages);
    this.group.step = step;
    await this.open();
    return replacement;
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

  /**
   * Trains for the configured epochs and returns the summary (the `--json` object).
   * `onStep` and `onEpoch` are awaited; one that throws ends training with its error, the
   * summary so far attached as `err.summary` (written to the log directory too).
   */
  async train(): Promise<TrainSummary> {
    const started = performance.now();
    const o = this.options;
    const log = o.logDir ? new RunLog(o.logDir) : null;
    try {
      await this.open();
      return await this.trainWith(started, log);
    } finally {
      log?.close();
    }
  }

  private async trainWith(started: number, log: RunLog | null): Promise<TrainSummary> {
    const o = this.options;
    const history: EpochReport[] = [];
    const run = { history, started };
    let soFar: () => Promise<TrainSummary>;
    const finish = async (summary: TrainSummary, tracer: StepTracer | null): Promise<TrainSummary> => {
      if (log) await this.writeLog(log, summary, tracer);
      return summary;
    };
    /** Awaits a user callback; a throw ends training with that error and the summary so far. */
    const call = async <T>(fn: ((x: T) => void | Promise<void>) | undefined, x: T, tracer: StepTracer | null): Promise<void> => {
      if (!fn) return;
      try {
        await fn(x);
      } catch (e) {
        if (e !== null && typeof e === 'object') {
          try {
            (e as { summary?: TrainSummary }).summary = await finish(await soFar(), tracer);
          } catch {
            // The callback's own error is what the caller needs; a summary that cannot be made is left out.
          }
        }
        throw e;
      }
    };
    if (this.fullBatch) {
      const plan = fullBatchPlan(this.data.train, o.batchSize, o.replicas, o.fullBatchSize);
      const schedule = getSchedule(o.schedule)(this.stages, plan.microBatches);
      validateSchedule(schedule, this.stages, plan.microBatches);
      const tracer = log && o.traceSteps > 0 ? new StepTracer(this.group.step, this.group.step + o.traceSteps) : null;
      const extra = (epochs: number): Partial<TrainSummary> => ({
        epochs, microBatches: plan.microBatches, theoreticalBubbleFraction: theoreticalBubble(this.stages, plan.microBatches),
      });
      soFar = () => {
        const last = history[history.length - 1];
        if (!last) throw new OptionError('no epoch finished yet');
        return this.summarize(last, last.samplesPerSecond, this.data.train.size - plan.samples, run, extra(last.epoch));
      };
      const r = await trainFullBatch({
        method: this.fullBatch, group: this.group, spec: this.spec, train: this.data.train, seed: o.seed, epochs: o.epochs,
        iterationsPerEpoch: o.iterationsPerEpoch, plan, schedule, meter: this.meter, evaluate: () => this.evaluate(),
        onEpoch: async (rep) => { history.push(rep); log?.epoch(rep); await call(o.onEpoch, rep, tracer); },
        trace: tracer ? { tracer, epoch: 1 } : undefined,
      });
      const summary = await this.summarize(r.last, r.samplesPerSecond, this.data.train.size - plan.samples, run, {
        ...extra(r.last.epoch), gradEvals: r.gradEvals, lossEvals: r.lossEvals,
      });
      if (o.save) await this.save(o.save, { testLoss: summary.testLoss, testAccuracy: summary.testAccuracy, weightsSha256: summary.weightsSha256 });
      return finish(summary, tracer);
    }
    const batcher = new Batcher(this.data.train, { batchSize: o.batchSize, seed: o.seed });
    let last: EpochReport | null = null;
    let trainedSamples = 0;
    let trainSeconds = 0;
    if (o.resume && !this.resumedFrom) await this.loadCheckpoint(o.resume);
    if (o.checkpoint) checkCheckpointTarget(o.checkpoint, this.group.step);
    this.remember();
    const totalSteps = o.epochs * this.stepsPerEpoch;
    // The last steps of the run: past the warm-up, what a long run spends its time on.
    const tracer = log && o.traceSteps > 0 ? new StepTracer(Math.max(this.group.step, totalSteps - o.traceSteps), totalSteps) : null;
    for (let e = this.cursor.epoch; e < o.epochs; e++) {
      const t0 = performance.now();
      const mark = this.meter.mark();
      // A resumed epoch starts at the checkpoint's minibatch, with the loss of the ones before it.
      let { batch: b, lossSum, samples } = this.cursor;
      let trained = 0;
      const current = (): EpochReport => {
        const seconds = (performance.now() - t0) / 1000;
        return { epoch: e + 1, trainLoss: samples > 0 ? lossSum / samples : NaN, testLoss: NaN, testAccuracy: null, testMse: null, testMae: null, testLabelAccuracy: null, samplesPerSecond: trained / seconds, droppedSamples: batcher.droppedPerEpoch, seconds, bubbleFraction: BubbleMeter.between(mark, this.meter.mark()) };
      };
      soFar = () => {
        const seconds = trainSeconds + (trained > 0 ? (performance.now() - t0) / 1000 : 0);
        return this.summarize(last ?? current(), seconds > 0 ? (trainedSamples + trained) / seconds : 0, batcher.droppedPerEpoch, run, { epochs: last?.epoch ?? e });
      };
      const trace = tracer ? { tracer, epoch: e + 1 } : undefined;
      for (const { x, y } of batcher.epoch(e, b)) {
        const input = this.augment ? new Tensor(augmentBatch(x.data as Float32Array, this.data.train.inputShape, this.augment, augmentStream(o.seed, e, b)), x.shape) : x;
        b++;
        const ts = performance.now();
        const r = await this.stepWith(input, y, trace);
        lossSum += r.loss;
        const n = x.shape[0]!;
        samples += n;
        trained += n;
        this.cursor = { epoch: e, batch: b, lossSum, samples };
        this.remember();
        // Before the callbacks: when onStep(N) runs, step N's checkpoint is committed.
        if (o.checkpoint && o.checkpointEvery && this.group.step % o.checkpointEvery === 0) await this.saveCheckpoint(o.checkpoint);
        const now = performance.now();
        const info: StepInfo = {
          step: this.group.step, epoch: e + 1, loss: r.loss / n, samplesPerSecond: trained / ((now - t0) / 1000),
          batch: b, batches: this.stepsPerEpoch, lr: r.lr, ...(r.gradNorm === undefined ? {} : { gradNorm: r.gradNorm }),
        };
        log?.step({ ...info, stepMs: now - ts });
        await call(o.onStep, info, tracer);
      }
      const seconds = (performance.now() - t0) / 1000;
      const bubbleFraction = BubbleMeter.between(mark, this.meter.mark());
      trainedSamples += trained;
      trainSeconds += seconds;
      const ev = await this.evaluate();
      // samplesPerSecond and seconds cover what this process trained; trainLoss the whole epoch.
      last = { epoch: e + 1, trainLoss: lossSum / samples, testLoss: ev.loss, testAccuracy: ev.accuracy, ...testMetrics(ev), samplesPerSecond: trained / seconds, droppedSamples: batcher.droppedPerEpoch, seconds, bubbleFraction };
      history.push(last);
      this.cursor = { epoch: e + 1, batch: 0, lossSum: 0, samples: 0 };
      this.remember();
      if (o.checkpoint && !o.checkpointEvery) await this.saveCheckpoint(o.checkpoint);
      log?.epoch(last);
      trained = 0; // the epoch is in `last` now: soFar must not count it twice
      await call(o.onEpoch, last, tracer);
    }
    if (!last) throw new OptionError(`nothing to train: the checkpoint has ${this.cursor.epoch} epochs done and epochs is ${o.epochs}`);
    const summary = await this.summarize(last, trainSeconds > 0 ? trainedSamples / trainSeconds : 0, batcher.droppedPerEpoch, run);
    if (o.save) await this.save(o.save, { testLoss: summary.testLoss, testAccuracy: summary.testAccuracy, weightsSha256: summary.weightsSha256 });
    return finish(summary, tracer);
  }

  private async summarize(last: EpochReport, samplesPerSecond: number, droppedPerEpoch: number, run: { history: EpochReport[]; started: number }, extra: Partial<TrainSummary> = {}): Promise<TrainSummary> {
    const o = this.options;
    return {
      epochs: o.epochs, trainLoss: last.trainLoss, testLoss: last.testLoss, testAccuracy: last.testAccuracy,
      testMse: last.testMse, testMae: last.testMae, testLabelAccuracy: last.testLabelAccuracy, samplesPerSecond,
      droppedSamples: droppedPerEpoch * o.epochs, droppedPerEpoch, weightsSha256: await this.group.weightsSha256(),
      placement: this.placementName, replicas: o.replicas, stages: this.stages, partition: this.bounds.slice(1).map((b, i) => b - this.bounds[i]!),
      microBatches: o.microBatches, schedule: o.schedule, bubbleFraction: this.meter.fraction, theoreticalBubbleFraction: theoreticalBubble(this.stages, o.microBatches),
      backend: this.backendName, backendKernel: this.backendName === 'native' ? nativeKernel() : null,
      optimizer: this.optimizerSpec.type, seed: o.seed, batchSize: o.batchSize, lr: this.optimizerSpec.lr,
      parameters: layerParameterCounts(this.spec).reduce((a, b) => a + b, 0), transform: this.transformSpec, recoveries: this.recovery?.reports ?? [], ...extra,
      history: [...run.history], wallSeconds: (performance.now() - run.started) / 1000,
      versions: { chainrule: chainruleVersion(), node: process.versions.node },
      ...(this.resumedFrom ? { resumedFrom: this.resumedFrom } : {}),
    };
  }

  /** Ends the run log: the summary as returned, the trace, and what the report needs besides. */
  private async writeLog(log: RunLog, summary: TrainSummary, tracer: StepTracer | null): Promise<void> {
    const names = this.group.names;
    const K = this.stages;
    const usage = this.meter.actors();
    log.finish({
      summary,
      trace: (tracer ?? new StepTracer(0, 0)).chromeTrace(names, { stages: K, replicas: this.replicas }),
      run: {
        format: 'chainrule-run', version: 1, options: jsonOptions(this.options), model: this.spec,
        schedule: this.schedulePlan.map((actions) => actions.map(formatAction)),
        actors: names.map((name, a) => ({ name, stage: a % K, replica: Math.floor(a / K), busyMs: usage[a]?.busyMs ?? 0, wallMs: usage[a]?.wallMs ?? 0 })),
        confusion: await this.confusionMatrix(),
        tracedSteps: tracer ? [tracer.first, tracer.last] : [0, 0],
      },
    });
  }

  /** What a checkpoint must share with the run that resumes it. */
  private runIdentity(): RunIdentity {
    this.trainSha256 ??= datasetSha256(this.data.train);
    return { model: this.spec, seed: this.options.seed, optimizer: this.optimizerSpec, batchSize: this.options.batchSize, trainSize: this.data.train.size, trainSha256: this.trainSha256 };
  }

  /**
   * Commits a checkpoint `dir/step-N` of every stage's state merged by name (independent of
   * placement, stage and replica count) and the training position; keeps the newest `keep`.
   * @returns the committed directory
   */
  async saveCheckpoint(dir: string): Promise<string> {
    await this.open();
    return this.commitCheckpoint(dir, this.group.step, await this.group.state());
  }

  /** Keeps the cursor of the steps a recovery's commit may still be at. */
  private remember(): void {
    if (!this.recovery) return;
    const step = this.group.step;
    this.cursors.set(step, this.cursor);
    for (const k of this.cursors.keys()) if (k < step - this.commitEvery) this.cursors.delete(k);
  }

  /** Writes the state of step `step` (now, or a recovery's commit) with the cursor of that step. */
  private commitCheckpoint(dir: string, step: number, state: StageState): string {
    const o = this.options;
    const spe = this.stepsPerEpoch;
    const at = step === this.group.step ? this.cursor : this.cursors.get(step) ?? { epoch: Math.floor(step / spe), batch: step % spe, lossSum: 0, samples: 0 };
    return writeCheckpoint(dir, {
      run: this.runIdentity(), step, epoch: at.epoch, batch: at.batch, batchesPerEpoch: spe, droppedPerEpoch: this.data.train.size % o.batchSize,
      epochLossSum: at.lossSum, epochSamples: at.samples, lrSchedule: this.lrSchedule,
      writtenBy: { placement: this.placementName, replicas: o.replicas, stages: this.stages, microBatches: o.microBatches },
      state,
    }, { keep: o.keep }).path;
  }

  /**
   * Restores the newest complete checkpoint in `dir` (or `dir` itself, a step-N directory),
   * verified against its manifest, into the stages (whatever placement, stage or replica
   * count wrote it), and the training position.
   * @throws CheckpointError naming the file that is missing, truncated or altered
   */
  async loadCheckpoint(dir: string): Promise<ResumedFrom> {
    await this.open();
    const { path, content: cp, ignored } = readCheckpoint(dir, this.runIdentity());
    const slotNames = createOptimizer(this.optimizerSpec).slotNames;
    checkStateFits(cp.state, await this.group.state(), slotNames, path);
    await this.group.setState(cp.state);
    this.group.step = cp.step;
    this.cursor = { epoch: cp.epoch, batch: cp.batch, lossSum: cp.epochLossSum, samples: cp.epochSamples };
    this.resumedFrom = { path, step: cp.step, epoch: cp.epoch, batch: cp.batch, ignored };
    return this.resumedFrom;
  }

  async close(): Promise<void> {
    const t = this.transport;
    this.transport = null;
    try {
      if (t) await t.close();
      await Promise.all(this.ownNodes.splice(0).map((n) => n.close()));
    } finally {
      this.backendClaim.release();
    }
  }
}

export type { CoordinatorOptions } from './options.js';
