/**
 * Models that last: a trained model saved with --save (or Coordinator.save), loaded with
 * loadModel, used by `chainrule predict` and `evaluate`, and continued with --init.
 */
import { describe, expect, it } from 'vitest';
import { firstDigits, tinySpec } from './helpers.js';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Coordinator, loadModel } from '../coordinator/index.js';
import type { ModelSpec } from '../src/nn/index.js';
import { Tensor } from '../src/tensor/tensor.js';

const spec = tinySpec;
const data = firstDigits(256, 100);
const bin = join(import.meta.dirname, '..', 'coordinator', 'bin.ts');
const chainrule = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', bin, ...args], { encoding: 'utf8', timeout: 120_000 });
const bits = (t: Tensor) => Buffer.from(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));

describe('saved models', () => {
  it('predictions from the saved model equal the live one bit for bit (threads, 2 stages, standardized inputs)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'chainrule-save-'));
    const c = new Coordinator({ model: spec, dataset: data, epochs: 1, batchSize: 32, placement: 'threads', stages: 2, transform: 'standardize', save: dir });
    try {
      const summary = await c.train();
      const saved = loadModel(dir);
      expect(saved.metadata['weightsSha256']).toBe(summary.weightsSha256);
      const live = await c.predict(new Tensor(c.data.test.inputs, [c.data.test.size, 784]));  // transformed already
      const fromFile = saved.predict(new Tensor(data.test.inputs, [data.test.size, 784]));  // the saved transform applied by the model
      expect(bits(fromFile).equals(bits(live))).toBe(true);
      expect(saved.evaluate(data.test).accuracy).toBe(summary.testAccuracy);
    } finally {
      await c.close();
    }
  });

  it('--init starts from the saved weights exactly', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'chainrule-init-'));
    const a = new Coordinator({ model: spec, dataset: data, epochs: 1, batchSize: 32, seed: 3 });
    await a.train();
    await a.save(dir);
    const want = await a.weightsSha256();
    await a.close();
    const b = new Coordinator({ model: spec, dataset: data, epochs: 1, batchSize: 32, seed: 9, init: dir, stages: 2 });
    try {
      expect(await b.weightsSha256()).toBe(want);
    } finally {
      await b.close();
    }
    const other: ModelSpec = { ...spec, layers: [...spec.layers.slice(0, 2), { type: 'dense', inputs: 32, units: 10, init: 'he' }] };
    const c = new Coordinator({ model: other, dataset: data, batchSize: 32, init: dir });
    await expect(c.open()).rejects.toThrow(/options.init: the model saved in .* has another spec/);
    await c.close();
  });

  it('chainrule train --save, then predict and evaluate from the command line', () => {
    const dir = mkdtempSync(join(tmpdir(), 'chainrule-cli-save-'));
    const model = join(dir, 'model');
    const specFile = join(dir, 'spec.json');
    writeFileSync(specFile, JSON.stringify(spec));
    const t = chainrule('train', '--model', specFile, '--epochs', '1', '--batch-size', '500', '--save', model, '--json');
    // With --json, standard output is the summary alone; the epoch lines went to standard error.
    expect(t.stderr).not.toMatch(/error/i);
    expect(t.status).toBe(0);
    const summary = JSON.parse(t.stdout);
    const rows = Array.from({ length: 5 }, (_, i) => Array.from(data.test.inputs.subarray(i * 784, (i + 1) * 784)).join(','));
    const input = join(dir, 'five.csv');
    writeFileSync(input, rows.join('\n') + '\n');
    const p = chainrule('predict', '--model', model, '--input', input);
    expect(p.status).toBe(0);
    const x = new Tensor(data.test.inputs.slice(0, 5 * 784), [5, 784]);
    expect(p.stdout.trim().split('\n').map(Number)).toEqual(Array.from(loadModel(model).predictClasses(x)));
    const e = chainrule('evaluate', '--model', model, '--dataset', 'mnist', '--json');
    expect(e.status).toBe(0);
    expect(JSON.parse(e.stdout).accuracy).toBe(summary.testAccuracy);
    const missing = chainrule('predict', '--model', join(dir, 'nowhere'), '--input', input);
    expect(missing.status).toBe(2);
    expect(missing.stderr).toMatch(/nowhere/);
  });
});
