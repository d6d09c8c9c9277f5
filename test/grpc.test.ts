/** gRPC nodes on real loopback sockets: validation, errors that name the node, a node that is down. */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { createServer } from 'node:net';
import { startNode, type RunningNode } from '../node/server.js';
import { makeClient, unary } from '../node/grpc-common.js';
import { GrpcTransport, LocalTransport, TransportError, type StageHandle, type Transport } from '../coordinator/transports/index.js';
import { Coordinator } from '../coordinator/index.js';
import { Tensor } from '../src/tensor/tensor.js';
import { backend, setBackend } from '../src/tensor/backend.js';
import { encodeMessage, expectReply, decodeMessage, MAX_TENSOR_ELEMENTS, type NamedTensors, type Reply, type Request } from '../src/wire/index.js';
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
// A Coordinator installs the default backend in this process (and so under the in-process
// nodes) when it finds the reference one: put it back, so no test runs on another's choice.
const initialBackend = backend();
afterEach(() => setBackend(initialBackend));

/** Sends raw bytes as the body of a Call for stage 0 of `run` on the shared node. */
function rawCall(body: Uint8Array, run = 'g'): Promise<Reply> {
  return new Promise((resolve, reject) => {
    client.Call({ type: 'forward', run, stage: 0, body }, { deadline: new Date(Date.now() + 5000) }, (err, reply) => {
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
    const ok = await unary(client, node.address, 'Call', { ...h, type: 'configure', config: { model, start: 0, end: 3, seed: 1, capacity: 2 } }, 5000);
    expect((ok as Reply).type).toBe('configured');
  });

  it('rejects a tensor whose shape does not match its bytes, naming the field', async () => {
    // A run of its own, configured here: the node's stages outlive a test.
    const hs = { ...h, run: 'shape' };
    const configured = await unary(client, node.address, 'Call', { ...hs, type: 'configure', config: { model, start: 0, end: 3, seed: 1, capacity: 2 } }, 5000);
    expect((configured as Reply).type).toBe('configured');
    const good = encodeMessage({ ...hs, type: 'evaluate', x: Tensor.zeros([2, 4]) });
    // Same message with a lying shape: [2, 4] → [3, 4] (the byte length no longer matches).
    const forged = { ...hs, type: 'evaluate', x: { $tensor: 'float32', shape: [3, 4], bytes: new Uint8Array(32) } };
    const { Packr } = await import('msgpackr');
    const r = await rawCall(new Packr({ useRecords: false }).pack(forged), 'shape');
    expect((r as { message: string }).message).toMatch(/field 'x': shape \[3, 4\] needs 48 bytes of float32, got 32/);
    const fine = await rawCall(good, 'shape');
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
    const err = await t.open({ replicas: 1, stages: 2 }, 'down').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransportError);
    expect((err as Error).message).toMatch(new RegExp(`gRPC node 127\\.0\\.0\\.1:${port} \\(stage 1\\) is unreachable`));
  });

  it('validates node addresses where they enter', () => {
    expect(() => new GrpcTransport(['localhost'])).toThrow(/'localhost' is not host:port/);
    expect(() => new GrpcTransport(['h:70000'])).toThrow(/port in 1\.\.65535/);
  });

  it('training through the coordinator needs --nodes', async () => {
    expect(() => new Coordinator({ model: 'mlp', placement: 'grpc', epochs: 1 })).toThrow(/options.placement grpc needs options.nodes/);
  });

  it('one node may host several stages of a run', async () => {
    const t = new GrpcTransport([node.address]);
    try {
      const hs = await t.open({ replicas: 1, stages: 2 }, 'two');
      for (const [i, s] of hs.entries()) {
        expectReply(await s.request({ run: 'two', stage: i, step: 0, microBatch: -1, type: 'configure', config: { model, start: i === 0 ? 0 : 2, end: i === 0 ? 2 : 3, seed: 1, capacity: 2 } }), 'configured', s.name);
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

/** A small deterministic generator for test data (not the library's RNG: the data only). */
function lcg(seed: number): () => number {
  let x = seed >>> 0;
  return () => ((x = (Math.imul(x, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

/** One pipelined step of the 2-stage MLP through a transport: the reports and the gradients. */
async function oneStep(t: Transport, run: string, opts: { duplicate?: boolean } = {}) {
  const hs: StageHandle[] = await t.open({ replicas: 1, stages: 2 }, run);
  const hdr = (stage: number) => ({ run, stage, step: 0, microBatch: -1 });
  for (const [i, s] of hs.entries()) {
    expectReply(await s.request({ ...hdr(i), type: 'configure', config: { model, start: i === 0 ? 0 : 2, end: i === 0 ? 2 : 3, seed: 1, capacity: 4 } }), 'configured', s.name);
  }
  const r = lcg(42);
  const inputs = [0, 1].map(() => Tensor.from(Array.from({ length: 8 }, () => r() * 2 - 1), [2, 4]));
  const targets = [Int32Array.from([0, 2]), Int32Array.from([1, 1])];
  const step: Request[] = [
    { ...hdr(0), type: 'runStep', actions: ['0F0', '0F1', '0B0', '0B1'], inputs },
    { ...hdr(1), type: 'runStep', actions: ['1F0', '1F1', '1B0', '1B1'], targets },
  ];
  const reports = (await Promise.all(hs.map((s, i) => s.request(step[i]!)))).map((rep, i) => expectReply(rep, 'stepDone', hs[i]!.name).report);
  const again = opts.duplicate ? (await Promise.all(hs.map((s, i) => s.request(step[i]!)))).map((rep, i) => expectReply(rep, 'stepDone', hs[i]!.name).report) : null;
  const grads: NamedTensors[] = [];
  for (const [i, s] of hs.entries()) grads.push(expectReply(await s.request({ ...hdr(i), type: 'gradients' }), 'tensors', s.name).tensors);
  return { reports, again, grads };
}

function bytesOf(g: NamedTensors[]): Record<string, number[]> {
  const out: Record<string, number[]> = {};
  for (const [i, named] of g.entries()) {
    for (const [k, t] of Object.entries(named)) out[`${i}/${k}`] = Array.from(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  }
  return out;
}

describe('two gRPC nodes, one stage each', () => {
  let a: RunningNode;
  let b: RunningNode;
  beforeAll(async () => {
    a = await startNode({ port: 0 });
    b = await startNode({ port: 0 });
  });
  afterAll(async () => {
    await Promise.all([a.close(), b.close()]);
  });

  it('a pipelined step gives gradients bit-identical to the in-process run', async () => {
    const g = new GrpcTransport([a.address, b.address]);
    let remote;
    try {
      remote = await oneStep(g, 'bits');
    } finally {
      await g.close();
    }
    const local = await oneStep(new LocalTransport(), 'bits');
    expect(remote.reports[1]!.losses).toEqual(local.reports[1]!.losses);
    expect(remote.reports[1]!.losses.every((l) => Number.isFinite(l) && l > 0)).toBe(true);
    const rb = bytesOf(remote.grads);
    expect(Object.keys(rb).sort()).toEqual(Object.keys(bytesOf(local.grads)).sort());
    expect(Object.keys(rb).length).toBe(4); // two dense layers: weight and bias each
    expect(rb).toEqual(bytesOf(local.grads));
    expect(remote.grads.every((named) => Object.values(named).every((t) => t.data.some((v) => v !== 0)))).toBe(true);
  });

  it('a duplicate runStep (same step) is applied once: same report, no double gradients', async () => {
    const g = new GrpcTransport([a.address, b.address]);
    try {
      const twice = await oneStep(g, 'dup', { duplicate: true });
      const once = await oneStep(new LocalTransport(), 'dup');
      expect(twice.again).toEqual(twice.reports);
      expect(bytesOf(twice.grads)).toEqual(bytesOf(once.grads));
    } finally {
      await g.close();
    }
  });

  it('a malformed body (random bytes) is answered with an error naming the actor, and the node keeps serving', async () => {
    const c = makeClient(a.address);
    try {
      const r = lcg(7);
      const call = (body: Uint8Array) => new Promise<Reply>((resolve, reject) => {
        c.Call({ type: 'forward', run: 'junk', stage: 3, body }, { deadline: new Date(Date.now() + 5000) }, (err, reply) => {
          if (err) reject(err);
          else resolve(decodeMessage(reply!.body, { actor: 'test' }) as Reply);
        });
      });
      for (let k = 0; k < 20; k++) {
        const junk = Uint8Array.from({ length: 1 + Math.floor(r() * 200) }, () => Math.floor(r() * 256));
        const rep = await call(junk);
        expect(rep.type).toBe('error');
        expect((rep as { code: string }).code).toBe('BAD_MESSAGE');
        expect((rep as { message: string }).message).toMatch(new RegExp(`^node ${a.address} stage 3: `));
      }
      // A message of the wrong kind for Call is refused too, by name.
      const wrongKind = await call(encodeMessage({ run: 'junk', stage: 3, step: 0, microBatch: 0, type: 'activation', x: Tensor.zeros([1, 4]) }));
      expect((wrongKind as { message: string }).message).toMatch(/Call carries requests, not 'activation'/);
      // Still serving: a valid request right after succeeds.
      const ok = await unary(c, a.address, 'Call', { run: 'junk', stage: 0, step: 0, microBatch: -1, type: 'configure', config: { model, start: 0, end: 3, seed: 1, capacity: 1 } }, 5000);
      expect((ok as Reply).type).toBe('configured');
    } finally {
      c.close();
    }
  });

  it('a request to a node that went down names the node and the request', async () => {
    const c = await startNode({ port: 0 });
    const t = new GrpcTransport([c.address], { connectTimeoutMs: 2000, deadlineMs: 3000 });
    try {
      const [s] = await t.open({ replicas: 1, stages: 1 }, 'gone');
      await c.close();
      const err = await s!.request({ run: 'gone', stage: 0, step: 0, microBatch: -1, type: 'gradients' }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TransportError);
      expect((err as Error).message).toMatch(new RegExp(`gRPC node ${c.address} \\(stage 0\\): gradients: (the node is unreachable|no answer within)`));
    } finally {
      await t.close();
    }
  }, 15_000);

  it('validates its options where they enter', async () => {
    await expect(startNode({ port: 70000 })).rejects.toThrow(/options\.port must be an integer in 0\.\.65535, got 70000/);
    await expect(startNode({ maxMessageBytes: -1 })).rejects.toThrow(/options\.maxMessageBytes must be an integer in 1024\.\.2147483647, got -1/);
    expect(() => new GrpcTransport([a.address], { deadlineMs: 0 })).toThrow(/options\.deadlineMs must be a positive number/);
  });
});

describe('size caps', () => {
  let small: RunningNode;
  let c: StageServiceClient;
  beforeAll(async () => {
    small = await startNode({ port: 0, maxMessageBytes: 64 * 1024 });
    c = makeClient(small.address);
  });
  afterAll(async () => {
    c.close();
    await small.close();
  });

  it('a message over the node\'s cap is refused before decoding, naming the node and request', async () => {
    // 128 KiB of activations against a 64 KiB cap.
    const x = Tensor.zeros([32, 1024]);
    const err = await unary(c, small.address, 'Call', { run: 'cap', stage: 0, step: 0, microBatch: -1, type: 'evaluate', x }, 5000).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(new RegExp(`gRPC node ${small.address} \\(stage 0\\): evaluate: RESOURCE_EXHAUSTED: .*larger than max`));
    // And the node still answers small requests.
    const r = await unary(c, small.address, 'Call', { run: 'cap', stage: 0, step: 0, microBatch: -1, type: 'gradients' }, 5000);
    expect((r as { message: string }).message).toMatch(/no stage 0 of run cap/);
  });

  it('a tensor whose shape claims more elements than the cap is rejected, naming the field', async () => {
    const { Packr } = await import('msgpackr');
    const forged = { run: 'cap', stage: 0, step: 0, microBatch: -1, type: 'evaluate', x: { $tensor: 'float32', shape: [MAX_TENSOR_ELEMENTS, 2], bytes: new Uint8Array(16) } };
    const rep = await new Promise<Reply>((resolve, reject) => {
      c.Call({ type: 'evaluate', run: 'cap', stage: 0, body: new Packr({ useRecords: false }).pack(forged) }, { deadline: new Date(Date.now() + 5000) }, (err, reply) => {
        if (err) reject(err);
        else resolve(decodeMessage(reply!.body, { actor: 'test' }) as Reply);
      });
    });
    expect(rep.type).toBe('error');
    expect((rep as { message: string }).message).toMatch(new RegExp(`node ${small.address} stage 0.*field 'x'.*${2 * MAX_TENSOR_ELEMENTS} elements exceed the cap of ${MAX_TENSOR_ELEMENTS}`));
  });
});

describe('the generated types', () => {
  it('are current with proto/chainrule.proto (npm run proto:types)', async () => {
    const { execFileSync } = await import('node:child_process');
    const { mkdtempSync, readFileSync, readdirSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const root = join(import.meta.dirname, '..');
    const out = mkdtempSync(join(tmpdir(), 'proto-'));
    const bin = join(root, 'node_modules', '.bin', 'proto-loader-gen-types');
    execFileSync(bin, ['--longs=String', '--enums=String', '--defaults', '--oneofs', '--grpcLib=@grpc/grpc-js', '--importFileExtension=.js', `--outDir=${out}`, 'proto/chainrule.proto'], { cwd: root });
    const files = (dir: string): string[] => readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name).slice(dir.length));
    const want = files(out).sort();
    expect(files(join(root, 'proto', 'generated')).sort()).toEqual(want);
    for (const f of want) expect(readFileSync(join(root, 'proto', 'generated', f), 'utf8'), f).toBe(readFileSync(join(out, f), 'utf8'));
  });
});

describe('gRPC health', () => {
  it('a node answers the standard health check with SERVING', async () => {
    const { service } = await import('grpc-health-check');
    const Health = grpc.makeGenericClientConstructor(service as unknown as grpc.ServiceDefinition, 'Health');
    const health = new Health(node.address, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
      check(req: { service: string }, opts: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r?: { status: string | number }) => void): void;
    };
    try {
      const status = await new Promise<string | number | undefined>((resolve, reject) =>
        health.check({ service: 'chainrule.StageService' }, { deadline: new Date(Date.now() + 5000) }, (e: grpc.ServiceError | null, r?: { status: string | number }) => (e ? reject(e) : resolve(r?.status))));
      expect(status === 'SERVING' || status === 1).toBe(true);
    } finally {
      health.close();
    }
  });
});
