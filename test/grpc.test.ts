/** gRPC nodes on real loopback sockets: validation, errors that name the node, a node that is down. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer } from 'node:net';
import { startNode, type RunningNode } from '../node/server.js';
import { makeClient, unary } from '../node/grpc-common.js';
import { GrpcTransport, TransportError } from '../coordinator/transports/index.js';
import { Coordinator } from '../coordinator/index.js';
import { Tensor } from '../src/tensor/tensor.js';
import { encodeMessage, expectReply, decodeMessage, type Reply } from '../src/wire/index.js';
import type { StageServiceClient } from '../node/grpc-common.js';

let node: RunningNode;
let client: StageServiceClient;
const model = {
  inputShape: [4],
  layers: [{ type: 'dense', inputs: 4, units: 8 }, { type: 'relu' }, { type: 'dense', inputs: 8, units: 3 }],
  loss: 'softmaxCrossEntropy',
};
const h = { run: 'g', stage: 0, step: 0, microBatch: -1 };

beforeAll(async () => {
  node = await startNode({ port: 0 });
  client = makeClient(node.address);
});
afterAll(async () => {
  client.close();
  await node.close();
});

function rawCall(body: Uint8Array): Promise<Reply> {
  return new Promise((resolve, reject) => {
    client.Call({ type: 'forward', run: 'g', stage: 0, body }, { deadline: new Date(Date.now() + 5000) }, (err, reply) => {
      if (err) reject(err);
      else resolve(decodeMessage(reply!.body, { actor: 'test' }) as Reply);
    });
  });
}

describe('a gRPC node', () => {
  it('binds port 0 and reports the real port', () => {
    expect(node.port).toBeGreaterThan(0);
    expect(node.address).toBe(`127.0.0.1:${node.port}`);
  });

  it('answers a malformed body with an error naming the node, and keeps serving', async () => {
    const r = await rawCall(new Uint8Array([0xc1, 0x00, 0xff, 0x13]));
    expect(r.type).toBe('error');
    expect((r as { message: string }).message).toMatch(new RegExp(`node ${node.address} stage 0`));
    const ok = await unary(client, node.address, 'Call', { ...h, type: 'configure', config: { model, start: 0, end: 3, seed: 1, stages: 1, capacity: 2 } }, 5000);
    expect((ok as Reply).type).toBe('configured');
  });

  it('rejects a tensor whose shape does not match its bytes, naming the field', async () => {
    const good = encodeMessage({ ...h, type: 'evaluate', x: Tensor.zeros([2, 4]) });
    // Same message with a lying shape: [2, 4] → [3, 4] (the byte length no longer matches).
    const forged = { ...h, type: 'evaluate', x: { $tensor: 'float32', shape: [3, 4], bytes: new Uint8Array(32) } };
    const { Packr } = await import('msgpackr');
    const r = await rawCall(new Packr({ useRecords: false }).pack(forged));
    expect((r as { message: string }).message).toMatch(/field 'x': shape \[3, 4\] needs 48 bytes of float32, got 32/);
    const fine = await rawCall(good);
    expect(fine.type).toBe('activations');
  });

  it('a request for a stage it does not host is an error naming the node and stage', async () => {
    const r = await unary(client, node.address, 'Call', { ...h, stage: 5, type: 'gradients' }, 5000);
    expect((r as { message: string }).message).toMatch(new RegExp(`node ${node.address}: no stage 5 of run g`));
  });
});

describe('the gRPC transport', () => {
  it('a node that is down gives an error naming it', async () => {
    // A port that was free a moment ago: nothing listens there.
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => { const p = (s.address() as { port: number }).port; s.close(() => resolve(p)); });
    });
    const t = new GrpcTransport([node.address, `127.0.0.1:${port}`], { connectTimeoutMs: 1500 });
    const err = await t.open(2, 'down').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransportError);
    expect((err as Error).message).toMatch(new RegExp(`gRPC node 127\\.0\\.0\\.1:${port} \\(stage 1\\) is unreachable`));
  });

  it('validates node addresses where they enter', () => {
    expect(() => new GrpcTransport(['localhost'])).toThrow(/'localhost' is not host:port/);
    expect(() => new GrpcTransport(['h:70000'])).toThrow(/port in 1\.\.65535/);
  });

  it('training through the coordinator needs --nodes', async () => {
    const c = new Coordinator({ model: 'mlp', placement: 'grpc', epochs: 1 });
    await expect(c.open()).rejects.toThrow(/placement grpc needs --nodes/);
  });

  it('one node may host several stages of a run', async () => {
    const t = new GrpcTransport([node.address]);
    try {
      const hs = await t.open(2, 'two');
      for (const [i, s] of hs.entries()) {
        expectReply(await s.request({ run: 'two', stage: i, step: 0, microBatch: -1, type: 'configure', config: { model, start: i === 0 ? 0 : 2, end: i === 0 ? 2 : 3, seed: 1, stages: 2, capacity: 2 } }), 'configured', s.name);
      }
      const reports = await Promise.all(hs.map((s, i) => s.request({
        run: 'two', stage: i, step: 0, microBatch: -1, type: 'runStep', actions: i === 0 ? ['0F0', '0B0'] : ['1F0', '1B0'],
        inputs: i === 0 ? [Tensor.ones([2, 4])] : undefined, targets: i === 1 ? [Int32Array.from([0, 2])] : undefined,
      })));
      expect(reports.map((r) => r.type)).toEqual(['stepDone', 'stepDone']);
    } finally {
      await t.close();
    }
  });
});
