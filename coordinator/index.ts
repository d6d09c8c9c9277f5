/**
 * chainrule's public API: `import { Coordinator } from 'chainrule'`.
 * The library underneath (tensors, autograd, layers, optimizers, data) is re-exported
 * under namespaces so that one import reaches everything.
 */
export { Coordinator } from './coordinator.js';
export { displayOnly } from './train-loop.js';
export { OptionError, optionTable, resolveOptions, type CoordinatorOptions, type ResolvedOptions } from './options.js';
export type { EpochReport, ResumedFrom, StepInfo, TrainSummary } from './summary.js';
export { CheckpointError, listCheckpoints, readCheckpoint, verifyCheckpoint, type CheckpointContent, type LoadedCheckpoint } from './checkpoint.js';
export { readRunLog, renderReport, writeReport } from './report.js';
export { RunLogError, runLogFiles, type RunRecord } from './run-log.js';
export type { ChromeTrace, ClockOffset } from './trace.js';
export { ChainruleError, InternalError, isUserError } from '../src/errors.js';
export { main as cli } from './cli.js';
export { tuneHeap } from '../node/heap.js';
export { loadModel, saveModel, readPredictInput, SavedModel, SavedModelError, type ModelToSave } from './saved-model.js';
export * from './transports/index.js';
export * from './schedules/index.js';
export { balancedPartition, explicitPartition, PartitionError } from './partition.js';
export { StageActor } from '../node/stage.js';
export * as tensor from '../src/tensor/index.js';
export * as autograd from '../src/autograd/index.js';
export * as nn from '../src/nn/index.js';
export * as optim from '../src/optim/index.js';
export * as data from '../src/data/index.js';
export * as wire from '../src/wire/index.js';
