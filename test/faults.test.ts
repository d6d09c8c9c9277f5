/**
 * Faults for real: a gRPC node process killed (SIGKILL) or hung (SIGSTOP) mid-epoch, a worker
 * thread terminated. Each run notices, rebuilds the lost actors (on a spare node, or in this
 * process), restores the last commit, replays, and ends with the uninterrupted run's weights.
 */
import { afterAll, describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { startNodeProcess, trainClosed } from './helpers.js';
import { join } from 'node:path';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { Coordinator, ThreadsTransport, type CoordinatorOptions } from '../coordinator/index.js';
import { Batcher, loadMnist, subset } from '../src/data/index.js';
import { Tensor } from '../src/tensor/tensor.js';
import type { ModelSpec } from '../src/nn/index.js';

const spec: ModelSpec = {
  inputShape: [784],
  layers: [
    { type: 'dense', inputs: 784, units: 32, init: 'he' }, { type: 'relu' }, { type: 'dropout', rate: 0.1 },
    { type: 'dense', inputs: 32, units: 10, init: 'xavier' },
  ],
  loss: 'softmaxCrossEntropy',
};
const m = loadMnist();
const data = { train: subset(m.train, Array.from({ length: 320 }, (_, i) => i)), test: subset(m.test, Array.from({ length: 100 }, (_, i) => i)) };
const base: CoordinatorOptions = { model: spec, dataset: data, epochs: 2, batchSize: 32, lr: 0.1, seed: 4, stages: 2, microBatches: 2, schedule: '1f1b', optimizer: 'momentum' };

const children: ChildProcess[] = [];
afterAll(() => { for (const c of children) { c.kill('SIGCONT'); c.kill('SIGKILL'); } });

/** A real `chainrule node` process on a free loopback port. */
async function nodeProcess(): Promise<{ address: string; child: ChildProcess }> {
  const n = await startNodeProcess(['--port', '0']);
  children.push(n.child);
  return n;
}

const run = (o: CoordinatorOptions) => trainClosed({ ...base, ...o });

let uninterrupted: Promise<string> | null = null;
/** The uninterrupted run's weights (local), computed once whichever test asks first. */
const reference = () => (uninterrupted ??= run({ placement: 'local' }).then((s) => s.weightsSha256));

describe('surviving the loss of an actor', () => {
  for (const signal of ['SIGKILL', 'SIGSTOP'] as const) {
    it(`${signal} to a gRPC node mid-epoch: a spare takes over, same weights`, async () => {
      const [a, b, spare] = [await nodeProcess(), await nodeProcess(), await nodeProcess()];
      let killed = false;
      const s = await run({
        placement: 'grpc', nodes: [a.address, b.address], spares: [spare.address], commitEvery: 1,
        onStep: (r) => { if (r.step === 4 && !killed) { killed = true; b.child.kill(signal); } },
      });
      expect(s.weightsSha256).toBe(await reference());
      expect(s.recoveries).toHaveLength(1);
      const rec = s.recoveries[0]!;
      expect(rec.replacement).toBe(spare.address);
      expect(rec.step).toBe(4);
      expect(rec.stepsReplayed).toBe(0);
      // Loosely (not a timing test): noticed in seconds, not at a 2-minute deadline.
      expect(rec.detectedMs).toBeLessThan(10_000);
      expect(rec.recoveryMs).toBeGreaterThan(0);
      if (signal === 'SIGKILL') expect(rec.failed).toContain(b.address);
    });
  }

  it('by default (auto) the coordinator fetches commits as often as they cost 5% of the time: a lost node still ends with the same weights', async () => {
    const [a, b, spare] = [await nodeProcess(), await nodeProcess(), await nodeProcess()];
    let killed = false;
    const s = await run({ placement: 'grpc', nodes: [a.address, b.address], spares: [spare.address], onStep: (r) => { if (r.step === 7 && !killed) { killed = true; b.child.kill('SIGKILL'); } } });
    expect(s.weightsSha256).toBe(await reference());
    expect(s.recoveries).toHaveLength(1);
    expect(s.recoveries[0]!.stepsReplayed).toBeLessThanOrEqual(7);
  });

  it('a node lost with no spare: its actors move into this process, with a warning, same weights', async () => {
    const [a, b] = [await nodeProcess(), await nodeProcess()];
    let killed = false;
    const s = await run({ placement: 'grpc', nodes: [a.address, b.address], commitEvery: 3, onStep: (r) => { if (r.step === 5 && !killed) { killed = true; a.child.kill('SIGKILL'); } } });
    expect(s.weightsSha256).toBe(await reference());
    expect(s.recoveries[0]!.replacement).not.toBe(a.address);
    expect(s.recoveries[0]!.stepsReplayed).toBe(2); // commits after steps 3 and 6: steps 3 and 4 are replayed
  });

  it('a second loss with no spare left fails naming the node, after writing a checkpoint', async () => {
    const [a, b] = [await nodeProcess(), await nodeProcess()];
    const dir = mkdtempSync(join(tmpdir(), 'chainrule-faults-'));
    let kills = 0;
    const err = await run({
      placement: 'grpc', nodes: [a.address, b.address], checkpoint: join(dir, 'ckpt'), commitEvery: 1,
      onStep: (r) => { if (r.step === 3 && kills === 0) { kills++; b.child.kill('SIGKILL'); } else if (r.step === 6 && kills === 1) { kills++; a.child.kill('SIGKILL'); } },
    }).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(new RegExp(`node ${a.address.replace(/\./g, '\\.')} was lost at step 6 and no spare is left.*checkpoint of step 6 written to .*ckpt`));
    expect(existsSync(join(dir, 'ckpt'))).toBe(true);
  });

  it('replicas on gRPC keep their own commits: a lost node\'s stages are read from the surviving replica, same weights', async () => {
    const [a, b, spare] = [await nodeProcess(), await nodeProcess(), await nodeProcess()];
    let killed = false;
    // Four actors on two nodes, replica-major: replica 0 on a, replica 1 on b.
    const o = { replicas: 2, commitEvery: 3 } as const;
    const s = await run({ ...o, placement: 'grpc', nodes: [a.address, a.address, b.address, b.address], spares: [spare.address],
      onStep: (r) => { if (r.step === 7 && !killed) { killed = true; a.child.kill('SIGKILL'); } } });
    const local = await run({ ...o, placement: 'local' });
    expect(s.weightsSha256).toBe(local.weightsSha256);
    expect(s.recoveries).toHaveLength(1);
    expect(s.recoveries[0]!.failed).toContain(a.address);
    expect(s.recoveries[0]!.stepsReplayed).toBe(1); // commits kept as steps 3 and 6 start: 6 is replayed, 7 run again
  });

  it('thread replicas keep their commits in shared memory, which outlives a terminated thread: same weights', async () => {
    const transport = new ThreadsTransport();
    let killed = false;
    const o = { replicas: 2, commitEvery: 4, optimizer: 'adam', lr: 0.01 } as const;
    const s = await run({ ...o, placement: transport, onStep: (r) => { if (r.step === 9 && !killed) { killed = true; void transport.threads[0]!.terminate(); } } });
    const local = await run({ ...o, placement: 'local' });
    expect(s.weightsSha256).toBe(local.weightsSha256);
    expect(s.recoveries).toHaveLength(1);
    expect(s.recoveries[0]!.stepsReplayed).toBeGreaterThanOrEqual(1); // the commit kept as step 8 started
  });

  it('by default (auto) thread actors commit every 8 steps: a lost thread, same weights', async () => {
    const transport = new ThreadsTransport();
    let killed = false;
    const o = { replicas: 2, optimizer: 'adam', lr: 0.01 } as const;
    const s = await run({ ...o, placement: transport, onStep: (r) => { if (r.step === 11 && !killed) { killed = true; void transport.threads[1]!.terminate(); } } });
    const local = await run({ ...o, placement: 'local' });
    expect(s.weightsSha256).toBe(local.weightsSha256);
    expect(s.recoveries).toHaveLength(1);
    expect(s.recoveries[0]!.stepsReplayed).toBeLessThanOrEqual(8);
  });

  it('a caller that refills one minibatch buffer for every step: the replay after a lost thread sees what each step saw', async () => {
    // The shards sent to the actors are views of the caller's minibatch; the inputs a
    // recovery replays must be the coordinator's own copies.
    const batches = [...new Batcher(data.train, { batchSize: 32, seed: 4 }).epoch(0)];
    const train = async (placement: CoordinatorOptions['placement'], kill?: ThreadsTransport) => {
      const c = new Coordinator({ ...base, placement, commitEvery: 4 });
      await c.open();
      const run = c.run;
      try {
        const x = new Tensor(new Float32Array(batches[0]!.x.size), batches[0]!.x.shape);
        const y = new Int32Array(32);
        for (const [i, b] of batches.entries()) {
          x.data.set(b.x.data);
          y.set(b.y);
          if (kill && i === 6) void kill.threads[1]!.terminate();
          await c.step(x, y);
        }
        return { sha: await c.weightsSha256(), recovered: c.run !== run };
      } finally {
        await c.close();
      }
    };
    const transport = new ThreadsTransport();
    const threads = await train(transport, transport);
    const local = await train('local');
    expect(threads.recovered).toBe(true); // a new run id: rebuilt, restored, replayed
    expect(local.recovered).toBe(false);
    expect(threads.sha).toBe(local.sha);
  });

  it('a worker thread terminated mid-epoch: rebuilt, same weights', async () => {
    const transport = new ThreadsTransport();
    let killed = false;
    const s = await run({ placement: transport, onStep: (r) => { if (r.step === 6 && !killed) { killed = true; void transport.threads[1]!.terminate(); } } });
    expect(s.weightsSha256).toBe(await reference());
    expect(s.recoveries).toHaveLength(1);
    expect(s.recoveries[0]!.failed).toMatch(/worker thread/);
  });
});
