/**
 * Step arenas (src/tensor/arena.ts): the buffers a step allocates are handed out again by the
 * next step. A buffer reused while something still reads it would change the numbers, so the
 * weights after training with arenas must be bit-identical to training with every buffer new,
 * for models whose layers keep state across steps (BatchNorm statistics, deferred weight
 * gradients, dropout streams, recurrent layers, a sampling layer) and for split backwards.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Coordinator, type CoordinatorOptions } from '../coordinator/index.js';
import { Arena, setArenaPoison, setArenasEnabled } from '../src/tensor/arena.js';
import { allocate } from '../src/tensor/tensor.js';
import { lstmSpec, vaeSpec, type ModelSpec } from '../src/nn/index.js';
import { firstDigits } from './helpers.js';

const data = firstDigits(256, 64);

const convNet: ModelSpec = {
  inputShape: [784],
  layers: [
    { type: 'reshape', shape: [1, 28, 28] },
    { type: 'conv2d', inChannels: 1, outChannels: 4, kernel: 3, padding: 1, init: 'he' },
    { type: 'batchNorm', channels: 4 },
    { type: 'relu' },
    { type: 'maxPool2d', kernel: 2 },
    { type: 'flatten' },
    { type: 'dropout', rate: 0.25 },
    { type: 'dense', inputs: 4 * 14 * 14, units: 32, init: 'he' },
    { type: 'tanh' },
    { type: 'dense', inputs: 32, units: 10, init: 'xavier' },
  ],
  loss: 'softmaxCrossEntropy',
};

async function sha(o: CoordinatorOptions, arenas: boolean): Promise<string> {
  const was = setArenasEnabled(arenas);
  const c = new Coordinator({ dataset: data, epochs: 2, batchSize: 32, seed: 5, ...o });
  try {
    return (await c.train()).weightsSha256;
  } finally {
    await c.close();
    setArenasEnabled(was);
  }
}

afterEach(() => { setArenasEnabled(true); });

describe('step arenas', () => {
  const cases: [string, CoordinatorOptions][] = [
    ['conv + batchNorm + dropout, adam, M=4', { model: convNet, optimizer: 'adam', microBatches: 4 }],
    ['conv net on 2 stages, 1f1b, M=4', { model: convNet, stages: 2, microBatches: 4, schedule: '1f1b' }],
    ['wide-ish MLP, zb-h1 (deferred weight gradients), 2 stages, M=4', { model: 'mlp', stages: 2, microBatches: 4, schedule: 'zb-h1' }],
    ['MLP, 2 replicas, M=2, momentum', { model: 'mlp', replicas: 2, microBatches: 2, optimizer: 'momentum' }],
    ['lstm, M=2', { model: lstmSpec(28, 28, 16), microBatches: 2, optimizer: 'adam' }],
    ['vae (reparameterized sampling)', { model: vaeSpec(784, 32, 4, 10), microBatches: 2, optimizer: 'adam' }],
  ];
  for (const [name, o] of cases) {
    it(`${name}: the same weights as allocating every buffer anew`, async () => {
      const fresh = await sha(o, false);
      expect(await sha(o, true)).toBe(fresh);
    });
  }

  it('threads: the same weights as the local run (workers take from their own arenas)', async () => {
    const o: CoordinatorOptions = { model: convNet, replicas: 2, stages: 2, microBatches: 2, optimizer: 'adam' };
    expect(await sha({ ...o, placement: 'threads' }, true)).toBe(await sha(o, false));
  }, 60_000);

  it('hands the same buffers out again after a reset, zero-filled, and only inside run()', () => {
    const arena = new Arena();
    const a = arena.run(() => allocate('float32', 1000));
    a.fill(7);
    expect(allocate('float32', 1000)).not.toBe(a); // outside run(): a new buffer
    arena.reset();
    const b = arena.run(() => allocate('float32', 1000));
    expect(b).toBe(a);
    expect(b.every((v) => v === 0)).toBe(true);
    // Taken again before the next reset: a different buffer.
    expect(arena.run(() => allocate('float32', 1000))).not.toBe(a);
    expect(arena.stats.reused).toBe(1000);
    expect(() => arena.run(() => Promise.resolve(1))).toThrow(/synchronous/);
  });

  it('poisoned (CHAINRULE_ARENA_POISON=1, with which the whole suite passes): a buffer read after its step shows NaN', () => {
    const was = setArenaPoison(true);
    try {
      const arena = new Arena();
      const stale = arena.run(() => allocate('float32', 100));
      stale.fill(1);
      arena.reset();
      expect(Number.isNaN(stale[0]!)).toBe(true);
      // A correct next use still gets zeros.
      expect(arena.run(() => allocate('float32', 100)).every((v) => v === 0)).toBe(true);
    } finally {
      setArenaPoison(was);
    }
  });
});
