/**
 * `--partition auto`: stages balanced by measured time, not by parameter count. Each layer's
 * forward and backward are timed at the run's micro-batch size for a few passes (as
 * `chainrule plan` profiles them), and its optimizer step once; a layer's cost is what it adds
 * to its stage's step: M forwards, M backwards and one update. Stage 0 skips its input
 * gradient, so balancing parameters leaves the later stages heavier; time sees that.
 *
 * The cut depends on the machine, never the weights: every partition trains bit-identically.
 */
import type { ModelSpec } from '../src/nn/index.js';
import type { OptimizerSpec } from '../src/optim/index.js';
import type { Dataset } from '../src/data/index.js';
import { claimBackend } from '../src/tensor/select.js';
import { balancedPartition } from './partition.js';
import { profileLayers } from './plan-profile.js';

export interface TimedPartition {
  /** The K+1 boundaries. */
  bounds: number[];
  /** Each layer's measured cost per step (ms): M·(forward + backward) + its optimizer step; the loss counts with the last layer. */
  layerMs: number[];
  /** Each stage's predicted compute per step (ms) under this cut, and under the cut by parameters. */
  stageMs: number[];
  byParameters: { bounds: number[]; stageMs: number[] };
}

const stageSums = (costs: number[], bounds: number[]) => bounds.slice(1).map((end, k) => costs.slice(bounds[k], end).reduce((a, b) => a + b, 0));

/**
 * Times the layers of `spec` and cuts it into `stages` stages of about equal time.
 * @example timedPartition(spec, 2, { microBatch: 32, microBatches: 8, optimizer: { type: 'sgd', lr: 0.1 }, layerParameters }).bounds // [0, 5, 9]
 */
export function timedPartition(spec: ModelSpec, stages: number, o: { microBatch: number; microBatches: number; optimizer: OptimizerSpec; layerParameters: number[]; data?: Dataset; seed?: number; repeats?: number; backend?: string }): TimedPartition {
  // Timed on the kernels the run will use.
  const claim = claimBackend(o.backend, '--partition auto');
  try {
    return timed(spec, stages, o);
  } finally {
    claim.release();
  }
}

function timed(spec: ModelSpec, stages: number, o: Parameters<typeof timedPartition>[2]): TimedPartition {
  const mb = o.microBatch;
  const { layers, loss } = profileLayers({ spec, microBatchSizes: [mb], optimizer: o.optimizer, data: o.data, seed: o.seed, repeats: o.repeats ?? 3, helpers: false });
  const last = layers.length - 1;
  // Forward, input gradient and (deferred) weight gradient per micro-batch, as a stage runs them.
  const layerMs = layers.map((l, i) => o.microBatches * (l.forwardMs[mb]! + l.backwardMs[mb]! + (l.weightMs[mb] ?? 0) + (i === last ? loss.forwardMs[mb]! + loss.backwardMs[mb]! : 0)) + l.optimizerMs);
  const bounds = balancedPartition(layerMs, stages);
  const byParameters = balancedPartition(o.layerParameters, stages);
  return { bounds, layerMs, stageMs: stageSums(layerMs, bounds), byParameters: { bounds: byParameters, stageMs: stageSums(layerMs, byParameters) } };
}
