/** Checkpoints: a resumed run ends bit-identical to an uninterrupted one, across placements. */
import { beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Coordinator, type CoordinatorOptions } from '../coordinator/index.js';
import { loadMnist, subset, type Dataset } from '../src/data/index.js';
import type { ModelSpec } from '../src/nn/index.js';

const spec: ModelSpec = {
  inputShape: [784],
  layers: [
    { type: 'dense', inputs: 784, units: 32 }, { type: 'relu' }, { type: 'dropout', rate: 0.3 },
    { type: 'dense', inputs: 32, units: 10, init: 'xavier' },
  ],
  loss: 'softmaxCrossEntropy',
};
const dir = mkdtempSync(join(tmpdir(), 'chainrule-ckpt-'));
let data: { train: Dataset; test: Dataset };

beforeAll(() => {
  const m = loadMnist();
  data = { train: subset(m.train, Array.from({ length: 256 }, (_, i) => i)), test: subset(m.test, Array.from({ length: 100 }, (_, i) => i)) };
});

async function run(o: CoordinatorOptions): Promise<string> {
  const c = new Coordinator({ model: spec, dataset: data, batchSize: 32, microBatches: 2, optimizer: 'adam', seed: 5, lrSchedule: { type: 'exponential', lr: 0.01, gamma: 0.5 }, ...o });
  try {
    return (await c.train()).weightsSha256;
  } finally {
    await c.close();
  }
}

describe('checkpoints', () => {
  it('save after epoch 2, resume to epoch 3: the same weights as 3 epochs straight, even on another placement', async () => {
    const straight = await run({ epochs: 3 });
    const path = join(dir, 'a.ckpt');
    await run({ epochs: 2, checkpoint: path, placement: 'threads', stages: 2 });
    expect(await run({ epochs: 3, resume: path })).toBe(straight);
  });

  it('refuses a checkpoint of another model, a corrupt file, or a missing one, naming it', async () => {
    const path = join(dir, 'b.ckpt');
    await run({ epochs: 1, checkpoint: path });
    const other = new Coordinator({ model: { ...spec, layers: spec.layers.slice(0, 2).concat([{ type: 'dense', inputs: 32, units: 10 }]) }, dataset: data, batchSize: 32, epochs: 2, resume: path, seed: 5, optimizer: 'adam' });
    await expect(other.train()).rejects.toThrow(/written for another model/);
    await other.close();
    const bad = join(dir, 'bad.ckpt');
    writeFileSync(bad, new Uint8Array([1, 2, 3]));
    await expect(run({ epochs: 2, resume: bad })).rejects.toThrow(/bad\.ckpt/);
    await expect(run({ epochs: 2, resume: join(dir, 'none.ckpt') })).rejects.toThrow(/cannot read checkpoint .*none\.ckpt: ENOENT/);
  });
});
