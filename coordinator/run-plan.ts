/**
 * Everything a run follows from its options before any actor exists: the data (transformed),
 * the model spec (checked against the data), the optimizer, the learning-rate schedule, the
 * partition into stages, the pipeline schedule and the augmentation. Pure: it starts nothing,
 * and every bad option is refused here, before the Coordinator claims a backend.
 *
 * @example
 * const plan = planRun({ model: 'mlp', dataset: 'mnist', stages: 2 });
 * plan.bounds   // stage k runs the layers [bounds[k], bounds[k+1])
 */
import { fitTransform, applyTransform, validateAugmentOptions, type AugmentOptions, type Dataset, type TransformSpec } from '../src/data/index.js';
import { layerParameterCounts, type ModelSpec } from '../src/nn/index.js';
import { createOptimizer, createLrSchedule, fullBatchMethods, type LrSchedule, type LrScheduleSpec, type OptimizerSpec } from '../src/optim/index.js';
import type { Schedule } from '../src/wire/index.js';
import { lookup } from '../src/errors.js';
import { getSchedule, validateSchedule } from './schedules/index.js';
import { balancedPartition, explicitPartition } from './partition.js';
import { timedPartition, type TimedPartition } from './partition-auto.js';
import { AUTO_COMMIT_MAX_STEPS } from './recovery.js';
import { resolveDataset, resolveModel, type DataSplit } from './inputs.js';
import { OptionError, resolveOptions, optimizerSpecOf, lrScheduleOf, type CoordinatorOptions, type ResolvedOptions } from './options.js';
import { checkModelFitsData } from './fit.js';
import { holdOut } from './validation.js';

export interface RunPlan {
  readonly options: ResolvedOptions;
  /** The training split without its held-out part, and the test split. */
  readonly data: DataSplit;
  /** The last `validationSplit` of the training set (transformed as the rest), or null. */
  readonly validation: Dataset | null;
  readonly spec: ModelSpec;
  readonly transformSpec: TransformSpec | undefined;
  readonly optimizerSpec: OptimizerSpec;
  /** Set for full-batch methods: the name of the method. */
  readonly fullBatch: string | null;
  /** The schedule over the whole run's steps (kept in checkpoints), and the rate it gives at a step. */
  readonly lrSchedule: LrScheduleSpec | null;
  readonly lrAt: LrSchedule | null;
  /** Stage k runs the layers [bounds[k], bounds[k+1]). */
  readonly bounds: number[];
  /** The stage actors of a replica: K·V with virtual stages (each a chunk), else K. */
  readonly stages: number;
  /** Chunks per device (options.virtualStages); the devices are stages / virtualStages. */
  readonly virtualStages: number;
  /** With `--partition auto`: the measured layer costs behind the cut. */
  readonly timedPartition: TimedPartition | null;
  /** Parameters per stage, from the spec and the partition. */
  readonly stageParameters: number[];
  readonly stepsPerEpoch: number;
  /** One action list per device (= per stage, but with virtual stages); actions name their stage. */
  readonly schedulePlan: Schedule;
  readonly augment: Required<AugmentOptions> | null;
  /** Steps between the commits a lost actor is rebuilt from; 0: no recovery (local placement by default, full-batch methods). */
  readonly commitEvery: number | 'auto';
  /** The most steps a recovery's commit can lag behind (0: no recovery). */
  readonly commitLag: number;
  readonly placementName: string;
  /** Threads of this host that compute at once (local: 1; threads: one per device of every replica; elsewhere null: not this host's). */
  readonly computingThreadsHere: number | null;
}

/** Resolves and checks the options and derives the run from them; throws the first bad option's error. */
export function planRun(opts: CoordinatorOptions = {}): RunPlan {
  const o = resolveOptions(opts);
  const augment = { shift: o.augmentShift, rotate: o.augmentRotate, noise: o.noise };
  const given = Object.values(augment).some((v) => v !== undefined);
  const augmentation = given ? validateAugmentOptions(Object.fromEntries(Object.entries(augment).filter(([, v]) => v !== undefined))) : null;
  let data = typeof o.dataset === 'string' ? resolveDataset(o.dataset, { labelColumn: o.labelColumn, targetColumns: o.targetColumns, seed: o.seed }) : o.dataset;
  // Held out before the transform is fitted: no statistic of the validation samples reaches the model.
  const held = holdOut(data.train, o.validationSplit, o.batchSize);
  if (held.validation) data = { train: held.train, test: data.test };
  let validation = held.validation;
  let transformSpec: TransformSpec | undefined;
  if (o.transform !== 'none') {
    // Statistics from the training split only; the test and validation splits reuse them.
    transformSpec = fitTransform(o.transform, data.train);
    data = { train: applyTransform(transformSpec, data.train), test: applyTransform(transformSpec, data.test) };
    if (validation) validation = applyTransform(transformSpec, validation);
  }
  if (o.batchSize > data.train.size) throw new OptionError(`options.batchSize ${o.batchSize} is larger than the training set (${data.train.size} samples)`);
  const spec = resolveModel(o.model, data);
  checkModelFitsData(spec, [data.train, data.test, ...(validation ? [validation] : [])], typeof o.model === 'string' ? o.model : 'model spec');
  const optimizerSpec = optimizerSpecOf(o);
  const fullBatch = lookup(fullBatchMethods, optimizerSpec.type) ? optimizerSpec.type : null;
  if (!fullBatch) createOptimizer(optimizerSpec); // validates the hyperparameters now
  if (fullBatch && (o.checkpoint || o.resume || o.earlyStop)) {
    throw new OptionError(`options.${o.checkpoint ? 'checkpoint' : o.resume ? 'resume' : 'earlyStop'} is not supported with the full-batch optimizer ${fullBatch}`);
  }
  const stepsPerEpoch = Math.floor(data.train.size / o.batchSize);
  const schedule = lrScheduleOf(o);
  const lrSchedule = schedule ? schedule(o.epochs * stepsPerEpoch) : null;
  const lrAt = lrSchedule ? createLrSchedule(lrSchedule) : null;
  const counts = layerParameterCounts(spec);
  const V = o.virtualStages;
  if (V > 1 && fullBatch) throw new OptionError(`options.virtualStages ${V} is not supported with the full-batch optimizer ${fullBatch}`, 'use options.virtualStages 1');
  const chunks = o.stages * V;
  if (V > 1 && chunks > counts.length) {
    throw new OptionError(`options.stages ${o.stages} × options.virtualStages ${V} makes ${chunks} chunks, but the model has ${counts.length} layers to cut`,
      `use at most ${Math.floor(counts.length / o.stages)} virtual stages with ${o.stages} stages`);
  }
  const timed = o.partition === 'auto' && chunks > 1 && !fullBatch
    ? timedPartition(spec, chunks, { microBatch: o.batchSize / (o.replicas * o.microBatches), microBatches: o.microBatches, optimizer: optimizerSpec, layerParameters: counts, data: data.train, seed: o.seed, backend: o.backend })
    : null;
  const bounds = timed ? timed.bounds : Array.isArray(o.partition) ? explicitPartition(o.partition, counts.length) : balancedPartition(counts, chunks);
  const stages = bounds.length - 1;
  const stageParameters = bounds.slice(1).map((end, k) => counts.slice(bounds[k], end).reduce((a, b) => a + b, 0));
  const devices = stages / V;
  const schedulePlan = V > 1 ? getSchedule(o.schedule)(devices, o.microBatches, V) : getSchedule(o.schedule)(stages, o.microBatches);
  validateSchedule(schedulePlan, devices, o.microBatches, V);
  const placementName = typeof o.placement === 'string' ? o.placement : o.placement.kind;
  const commitEvery = fullBatch ? 0 : o.commitEvery ?? (o.placement === 'local' ? 0 : 'auto');
  if (o.spares && o.placement !== 'grpc') throw new OptionError(`options.spares is only used with options.placement grpc (got ${placementName})`);
  return {
    options: o, data, validation, spec, transformSpec, optimizerSpec, fullBatch, lrSchedule, lrAt,
    bounds, timedPartition: timed, stages, virtualStages: V, stageParameters, stepsPerEpoch, schedulePlan, augment: augmentation, commitEvery, commitLag: commitEvery === 'auto' ? AUTO_COMMIT_MAX_STEPS : commitEvery, placementName,
    computingThreadsHere: o.placement === 'local' ? 1 : o.placement === 'threads' ? o.replicas * devices : null,
  };
}
