/**
 * Full-batch training (conjugate gradient, L-BFGS, Newton) from the coordinator: each
 * loss and gradient evaluation is one pipelined pass over the whole (or --full-batch-size)
 * training set, wherever the stages run; the minimizer sees one flat vector.
 */
import { Batcher, type Dataset } from '../src/data/index.js';
import type { ModelSpec } from '../src/nn/index.js';
import { fullBatchMethods, type Objective } from '../src/optim/index.js';
import { InternalError, lookup } from '../src/errors.js';
import type { Schedule } from '../src/wire/index.js';
import { pipelineStep, shardMinibatch, type TraceAsk } from './pipeline.js';
import type { StageGroup } from './stage-group.js';
import { BubbleMeter, testMetrics, type EpochReport } from './summary.js';
import type { Evaluation } from './evaluate.js';

/** The batch is cut into micro-batches of `batchSize` samples (per replica). */
export function fullBatchPlan(train: Dataset, batchSize: number, replicas: number, fullBatchSize?: number): { samples: number; microBatches: number } {
  const n = Math.min(fullBatchSize ?? train.size, train.size);
  const microBatches = Math.max(1, Math.floor(n / (batchSize * replicas)));
  return { samples: microBatches * batchSize * replicas, microBatches };
}

export interface FullBatchRun {
  method: string;
  group: StageGroup;
  spec: ModelSpec;
  train: Dataset;
  seed: number;
  epochs: number;
  iterationsPerEpoch: number;
  plan: { samples: number; microBatches: number };
  schedule: Schedule;
  meter: BubbleMeter;
  /** Test loss and metrics at the current parameters. */
  evaluate(): Promise<Evaluation>;
  onEpoch?: (r: EpochReport) => void | Promise<void>;
  /** Traces the pipelined passes its tracer wants. */
  trace?: TraceAsk;
}

export async function trainFullBatch(run: FullBatchRun): Promise<{ last: EpochReport; samplesPerSecond: number; gradEvals: number; lossEvals: number }> {
  const { group, plan } = run;
  const method = lookup(fullBatchMethods, run.method);
  if (!method) throw new InternalError(`trainFullBatch: no full-batch method '${run.method}'`);
  const order = new Batcher(run.train, { batchSize: plan.samples, seed: run.seed }).epoch(0).next().value!;
  const parts = shardMinibatch(order.x, order.y, group.replicas, plan.microBatches);
  let evalSeconds = 0;
  const objective: Objective = {
    size: group.parameterCount,
    evaluate: async (x) => {
      const t0 = performance.now();
      await group.setFlatParameters(x);
      const loss = await pipelineStep(group, run.spec, parts, run.schedule, run.meter, undefined, run.trace);
      const grad = group.flatten(await group.gradients(), plan.samples);
      group.step++;
      evalSeconds += (performance.now() - t0) / 1000;
      return { loss: loss / plan.samples, grad };
    },
  };
  const per = run.iterationsPerEpoch;
  let last: EpochReport | null = null;
  let epochStart = performance.now();
  let mark = run.meter.mark();
  const report = async (iteration: number, loss: number, x: Float64Array) => {
    await group.setFlatParameters(x);
    const ev = await run.evaluate();
    const seconds = (performance.now() - epochStart) / 1000;
    last = {
      epoch: Math.ceil(iteration / per), trainLoss: loss, testLoss: ev.loss, testAccuracy: ev.accuracy, ...testMetrics(ev),
      samplesPerSecond: (plan.samples * group.step) / Math.max(evalSeconds, 1e-9), droppedSamples: run.train.size - plan.samples, seconds,
      bubbleFraction: BubbleMeter.between(mark, run.meter.mark()),
    };
    mark = run.meter.mark();
    await run.onEpoch?.(last);
    epochStart = performance.now();
  };
  const result = await method(objective, await group.flatParameters(), {
    maxIter: run.epochs * per,
    tol: 1e-7,
    onIteration: async (info) => {
      if (info.iteration % per === 0) await report(info.iteration, info.loss, info.x);
    },
  });
  await group.setFlatParameters(result.x);
  // The last partial epoch (or a run that converged early) still gets its report.
  if (last === null || result.iterations % per !== 0) await report(Math.max(1, result.iterations), result.loss, result.x);
  return { last: last!, samplesPerSecond: (plan.samples * result.gradEvals) / Math.max(evalSeconds, 1e-9), gradEvals: result.gradEvals, lossEvals: result.lossEvals };
}
