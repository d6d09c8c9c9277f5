/**
 * Stopping a real `chainrule node` process with SIGTERM or SIGINT: it reports NOT_SERVING,
 * refuses new runs naming itself, answers the call it was serving, and exits 0; a coordinator
 * whose node drains mid-run goes on on a spare with the uninterrupted run's weights.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { firstDigits, startNodeProcess, tinySpec, type NodeProcess } from './helpers.js';
import type { ChildProcess } from 'node:child_process';
import { Coordinator, type CoordinatorOptions } from '../coordinator/index.js';
import { nodeMain } from '../node/cli.js';
import { startNode } from '../node/server.js';
import { healthStatus, makeClient, unary } from '../node/grpc-common.js';
import { Tensor } from '../src/tensor/tensor.js';
import { formatAction, type Reply } from '../src/wire/index.js';
import { gpipe } from '../coordinator/schedules/index.js';


const children: ChildProcess[] = [];
afterAll(() => { for (const c of children) if (c.exitCode === null) c.kill('SIGKILL'); });

/** A real `chainrule node` on a free loopback port, its log kept. */
async function nodeProcess(...args: string[]): Promise<NodeProcess> {
  const n = await startNodeProcess(['--port', '0', ...args]);
  children.push(n.child);
  return n;
}

describe('chainrule node drains on SIGTERM and SIGINT', () => {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`an idle node exits 0 at ${signal}, logging each phase`, async () => {
      const n = await nodeProcess('--drain-timeout', '60s');
      n.child.kill(signal);
      expect(await n.exited).toBe(0);
      expect(n.stderr()).toMatch(new RegExp(`draining ${signal}: health NOT_SERVING, no new runs or calls; 0 calls in flight`));
      expect(n.stderr()).toMatch(/stopped drained cleanly in \d+ ms/);
    });
  }

  it('refuses a bad --drain-timeout', async () => {
    expect(await nodeMain(['--port', '0', '--drain-timeout', 'soon'])).toBe(2);
  });

  it('mid-step: NOT_SERVING and no new runs while the call in flight finishes and is answered; then exit 0', async () => {
    // Stage 1 on the node process, stage 0 on a node in this process: stage 1's runStep waits
    // for stage 0's activation, which is sent only after the signal.
    const n1 = await nodeProcess('--drain-timeout', '60s');
    const n0 = await startNode({ port: 0, log: false });
    const model = { inputShape: [4], layers: [{ type: 'dense', inputs: 4, units: 8 }, { type: 'relu' }, { type: 'dense', inputs: 8, units: 3 }], loss: 'softmaxCrossEntropy' };
    const c0 = makeClient(n0.address);
    const c1 = makeClient(n1.address);
    try {
      const run = 'drain-run';
      const at = (k: number) => ({ run, stage: k, replica: 0, step: 0, microBatch: -1 });
      const call = async (k: number, body: object): Promise<Reply> => (await unary(k === 0 ? c0 : c1, k === 0 ? n0.address : n1.address, 'Call', { ...at(k), ...body } as never, 30_000)) as Reply;
      expect((await call(0, { type: 'configure', config: { model, start: 0, end: 2, seed: 1, capacity: 1 } })).type).toBe('configured');
      expect((await call(1, { type: 'configure', config: { model, start: 2, end: 3, seed: 1, capacity: 1 } })).type).toBe('configured');
      expect((await call(0, { type: 'connect', next: { address: n1.address, stage: 1 } })).type).toBe('ok');
      expect((await call(1, { type: 'connect', prev: { address: n0.address, stage: 0 } })).type).toBe('ok');
      const actions = gpipe(2, 1).map((a) => a.map(formatAction));
      const x = new Tensor(Float32Array.from({ length: 8 }, (_, i) => i / 8), [2, 4]);
      const stage1 = call(1, { type: 'runStep', actions: actions[1], targets: [Int32Array.from([0, 2])] });
      // Calls on one channel reach the node in order: once this one is answered, the runStep is being served.
      expect((await call(1, { type: 'getParams' })).type).toBe('tensors');

      n1.child.kill('SIGTERM');
      await n1.waitFor(/draining SIGTERM: .*1 call in flight/);
      expect(await healthStatus(c1, 5_000)).toBe('NOT_SERVING');
      const refused = await call(1, { ...at(1), run: 'another-run', type: 'configure', config: { model, start: 2, end: 3, seed: 1, capacity: 1 } });
      expect(refused.type).toBe('error');
      expect((refused as { code: string }).code).toBe('NODE_DRAINING');
      expect((refused as { message: string }).message).toContain(`node ${n1.address} is shutting down (SIGTERM)`);

      // The step goes on: stage 0's activation is still delivered, and both stages answer.
      const stage0 = await call(0, { type: 'runStep', actions: actions[0], inputs: [x] });
      expect(stage0.type).toBe('stepDone');
      const done = await stage1;
      expect(done.type).toBe('stepDone');
      expect((done as Extract<Reply, { type: 'stepDone' }>).report.losses[0]).toBeGreaterThan(0);
      expect(await n1.exited).toBe(0);
      expect(n1.stderr()).toMatch(/draining the call in flight answered after \d+ ms/);
      expect(n1.stderr()).toMatch(/run drain-run closed: the node is shutting down/);
      expect(n1.stderr()).toMatch(/stopped drained cleanly/);
    } finally {
      c0.close();
      c1.close();
      await n0.close();
    }
  });

  it('a coordinator whose node drains mid-run goes on on a spare, with the same weights; the node exits 0', async () => {
    const spec = tinySpec;
    const data = firstDigits();
    const base: CoordinatorOptions = { model: spec, dataset: data, epochs: 2, batchSize: 32, lr: 0.1, seed: 3, stages: 2, microBatches: 2, optimizer: 'momentum' };
    const train = async (o: CoordinatorOptions) => {
      const c = new Coordinator({ ...base, ...o });
      try { return await c.train(); } finally { await c.close(); }
    };
    const [a, b, spare] = [await nodeProcess(), await nodeProcess(), await nodeProcess()];
    let sent = false;
    const s = await train({ placement: 'grpc', nodes: [a.address, b.address], spares: [spare.address], onStep: (r) => { if (r.step === 3 && !sent) { sent = true; b.child.kill('SIGTERM'); } } });
    expect(s.weightsSha256).toBe((await train({ placement: 'local' })).weightsSha256);
    expect(s.recoveries).toHaveLength(1);
    expect(s.recoveries[0]!.replacement).toBe(spare.address);
    expect(s.recoveries[0]!.failed).toContain(b.address);
    expect(await b.exited).toBe(0);
    expect(b.stderr()).toMatch(/draining SIGTERM/);
    for (const n of [a, spare]) n.child.kill('SIGTERM');
    expect(await Promise.all([a.exited, spare.exited])).toEqual([0, 0]);
  });
});
