/**
 * The Coordinator: the programmatic API behind `chainrule train`. It validates the options,
 * starts R replicas × K stages of actors wherever they are placed, feeds each replica its
 * shard of every minibatch, drives the pipeline schedule, steps the optimizer, evaluates,
 * checkpoints and summarizes: a facade over run-plan, train-loop, checkpoint-keeper, node-pool.
 *
 * @example
 * import { Coordinator } from 'chainrule';
 * const c = new Coordinator({ model: 'mlp', dataset: 'mnist', epochs: 3, placement: 'threads', replicas: 2 });
 * const summary = await c.train();   // { testAccuracy, weightsSha256, ... }
 * await c.close();
 */
import { randomBytes } from 'node:crypto';
import type { Tensor } from '../src/tensor/tensor.js';
import { claimBackend } from '../src/tensor/select.js';
import { MAX_KERNEL_THREADS, checkKernelThreads, type Backend } from '../src/tensor/backend.js';
import { availableParallelism } from 'node:os';
import type { MicroBatch, Dataset, Targets, TransformSpec } from '../src/data/index.js';
import type { ModelSpec } from '../src/nn/index.js';
import type { OptimizerSpec } from '../src/optim/index.js';
import type { NamedTensors, Schedule, StageState } from '../src/wire/index.js';
import type { DataSplit } from './inputs.js';
import { createTransport, type Transport } from './transports/index.js';
import type { CoordinatorOptions, ResolvedOptions } from './options.js';
import { StageGroup } from './stage-group.js';
import { evaluate, isClassifier, type Evaluation } from './evaluate.js';
import { shardMinibatch, trainStep, trainSteps, type QueuedStep, type TraceAsk } from './pipeline.js';
import { fullBatchPlan } from './fullbatch.js';
import { BubbleMeter, type EpochReport, type ResumedFrom, type TrainSummary } from './summary.js';
import { initialState, saveModel } from './saved-model.js';
import { Recovery, type CommitKeeping } from './recovery.js';
import { mergeStates } from './stage-group.js';
import { RunLog } from './run-log.js';
import { planRun, type RunPlan } from './run-plan.js';
import { trainEpochs, trainRun, type StepResult, type TrainHost } from './train-loop.js';
import { CheckpointKeeper } from './checkpoint-keeper.js';
import { NodePool } from './node-pool.js';
import { describeNonFiniteStep } from './nonfinite.js';
import { autoStepsPerRequest } from './steps-per-request.js';

/**
 * options.kernelThreads as a count: 'auto' shares this host's cores among the threads that
 * compute here (`here`; null: the actors are elsewhere, 1 here: gRPC nodes take their own
 * cores), and is 1 where the backend has no kernel threads. Under 'auto' the actors then
 * measure whether the count pays (node/kernel-tuner.ts).
 */
export function resolveKernelThreads(asked: number | 'auto', here: number | null, backend: Backend, cores = availableParallelism()): number {
  if (asked !== 'auto') return asked;
  if (here === null || !backend.kernelThreads) return 1;
  return Math.max(1, Math.min(MAX_KERNEL_THREADS, Math.floor(cores / here)));
}

const newRunId = () => `run-${randomBytes(16).toString('hex')}`;

export class Coordinator {
  private readonly plan: RunPlan;
  private readonly backendClaim: ReturnType<typeof claimBackend>;
  private group: StageGroup;
  private readonly recovery: Recovery | null;
  /** The gRPC nodes in use (a lost one replaced by a spare or a node in this process), and the training position and checkpoints. */
  private readonly pool: NodePool;
  private readonly keeper: CheckpointKeeper;
  /** Busy and wall time of every actor so far: the measured bubble. */
  readonly meter = new BubbleMeter();
  private transport: Transport | null = null;
  /** The learning rate, (with clipping) the gradient norm, and whether it was skipped, of the last step runParts ran. */
  private lastStep: { lr: number; gradNorm?: number; skipped?: boolean } = { lr: 0 };
  /** Steps every actor dropped for a NaN or infinity (skipNonFinite), by step: a replayed one counts once. */
  private readonly skipped = new Map<number, string>();
  /** Set while train() runs: the keeper's cursor then holds the epoch of the step running. */
  private training = false;

  constructor(opts: CoordinatorOptions = {}) {
    const plan = planRun(opts);
    this.plan = plan;
    this.group = new StageGroup(newRunId(), plan.options.replicas, plan.stages, plan.virtualStages);
    this.pool = new NodePool(plan.options.nodes, plan.options.spares, { advertise: plan.options.advertise, tls: plan.options.tls, tokenFile: plan.options.tokenFile });
    this.keeper = new CheckpointKeeper(plan, () => this.group);
    this.recovery = plan.commitEvery !== 0 ? new Recovery(plan.commitEvery, {
      reopen: (lost, commit) => this.reopen(lost, commit),
      restore: async (state, step) => { await this.group.setState(state); this.group.step = step; },
      replay: async (parts) => { await this.runParts(parts); },
    }) : null;
    // Last: nothing above may fail while the claim is held.
    this.backendClaim = claimBackend(plan.options.backend, 'new Coordinator');
    try {
      this.kernelThreads = resolveKernelThreads(plan.options.kernelThreads, plan.computingThreadsHere, this.backendClaim.backend);
      // Refused here, before any actor starts, when this machine's actors could not run them
      // (gRPC nodes have backends of their own and check at configure).
      checkKernelThreads(plan.options.placement === 'grpc' ? null : this.backendClaim.backend, this.kernelThreads, 'options.kernelThreads');
    } catch (e) {
      this.backendClaim.release();
      throw e;
    }
  }

  get options(): ResolvedOptions { return this.plan.options; }
  /** The training split (without the held-out samples) and the test split. */
  get data(): DataSplit { return this.plan.data; }
  /** The samples held out of the training set by `validationSplit`, or null. */
  get validation(): Dataset | null { return this.plan.validation; }
  get spec(): ModelSpec { return this.plan.spec; }
  get transformSpec(): TransformSpec | undefined { return this.plan.transformSpec; }
  get optimizerSpec(): OptimizerSpec { return this.plan.optimizerSpec; }
  /** Set for full-batch methods: the name of the method. */
  get fullBatch(): string | null { return this.plan.fullBatch; }
  get bounds(): number[] { return this.plan.bounds; }
  get schedulePlan(): Schedule { return this.plan.schedulePlan; }
  get stages(): number { return this.plan.stages; }
  get replicas(): number { return this.options.replicas; }
  get stepsPerEpoch(): number { return this.plan.stepsPerEpoch; }
  get placementName(): string { return this.plan.placementName; }
  get backendName(): string { return this.backendClaim.backend.name; }
  /**
   * Threads each actor splits its large products among (options.kernelThreads, with 'auto'
   * resolved): with 'auto' the most, which each actor keeps only if its first steps run faster
   * on them than on one (the summary's kernelThreads says what the run ended on).
   */
  readonly kernelThreads: number;
  /** Unguessable (a node tells runs apart by it); a new one after a recovery. */
  get run(): string { return this.group.run; }
  /** Steps dropped by every actor because a NaN or infinity appeared in them (with skipNonFinite). */
  get skippedSteps(): number { return this.skipped.size; }
  /** The checkpoint this run resumed from, once loaded. */
  get resumedFrom(): ResumedFrom | null { return this.keeper.resumedFrom; }

  /** Starts the actors and configures them (idempotent). */
  async open(): Promise<void> {
    if (this.transport) return;
    const o = this.options;
    const { nodes } = this.pool;
    this.transport = typeof o.placement === 'string' ? createTransport(o.placement, { nodes, tls: o.tls, tokenFile: o.tokenFile }) : o.placement;
    const capacity = this.fullBatch ? fullBatchPlan(this.data.train, o.batchSize, o.replicas, o.fullBatchSize).microBatches : o.microBatches;
    await this.group.open(this.transport, (k) => ({
      model: this.spec, start: this.bounds[k]!, end: this.bounds[k + 1]!, seed: o.seed, capacity, replicas: o.replicas, backend: this.backendName,
      ...(this.kernelThreads > 1 ? { kernelThreads: this.kernelThreads } : {}),
      // 'auto': each actor's first steps measure whether that many pay (node/kernel-tuner.ts);
      // on gRPC nodes, whose cores this host does not know, up to each node's own.
      ...(o.kernelThreads === 'auto' && (this.kernelThreads > 1 || o.placement === 'grpc') ? { tuneKernelThreads: true } : {}),
    }), this.plan.stageParameters);
    if (o.init) await this.group.setState(initialState(o.init, this.spec));
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
      metadata: { seed: this.options.seed, optimizer: this.optimizerSpec.type, steps: this.group.step, epochs: this.keeper.cursor.epoch, ...metadata },
    });
  }

  /** One optimizer step on one minibatch (`y`: labels, or float targets [n, ...]); returns the summed loss. */
  async step(x: Tensor, y: Targets): Promise<number> {
    return (await this.stepWith(x, y)).loss;
  }

  /**
   * Optimizer steps on several minibatches in order, as many to a request as
   * {@link stepsPerRequest} allows (the same bits as step() on each); returns each one's summed loss.
   * @example const losses = await c.steps(batches.map(({ x, y }) => ({ x, y })));
   */
  async steps(batches: readonly { x: Tensor; y: Targets }[]): Promise<number[]> {
    const losses: number[] = [];
    for (let i = 0; i < batches.length;) {
      const n = Math.min(this.stepsPerRequest(), batches.length - i);
      for (const r of await this.stepsWith(batches.slice(i, i + n))) losses.push(r.loss);
      i += n;
    }
    return losses;
  }

  private async stepWith(x: Tensor, y: Targets, trace?: TraceAsk): Promise<StepResult> {
    await this.open();
    const parts = shardMinibatch(x, y, this.options.replicas, this.options.microBatches);
    // Timed without the recovery commits the coordinator fetches between requests.
    const timed = async (commit?: 'whole' | 'share') => {
      const traced = trace?.tracer.wants(this.group.step) === true;
      const t0 = performance.now();
      const loss = await this.runParts(parts, trace, commit);
      if (!traced) this.noteStepMs(performance.now() - t0);
      return loss;
    };
    const loss = this.recovery
      ? await this.recovery.run(this.group.step, [parts], () => this.transport!, timed, () => this.commitKeeping())
      : await timed();
    return { loss, ...this.lastStep };
  }

  /**
   * Steps on several minibatches, sent to the actors in one request each (the same bits as
   * one step at a time); `batches.length` is at most {@link stepsPerRequest}.
   */
  private async stepsWith(batches: readonly { x: Tensor; y: Targets }[]): Promise<StepResult[]> {
    if (batches.length === 1) return [await this.stepWith(batches[0]!.x, batches[0]!.y)];
    await this.open();
    const all = batches.map((b) => shardMinibatch(b.x, b.y, this.options.replicas, this.options.microBatches));
    const timed = async (commit?: 'whole' | 'share') => {
      const t0 = performance.now();
      const results = await this.runQueued(all, commit);
      this.noteStepMs((performance.now() - t0) / all.length);
      return results;
    };
    return this.recovery
      ? this.recovery.run(this.group.step, all, () => this.transport!, timed, () => this.commitKeeping())
      : timed();
  }

  /** Recent wall milliseconds per step (an exponential average), for stepsPerRequest 'auto'. */
  private stepMs: number | null = null;
  private noteStepMs(ms: number): void {
    this.stepMs = this.stepMs === null ? ms : 0.8 * this.stepMs + 0.2 * ms;
  }

  /**
   * How many steps from here may go to the actors in one request: options.stepsPerRequest, or
   * under 'auto' as many as take about 200 ms by the recent steps' time (coordinator/steps-per-request.ts);
   * 1 where the coordinator must see each step (clipping, skipping, virtual stages, a full-batch
   * method) and on the local placement; never past the next recovery commit.
   */
  stepsPerRequest(): number {
    const o = this.options;
    if (o.clipNorm !== undefined || o.skipNonFinite || this.plan.virtualStages > 1 || this.fullBatch) return 1;
    // In-process actors: a request is a call, nothing to save; and their messages are the
    // sender's own tensors, which only the coordinator's wait between steps keeps from reuse.
    if (this.transport?.kind === 'local') return 1;
    const wanted = o.stepsPerRequest === 'auto' ? autoStepsPerRequest(this.stepMs) : o.stepsPerRequest;
    return this.recovery ? Math.min(wanted, this.recovery.maxSteps(this.group.step, this.commitKeeping().where)) : wanted;
  }

  /** Steps of `all` (each a minibatch's shards) in one request per actor; each one's loss and learning rate. */
  private async runQueued(all: MicroBatch[][][], commit?: 'whole' | 'share'): Promise<StepResult[]> {
    const { plan } = this;
    const first = this.group.step;
    const steps: QueuedStep[] = all.map((parts, i) => ({
      parts,
      lr: plan.lrAt ? plan.lrAt(first + i, this.stepsPerEpoch) : this.optimizerSpec.lr,
      gradScale: 1 / parts.reduce((n, r) => r.reduce((m, p) => m + p.x.shape[0]!, n), 0),
      ...(i === 0 && commit ? { commit } : {}),
    }));
    const epoch = this.training ? this.keeper.cursor.epoch + 1 : undefined;
    try {
      const losses = await trainSteps(this.group, this.spec, steps, this.schedulePlan, this.meter, this.optimizerSpec, epoch);
      this.lastStep = { lr: steps.at(-1)!.lr };
      return losses.map((loss, i) => ({ loss, lr: steps[i]!.lr }));
    } finally {
      // The actors ran every step of the request (a NaN or infinity does not stop them).
      this.group.step = first + steps.length;
    }
  }

  /** Where this run's recovery commits are kept: by the actors when their transport can keep them safe. */
  private commitKeeping(): CommitKeeping {
    const state = () => this.group.state();
    const t = this.transport;
    const keepers = t?.keepsCommits?.(this.group);
    if (!keepers || !t?.keptCommit) return { where: 'coordinator', state };
    return { where: 'actors', how: keepers === 'shares' ? 'share' : 'whole', state, read: async (step, lost) => mergeStates(await t.keptCommit!(step, lost)) };
  }

  /** `commit`: the actors first keep their state (whole, or each replica its share) as the recovery commit of this step. */
  private async runParts(parts: MicroBatch[][], trace?: TraceAsk, commit?: 'whole' | 'share'): Promise<number> {
    const { plan, options: o } = this;
    const lr = plan.lrAt ? plan.lrAt(this.group.step, this.stepsPerEpoch) : this.optimizerSpec.lr;
    const samples = parts.reduce((n, r) => r.reduce((m, p) => m + p.x.shape[0]!, n), 0);
    const epoch = this.training ? this.keeper.cursor.epoch + 1 : undefined;
    const r = await trainStep(this.group, this.spec, parts, this.schedulePlan, this.meter,
      { optimizer: this.optimizerSpec, lr, gradScale: 1 / samples, clipNorm: o.clipNorm, trace, skipNonFinite: o.skipNonFinite, epoch,
        commit });
    if (r.skipped && !this.skipped.has(this.group.step)) {
      const what = describeNonFiniteStep(this.group.step, epoch, r.skipped);
      this.skipped.set(this.group.step, what);
      console.warn(`chainrule: warning: skipped ${what} (--skip-nonfinite; ${this.skipped.size} skipped so far)`);
    }
    this.group.step++;
    this.lastStep = { lr, ...(r.gradNorm === undefined ? {} : { gradNorm: r.gradNorm }), ...(r.skipped ? { skipped: true } : {}) };
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
    const dir = this.options.checkpoint;
    const keep = () => (dir ? this.keeper.commit(dir, commit.step, commit.state) : null);
    const replacement = (await this.pool.replace(lost, { step: this.group.step, commitStep: commit.step, keep })) ?? this.placementName;
    const step = this.group.step;
    this.group = new StageGroup(newRunId(), this.options.replicas, this.stages, this.plan.virtualStages);
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
   * Trains and returns the summary (the `--json` object): up to `options.epochs` epochs, or
   * with `{ epochs: N }` N more epochs from where training is. Called again, it goes on where
   * the last call (or the checkpoint resumed) stopped, as one longer run would: the epoch
   * numbers, the data order (epoch e's shuffle is drawn from (seed, e) alone), the step count
   * (the learning-rate schedule; a cosine's length stays the one options.epochs gave), the
   * optimizer's state and early stopping's best so far all go on, so `train()` for 2 epochs
   * then `train({ epochs: 1 })` ends with the weights of one 3-epoch run. The summary's
   * `history` holds every epoch since the Coordinator was made; `--log-dir` appends to its
   * metrics.jsonl and rewrites the summary. A full-batch method trains once.
   * `onStep` and `onEpoch` are awaited; one that throws ends training with its error, the
   * summary so far attached as `err.summary` (written to the log directory too).
   * @example
   * const c = new Coordinator({ epochs: 2 });
   * await c.train();                          // epochs 1-2
   * const s = await c.train({ epochs: 1 });   // epoch 3; s.history has all three
   * @throws OptionError when `options.epochs` are done and no `epochs` is given
   */
  async train(opts: { epochs?: number } = {}): Promise<TrainSummary> {
    const more = trainEpochs(opts);
    this.stopping = false;
    const started = performance.now();
    const log = this.options.logDir ? new RunLog(this.options.logDir, { append: this.history.length > 0 }) : null;
    const { plan, meter, keeper, backendName, history } = this;
    const host: TrainHost = { plan, meter, keeper, backendName, kernelThreads: this.kernelThreads, history, recoveries: this.recovery?.reports ?? [], skippedSteps: () => this.skipped.size, group: () => this.group,
      step: (x, y, trace) => this.stepWith(x, y, trace), steps: (batches) => this.stepsWith(batches), stepsPerRequest: () => this.stepsPerRequest(), evaluate: (ds) => this.evaluate(ds), confusionMatrix: () => this.confusionMatrix(),
      restoreState: (state) => this.restoreState(state), save: (dir, metadata) => this.save(dir, metadata), stopRequested: () => this.stopping };
    this.training = true;
    try {
      await this.open();
      return await trainRun(host, log, started, more);
    } finally {
      this.training = false;
      log?.close();
    }
  }

  /** Every epoch's report since the Coordinator was made, over every train(). */
  private readonly history: EpochReport[] = [];

  /** A state put back between steps (early stopping): the actors, and the commit a lost actor would be rebuilt from. */
  private async restoreState(state: StageState): Promise<void> {
    await this.group.setState({ ...state, lastStep: this.group.step - 1 });
    await this.recovery?.take(this.group.step, () => this.group.state());
  }

  private stopping = false;

  /** Ends a running `train()` after the step it is in (with a checkpoint when one was asked for): what Ctrl-C does. */
  stop(): void { this.stopping = true; }

  /**
   * Commits a checkpoint `dir/step-N` of every stage's state merged by name (independent of
   * placement, stage and replica count) and the training position; keeps the newest `keep`.
   * @returns the committed directory
   */
  async saveCheckpoint(dir: string): Promise<string> {
    await this.open();
    return this.keeper.save(dir);
  }

  /**
   * Restores the newest complete checkpoint in `dir` (or `dir` itself, a step-N directory),
   * verified against its manifest, into the stages (whatever placement, stage or replica
   * count wrote it), and the training position.
   * @throws CheckpointError naming the file that is missing, truncated or altered
   */
  async loadCheckpoint(dir: string): Promise<ResumedFrom> {
    await this.open();
    return this.keeper.restore(dir);
  }

  async close(): Promise<void> {
    const t = this.transport;
    this.transport = null;
    try {
      if (t) await t.close();
      await this.pool.close();
    } finally {
      this.backendClaim.release();
    }
  }
}

export type { CoordinatorOptions } from './options.js';
