/**
 * Training a run to its summary: the epochs of minibatch steps (resumed at a checkpoint's
 * cursor, checkpointed on cadence, evaluated on the test and validation sets, stopped early
 * when asked, the user's callbacks awaited), or a full-batch method's iterations; then the
 * summary, the saved model and the run log. It drives a Coordinator through the TrainHost the
 * Coordinator hands it; called again, it goes on from the Coordinator's cursor.
 *
 * @example
 * const summary = await trainRun(host, new RunLog('runs/a'), performance.now());
 * const more = await trainRun(host, null, performance.now(), 2);   // two more epochs
 */
import { Tensor } from '../src/tensor/tensor.js';
import { Batcher, augmentBatch, augmentStream, type Dataset, type Targets } from '../src/data/index.js';
import type { StageState } from '../src/wire/index.js';
import { layerParameterCounts } from '../src/nn/index.js';
import { getSchedule, validateSchedule } from './schedules/index.js';
import { OptionError } from './options.js';
import type { Evaluation } from './evaluate.js';
import type { TraceAsk } from './pipeline.js';
import { fullBatchPlan, trainFullBatch } from './fullbatch.js';
import { checkCheckpointTarget } from './checkpoint.js';
import { BubbleMeter, summarize, testMetrics, theoreticalBubble, valMetrics, type EpochReport, type StepInfo, type TrainSummary } from './summary.js';
import type { CheckpointKeeper, Cursor } from './checkpoint-keeper.js';
import { afterEpoch, noEarlyStop, type StoppedEarly } from './early-stop.js';
import type { RecoveryReport } from './recovery.js';
import type { RunPlan } from './run-plan.js';
import type { StageGroup } from './stage-group.js';
import { writeRunLog, type RunLog } from './run-log.js';
import { StepTracer } from './trace.js';

/** One step's outcome: the summed loss, the learning rate it used, (with clipping) the gradient norm, and whether every actor dropped it (skipNonFinite). */
export interface StepResult { loss: number; lr: number; gradNorm?: number; skipped?: boolean }

/** What the training loop needs of the Coordinator, its actors opened. */
export interface TrainHost {
  readonly plan: RunPlan;
  readonly meter: BubbleMeter;
  readonly keeper: CheckpointKeeper;
  readonly backendName: string;
  readonly kernelThreads: number;
  /** The lost actors survived so far. */
  readonly recoveries: RecoveryReport[];
  /** Steps dropped for a NaN or infinity so far. */
  skippedSteps(): number;
  /** The stage group now: a recovery replaces it. */
  group(): StageGroup;
  /** Every epoch's report, over every train() of the Coordinator: the loop appends to it. */
  readonly history: EpochReport[];
  step(x: Tensor, y: Targets, trace?: TraceAsk): Promise<StepResult>;
  /** Steps on several minibatches, in one request per actor (at most stepsPerRequest()). */
  steps(batches: readonly { x: Tensor; y: Targets }[]): Promise<StepResult[]>;
  /** How many steps from here may go to the actors together. */
  stepsPerRequest(): number;
  /** Loss and metrics on the test split, or on `ds`. */
  evaluate(ds?: Dataset): Promise<Evaluation>;
  /** Puts a state back into every actor between steps (early stopping), and into the commit a recovery rebuilds from. */
  restoreState(state: StageState): Promise<void>;
  confusionMatrix(): Promise<number[][] | null>;
  save(dir: string, metadata: Record<string, unknown>): Promise<void>;
  /** True once `Coordinator.stop()` was called (Ctrl-C): the loop ends after the step it is in. */
  stopRequested(): boolean;
}

const DISPLAY_ONLY = Symbol('chainrule.displayOnly');

/**
 * Marks an onStep callback that only shows progress (the CLI's bar): it does not need to see
 * each step's weights, so stepsPerRequest 'auto' may still send several steps together.
 */
export function displayOnly<F extends (...args: never[]) => unknown>(fn: F): F {
  return Object.assign(fn, { [DISPLAY_ONLY]: true });
}

/** The `epochs` of `train({ epochs })`, checked: a positive integer, or undefined. */
export function trainEpochs(opts: { epochs?: number }): number | undefined {
  if (opts === null || typeof opts !== 'object') throw new OptionError(`train() takes { epochs }, got ${String(opts)}`);
  for (const k of Object.keys(opts)) if (k !== 'epochs') throw new OptionError(`train({ ${k} }): train() takes only { epochs }; the other options go to new Coordinator()`);
  const n = opts.epochs;
  if (n !== undefined && !(Number.isSafeInteger(n) && n >= 1)) throw new OptionError(`train({ epochs }) must be a positive integer, got ${JSON.stringify(n)}`);
  return n;
}

/** `epochs`: the epochs done once this call ends (the summary's count). */
interface RunSoFar { history: EpochReport[]; started: number; epochs: number }

/**
 * Trains up to epoch `options.epochs`, or with `more` for that many more epochs from where
 * training is (the epoch under way counting as the first), and returns the summary. `onStep`
 * and `onEpoch` are awaited; one that throws ends training with its error, the summary so far
 * attached as `err.summary` (written to `log` too).
 * @throws OptionError when there is nothing to train
 */
export async function trainRun(host: TrainHost, log: RunLog | null, started: number, more?: number): Promise<TrainSummary> {
  const { plan, history } = host;
  const o = plan.options;
  const run: RunSoFar = { history, started, epochs: o.epochs };
  let soFar: () => Promise<TrainSummary>;
  const finish = async (summary: TrainSummary, tracer: StepTracer | null): Promise<TrainSummary> => {
    if (log) await writeLog(host, log, summary, tracer);
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
  const saveModel = async (summary: TrainSummary) => {
    if (o.save) await host.save(o.save, { testLoss: summary.testLoss, testAccuracy: summary.testAccuracy, weightsSha256: summary.weightsSha256 });
  };
  const withValidation = async (rep: EpochReport): Promise<EpochReport> =>
    (plan.validation ? { ...rep, ...valMetrics(await host.evaluate(plan.validation)) } : rep);
  if (plan.fullBatch) {
    if (history.length > 0) {
      throw new OptionError(`train() again: the full-batch optimizer ${plan.fullBatch} cannot go on from an earlier train(), its search state (directions, curvature pairs) lives in one call`,
        `train once, with options.epochs the total`);
    }
    run.epochs = more ?? o.epochs;
    const fb = fullBatchPlan(plan.data.train, o.batchSize, o.replicas, o.fullBatchSize);
    const schedule = getSchedule(o.schedule)(plan.stages, fb.microBatches);
    validateSchedule(schedule, plan.stages, fb.microBatches);
    const group = host.group();
    const tracer = log && o.traceSteps > 0 ? new StepTracer(group.step, group.step + o.traceSteps) : null;
    const extra = (epochs: number): Partial<TrainSummary> => ({
      epochs, microBatches: fb.microBatches, theoreticalBubbleFraction: theoreticalBubble(plan.stages, fb.microBatches, o.schedule),
    });
    soFar = () => {
      const last = history[history.length - 1];
      if (!last) throw new OptionError('no epoch finished yet');
      return summarizeRun(host, last, last.samplesPerSecond, plan.data.train.size - fb.samples, run, extra(last.epoch));
    };
    const r = await trainFullBatch({
      method: plan.fullBatch, group, spec: plan.spec, train: plan.data.train, seed: o.seed, epochs: run.epochs,
      iterationsPerEpoch: o.iterationsPerEpoch, plan: fb, schedule, meter: host.meter, evaluate: () => host.evaluate(),
      onEpoch: async (report) => {
        const rep = await withValidation(report);
        history.push(rep);
        log?.epoch(rep);
        await call(o.onEpoch, rep, tracer);
      },
      trace: tracer ? { tracer, epoch: 1 } : undefined,
    });
    const summary = await summarizeRun(host, history.at(-1) ?? r.last, r.samplesPerSecond, plan.data.train.size - fb.samples, run, {
      ...extra(r.last.epoch), gradEvals: r.gradEvals, lossEvals: r.lossEvals,
    });
    await saveModel(summary);
    return finish(summary, tracer);
  }
  const { keeper, meter } = host;
  const batcher = new Batcher(plan.data.train, { batchSize: o.batchSize, seed: o.seed });
  let last: EpochReport | null = null;
  let trainedSamples = 0;
  let trainSeconds = 0;
  if (o.resume && !keeper.resumedFrom) await keeper.restore(o.resume);
  const done = keeper.cursor.epoch;
  run.epochs = more === undefined ? o.epochs : done + more;
  if (done >= run.epochs) {
    const what = history.length === 0 && keeper.resumedFrom ? 'the checkpoint has' : 'training has';
    throw new OptionError(`nothing to train: ${what} ${done} epochs done and epochs is ${o.epochs}`, 'train({ epochs: N }) trains N more');
  }
  if (o.checkpoint) checkCheckpointTarget(o.checkpoint, host.group().step);
  keeper.remember();
  // Early stopping's state is part of the position (a checkpoint keeps its own step's).
  let earlyStop = keeper.cursor.earlyStop ?? noEarlyStop;
  let stoppedEarly: StoppedEarly | null = null;
  const position = (epoch: number, batch: number, lossSum: number, samples: number): Cursor =>
    ({ epoch, batch, lossSum, samples, ...(o.earlyStop ? { earlyStop } : {}) });
  const totalSteps = run.epochs * plan.stepsPerEpoch;
  // The last steps of the run: past the warm-up, what a long run spends its time on.
  const tracer = log && o.traceSteps > 0 ? new StepTracer(Math.max(host.group().step, totalSteps - o.traceSteps), totalSteps) : null;
  let lastTurn = performance.now();
  for (let e = done; e < run.epochs; e++) {
    const t0 = performance.now();
    const mark = meter.mark();
    // A resumed epoch starts at the checkpoint's minibatch, with the loss of the ones before it.
    let { batch: b, lossSum, samples } = keeper.cursor;
    let trained = 0;
    const current = (): EpochReport => {
      const seconds = (performance.now() - t0) / 1000;
      return {
        epoch: e + 1, trainLoss: samples > 0 ? lossSum / samples : NaN, testLoss: NaN, testAccuracy: null, testMse: null, testMae: null, testLabelAccuracy: null,
        samplesPerSecond: trained / seconds, droppedSamples: batcher.droppedPerEpoch, seconds, bubbleFraction: BubbleMeter.between(mark, meter.mark()),
      };
    };
    soFar = () => {
      const seconds = trainSeconds + (trained > 0 ? (performance.now() - t0) / 1000 : 0);
      const samplesPerSecond = seconds > 0 ? (trainedSamples + trained) / seconds : 0;
      return summarizeRun(host, last ?? current(), samplesPerSecond, batcher.droppedPerEpoch, run, { epochs: last?.epoch ?? e });
    };
    const trace = tracer ? { tracer, epoch: e + 1 } : undefined;
    // A callback that may read the weights after each step gets them one step at a time.
    const perStep = o.stepsPerRequest === 'auto' && o.onStep !== undefined && !(DISPLAY_ONLY in o.onStep);
    const batches = batcher.epoch(e, b)[Symbol.iterator]();
    for (;;) {
      const first = host.group().step;
      // Requests end where the loop must act between steps: a checkpoint, a traced step.
      let want = perStep ? 1 : host.stepsPerRequest();
      if (o.checkpoint && o.checkpointEvery) want = Math.min(want, o.checkpointEvery - (first % o.checkpointEvery));
      if (tracer) want = tracer.wants(first) ? 1 : first < tracer.first ? Math.min(want, tracer.first - first) : want;
      const chunk: { x: Tensor; y: Targets; input: Tensor }[] = [];
      while (chunk.length < want) {
        const next = batches.next();
        if (next.done) break;
        const { x, y } = next.value;
        const { augment } = plan;
        chunk.push({ x, y, input: augment ? new Tensor(augmentBatch(x.data as Float32Array, plan.data.train.inputShape, augment, augmentStream(o.seed, e, b + chunk.length)), x.shape) : x });
      }
      if (chunk.length === 0) break;
      const ts = performance.now();
      const results = chunk.length === 1 ? [await host.step(chunk[0]!.input, chunk[0]!.y, trace)] : await host.steps(chunk.map((c) => ({ x: c.input, y: c.y })));
      const stepMs = (performance.now() - ts) / chunk.length;
      let step = first;
      for (const [i, r] of results.entries()) {
        b++;
        step++;
        const n = chunk[i]!.x.shape[0]!;
        // A skipped step's loss (NaN, say) is no part of the epoch's.
        if (!r.skipped) { lossSum += r.loss; samples += n; }
        trained += n;
        keeper.moveTo(position(e, b, lossSum, samples));
        // Before the callbacks: when onStep(N) runs, step N's checkpoint is committed (a request ends at one).
        if (o.checkpoint && o.checkpointEvery && step % o.checkpointEvery === 0) await keeper.save(o.checkpoint);
        const now = performance.now();
        const info: StepInfo = {
          step, epoch: e + 1, loss: r.loss / n, samplesPerSecond: trained / ((now - t0) / 1000),
          batch: b, batches: plan.stepsPerEpoch, lr: r.lr, ...(r.gradNorm === undefined ? {} : { gradNorm: r.gradNorm }),
        };
        log?.step({ ...info, stepMs });
        await call(o.onStep, info, tracer);
      }
      // In-process steps never wait for I/O: give the event loop a turn now and then, so that
      // signals (Ctrl-C), timers and the progress bar are served during a long epoch.
      const now = performance.now();
      if (now - lastTurn > 50) { await new Promise<void>((r) => setImmediate(r)); lastTurn = performance.now(); }
      if (host.stopRequested()) {
        // Stopped between requests: the weights are a whole step's, checkpointed when asked for.
        const justSaved = o.checkpoint && o.checkpointEvery && step % o.checkpointEvery === 0;
        const checkpoint = o.checkpoint ? (justSaved ? `${o.checkpoint}/step-${step}` : await keeper.save(o.checkpoint)) : null;
        trainedSamples += trained;
        trainSeconds += (performance.now() - t0) / 1000;
        const summary = await summarizeRun(host, last ?? current(), trainSeconds > 0 ? trainedSamples / trainSeconds : 0, batcher.droppedPerEpoch, run,
          { epochs: last?.epoch ?? e, stopped: { step, checkpoint } });
        await saveModel(summary);
        return finish(summary, tracer);
      }
    }
    const seconds = (performance.now() - t0) / 1000;
    const bubbleFraction = BubbleMeter.between(mark, meter.mark());
    trainedSamples += trained;
    trainSeconds += seconds;
    const ev = await host.evaluate();
    // samplesPerSecond and seconds cover what this process trained; trainLoss the whole epoch.
    last = await withValidation({
      epoch: e + 1, trainLoss: lossSum / samples, testLoss: ev.loss, testAccuracy: ev.accuracy, ...testMetrics(ev),
      samplesPerSecond: trained / seconds, droppedSamples: batcher.droppedPerEpoch, seconds, bubbleFraction,
    });
    history.push(last);
    if (o.earlyStop) {
      const group = host.group();
      // Before the epoch's checkpoint: it holds the decision (and after a stop, the restored state).
      ({ state: earlyStop, stopped: stoppedEarly } = await afterEpoch(earlyStop, last, o.earlyStop,
        { step: group.step, state: () => group.state(), restore: (st) => host.restoreState(st) }));
    }
    keeper.moveTo(position(e + 1, 0, 0, 0));
    if (o.checkpoint && !o.checkpointEvery) await keeper.save(o.checkpoint);
    log?.epoch(last);
    trained = 0; // the epoch is in `last` now: soFar must not count it twice
    await call(o.onEpoch, last, tracer);
    if (stoppedEarly) {
      run.epochs = e + 1;
      break;
    }
  }
  // Stopped early, the run ends on the best epoch's weights: the summary gives that epoch's figures.
  const final = stoppedEarly ? earlyStop.best!.report : last!;
  const summary = await summarizeRun(host, final, trainSeconds > 0 ? trainedSamples / trainSeconds : 0, batcher.droppedPerEpoch, run,
    stoppedEarly ? { stoppedEarly } : {});
  await saveModel(summary);
  return finish(summary, tracer);
}

/** The summary now, from the run's facts and its last epoch. */
async function summarizeRun(
  host: TrainHost, last: EpochReport, samplesPerSecond: number, droppedPerEpoch: number, run: RunSoFar, extra: Partial<TrainSummary> = {},
): Promise<TrainSummary> {
  const { options: o, bounds, spec } = host.plan;
  const weightsSha256 = await host.group().weightsSha256();
  return summarize({
    epochs: run.epochs, weightsSha256, placement: host.plan.placementName, replicas: o.replicas, stages: host.plan.stages, virtualStages: host.plan.virtualStages, kernelThreads: host.meter.kernelThreads ?? host.kernelThreads,
    partition: bounds.slice(1).map((b, i) => b - bounds[i]!), microBatches: o.microBatches, schedule: o.schedule, bubbleFraction: host.meter.fraction,
    backend: host.backendName, optimizer: host.plan.optimizerSpec.type, seed: o.seed, batchSize: o.batchSize, lr: host.plan.optimizerSpec.lr,
    parameters: layerParameterCounts(spec).reduce((a, b) => a + b, 0), transform: host.plan.transformSpec, recoveries: host.recoveries,
    skippedSteps: host.skippedSteps(), history: run.history, started: run.started, resumedFrom: host.keeper.resumedFrom,
  }, last, samplesPerSecond, droppedPerEpoch, { ...timedFacts(host.plan.timedPartition), ...extra });
}

const sizes = (bounds: number[]) => bounds.slice(1).map((b, i) => b - bounds[i]!);
function timedFacts(t: RunPlan['timedPartition']): Partial<TrainSummary> {
  return t ? { timedPartition: { stageMs: t.stageMs, byParameters: { partition: sizes(t.byParameters.bounds), stageMs: t.byParameters.stageMs } } } : {};
}

/** Ends the run log: the summary as returned, the trace, and what the report needs besides. */
async function writeLog(host: TrainHost, log: RunLog, summary: TrainSummary, tracer: StepTracer | null): Promise<void> {
  const { plan } = host;
  const actorNames = host.group().names;
  const usage = host.meter.actors();
  writeRunLog(log, {
    summary, tracer, actorNames, usage, stages: plan.stages, replicas: plan.options.replicas, options: plan.options, model: plan.spec,
    schedule: plan.schedulePlan, confusion: await host.confusionMatrix(),
  });
}
