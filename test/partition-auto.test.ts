/**
 * `--partition auto`: stages cut by measured time. The cut is the best one for the measured
 * layer costs (never worse than the cut by parameters under the same costs), and, as every
 * partition does, it trains to the same weights.
 */
import { describe, expect, it } from 'vitest';
import { Coordinator, type CoordinatorOptions } from '../coordinator/index.js';
import { parseCliOptions } from '../coordinator/options.js';
import { loadMnist, subset } from '../src/data/index.js';
import type { ModelSpec } from '../src/nn/index.js';

const spec: ModelSpec = {
  inputShape: [784],
  layers: [
    { type: 'dense', inputs: 784, units: 64, init: 'he' }, { type: 'relu' },
    { type: 'dense', inputs: 64, units: 64, init: 'he' }, { type: 'relu' },
    { type: 'dense', inputs: 64, units: 64, init: 'he' }, { type: 'relu' },
    { type: 'dense', inputs: 64, units: 10, init: 'xavier' },
  ],
  loss: 'softmaxCrossEntropy',
};
const m = loadMnist();
const data = { train: subset(m.train, Array.from({ length: 256 }, (_, i) => i)), test: subset(m.test, Array.from({ length: 64 }, (_, i) => i)) };
const base: CoordinatorOptions = { model: spec, dataset: data, epochs: 1, batchSize: 64, lr: 0.05, seed: 3, microBatches: 4, schedule: '1f1b' };

async function train(o: CoordinatorOptions) {
  const c = new Coordinator({ ...base, ...o });
  try { return await c.train(); } finally { await c.close(); }
}

describe('--partition auto', () => {
  it('cuts by measured time: no stage slower than under the cut by parameters, and the same weights as any cut', async () => {
    const auto = await train({ stages: 3, partition: 'auto', placement: 'local' });
    const t = auto.timedPartition!;
    expect(auto.partition).toHaveLength(3);
    expect(auto.partition.reduce((a, b) => a + b, 0)).toBe(spec.layers.length);
    expect(t.stageMs).toHaveLength(3);
    expect(t.stageMs.every((ms) => ms > 0)).toBe(true);
    // The cut minimizes the slowest stage for the measured costs: the parameter cut cannot beat it.
    expect(Math.max(...t.stageMs)).toBeLessThanOrEqual(Math.max(...t.byParameters.stageMs));
    expect(t.byParameters.partition).toEqual((await train({ stages: 3, placement: 'local' })).partition);
    const threads = await train({ stages: 3, partition: 'auto', placement: 'threads' });
    expect(threads.weightsSha256).toBe(auto.weightsSha256);
    expect((await train({ stages: 1, placement: 'local' })).weightsSha256).toBe(auto.weightsSha256);
  });

  it('is a flag value; anything else but a list of layer counts is refused naming the flag', () => {
    expect(parseCliOptions(['--partition', 'auto', '--stages', '2']).options.partition).toBe('auto');
    expect(parseCliOptions(['--partition', '3,4']).options.partition).toEqual([3, 4]);
    expect(() => parseCliOptions(['--partition', 'fast'])).toThrow(/--partition/);
    expect(() => new Coordinator({ ...base, partition: 'fast' as never })).toThrow(/options\.partition must be a list of positive integers or auto, got 'fast'/);
  });
});
