/**
 * Recovery commits kept by the actors (node/commit-store.ts): what is read back is what was
 * written, a torn copy never hides the previous commit, and a missing one is named.
 */
import { describe, expect, it } from 'vitest';
import { CommitStore, type LiveState } from '../node/commit-store.js';

function state(seed: number): LiveState {
  const w = Float32Array.from({ length: 6 }, (_, i) => seed + i / 7);
  const mean = Float64Array.from({ length: 3 }, (_, i) => seed * 10 + i);
  const m = Float32Array.from({ length: 6 }, (_, i) => -seed - i);
  return { params: [['0.W', w, [2, 3]]], buffers: [['1.runningMean', mean, [3]]], optimizer: { type: 'adam', t: seed, slots: { '0.W': { m } } }, lastStep: seed - 1 };
}

describe('CommitStore', () => {
  it('reads back the state of the step asked for, with shapes, dtypes and optimizer slots', () => {
    const store = new CommitStore();
    store.write(3, state(3));
    store.write(6, state(6));
    const s = CommitStore.read([store.buffers], 3, 'stage 0');
    expect(s.lastStep).toBe(2);
    expect(s.params['0.W']!.shape).toEqual([2, 3]);
    expect([...s.params['0.W']!.data]).toEqual([...state(3).params[0]![1]]);
    expect(s.buffers['1.runningMean']!.data).toBeInstanceOf(Float64Array);
    expect([...s.buffers['1.runningMean']!.data]).toEqual([30, 31, 32]);
    expect(s.optimizer).toMatchObject({ type: 'adam', t: 3 });
    expect([...s.optimizer!.slots['0.W']!.m!.data]).toEqual([...state(3).optimizer!.slots['0.W']!.m!]);
    expect(CommitStore.read([store.buffers], 6, 'stage 0').optimizer!.t).toBe(6);
  });

  it('a copy torn by a dying writer leaves the previous commit readable, and is named', () => {
    const store = new CommitStore();
    store.write(3, state(3));
    store.write(6, state(6));
    // The writer of step 9 died mid-copy: it had cleared its buffer's complete flag (the older one, step 3's).
    const older = store.buffers.find((b) => new Float64Array(b, 8, 1)[0] === 3)!;
    Atomics.store(new Int32Array(older, 0, 2), 0, 0);
    expect(CommitStore.read([store.buffers], 6, 'stage 1').lastStep).toBe(5);
    expect(() => CommitStore.read([store.buffers], 3, 'stage 1')).toThrow(/stage 1: no complete commit of step 3 is kept \(it holds (step 6, a torn copy|a torn copy, step 6)\)/);
  });

  it('replicas each keep a share: the shares together are the whole state, a missing share is named', () => {
    const shares = [0, 1, 2].map((index) => { const st = new CommitStore(); st.write(5, state(5), { index, of: 3 }); return st; });
    const whole = new CommitStore();
    whole.write(5, state(5));
    const read = CommitStore.read(shares.map((st) => st.buffers), 5, 'stage 0');
    expect(read).toEqual(CommitStore.read([whole.buffers], 5, 'stage 0'));
    expect([...read.buffers['1.runningMean']!.data]).toEqual([50, 51, 52]);
    // Each share holds about a third of the 15 values.
    expect(shares.map((st) => st.buffers[0]!.byteLength).every((n) => n < whole.buffers[0]!.byteLength)).toBe(true);
    expect(() => CommitStore.read([shares[0]!.buffers, [], shares[2]!.buffers], 5, 'stage 0')).toThrow(/stage 0: no complete commit of step 5 is kept by share 1 \(it holds nothing\)/);
    expect(() => CommitStore.read([shares[0]!.buffers, shares[2]!.buffers], 5, 'stage 0')).toThrow(/cover 10 of 15 values/);
  });

  it('announces its buffers once per allocation, so the coordinator can keep the references', () => {
    const store = new CommitStore();
    expect(store.takeNewBuffers()).toBeNull();
    store.write(0, state(1));
    expect(store.takeNewBuffers()).toHaveLength(1);
    store.write(1, state(1));
    expect(store.takeNewBuffers()).toHaveLength(2);
    store.write(2, state(2));
    expect(store.takeNewBuffers()).toBeNull();
  });
});
