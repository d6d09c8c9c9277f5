/**
 * `--partition auto`: stages balanced by measured time, not by parameter count. Each layer's
 * forward and backward are timed at the run's micro-batch size for a few passes (as
 * `chainrule plan` profiles them), and its optimizer step once; a layer's cost is what it adds
 * to its stage's step: M forwards, M backwards and one update. Stage 0 skips its input
 * gradient, so balancing parameters leaves the later stages heavier; time sees that.
 *
 * The cut depends on the machine, never the weights: every partition trains bit-identically.
 */
import { Sequential, type ModelSpec } from '../src/nn/index.js';
import { createOptimizer, type OptimizerSpec } from '../src/optim/index.js';
import type { Dataset } from '../src/data/index.js';
import { claimBackend } from '../src/tensor/select.js';
import { balancedPartition } from './partition.js';
import { profileSize } from './plan-profile.js';

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
  const seed = o.seed ?? 42;
  const model = Sequential.fromSpec(spec, seed);
  const r = profileSize(model, spec, o.microBatch, o.repeats ?? 3, o.data, seed, false);
  const L = model.layers.length;
  const optimizer = createOptimizer(o.optimizer);
  const layerMs = model.layers.map((layer, i) => {
    let update = Infinity;
    const refs = layer.params.map(([name, p]) => ({ name: `${i}.${name}`, value: Float32Array.from(p.data), grad: new Float32Array(p.size) }));
    for (let rep = 0; rep < 3 && refs.length > 0; rep++) {
      const t0 = performance.now();
      optimizer.step(refs, { lr: 0, gradScale: 1 });
      update = Math.min(update, performance.now() - t0);
    }
    const loss = i === L - 1 ? r.lossF + r.lossB : 0;
    return o.microBatches * (r.fwd[i]! + r.bwd[i]! + loss) + (refs.length > 0 ? update : 0);
  });
  const bounds = balancedPartition(layerMs, stages);
  const byParameters = balancedPartition(o.layerParameters, stages);
  return { bounds, layerMs, stageMs: stageSums(layerMs, bounds), byParameters: { bounds: byParameters, stageMs: stageSums(layerMs, byParameters) } };
}
