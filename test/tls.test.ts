/**
 * Nodes that refuse strangers, on real loopback sockets: certificates made by `chainrule certs`,
 * mutual TLS, bearer tokens on every call and stream, one run at a time, runs freed when they
 * end or go silent, a refusal to listen off loopback without TLS, and nodes that answer a
 * neighbour's failure or a bug of ours with an error instead of crashing. The right
 * credentials train to the weights of plaintext loopback, bit for bit.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { chainruleBin, runTsx, startNodeProcess } from './helpers.js';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { startNode, type RunningNode } from '../node/server.js';
import { makeClient, unary } from '../node/grpc-common.js';
import { TLS_FILES, diagnoseTls, loadTls, tokenMetadata } from '../node/tls.js';
import { makeCerts } from '../coordinator/certs.js';
import { main } from '../coordinator/cli.js';
import { GrpcTransport, TransportError } from '../coordinator/transports/index.js';
import { Coordinator, type CoordinatorOptions } from '../coordinator/index.js';
import { loadMnist, subset, type Dataset } from '../src/data/index.js';
import type { ModelSpec } from '../src/nn/index.js';
import { Tensor } from '../src/tensor/tensor.js';
import { decodeMessage, encodeMessage, type Reply } from '../src/wire/index.js';

const root = mkdtempSync(join(tmpdir(), 'chainrule-tls-'));
const certs = join(root, 'certs');
const foreign = join(root, 'foreign');
const tokenFile = join(certs, TLS_FILES.token);
const wrongTokenFile = join(root, 'wrong-token');

const spec: ModelSpec = {
  inputShape: [784],
  layers: [
    { type: 'dense', inputs: 784, units: 32, init: 'he' }, { type: 'relu' },
    { type: 'dense', inputs: 32, units: 10, init: 'xavier' },
  ],
  loss: 'softmaxCrossEntropy',
};
const tiny = { inputShape: [4], layers: [{ type: 'dense', inputs: 4, units: 3 }], loss: 'softmaxCrossEntropy' };

let data: { train: Dataset; test: Dataset };
/** Log lines of the in-process nodes, by node. */
const logs = new Map<RunningNode, string[]>();
let plain: RunningNode[] = [];
let secure: RunningNode[] = [];

async function node(opts: Parameters<typeof startNode>[0] = {}): Promise<RunningNode> {
  const lines: string[] = [];
  const n = await startNode({ port: 0, log: (l) => lines.push(l), ...opts });
  logs.set(n, lines);
  return n;
}

const linesOf = (n: RunningNode) => logs.get(n)!;

/** A port nothing listens on (it was free a moment ago). */
function deadPort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => { const p = (s.address() as { port: number }).port; s.close(() => resolve(p)); });
  });
}

beforeAll(async () => {
  makeCerts(certs, { hosts: ['127.0.0.1'] });
  makeCerts(foreign, { hosts: ['127.0.0.1'] });
  writeFileSync(wrongTokenFile, 'not-the-token-of-this-run-0123456789\n');
  const m = loadMnist();
  data = { train: subset(m.train, Array.from({ length: 256 }, (_, i) => i)), test: subset(m.test, Array.from({ length: 100 }, (_, i) => i)) };
  plain = [await node(), await node()];
  secure = [await node({ tls: certs, tokenFile, maxRuns: 1 }), await node({ tls: certs, tokenFile, maxRuns: 1 })];
});

afterAll(async () => {
  await Promise.all([...plain, ...secure].map((n) => n.close()));
});

async function train(o: CoordinatorOptions): Promise<string> {
  const c = new Coordinator({ model: spec, dataset: data, epochs: 2, batchSize: 32, lr: 0.1, seed: 3, placement: 'grpc', stages: 2, microBatches: 2, ...o });
  try {
    return (await c.train()).weightsSha256;
  } finally {
    await c.close();
  }
}

const addresses = (ns: RunningNode[]) => ns.map((n) => n.address);

describe('chainrule certs', () => {
  it('makes a CA, a node certificate naming the hosts, a coordinator certificate and a token, keys private', () => {
    const ca = new X509Certificate(readFileSync(join(certs, TLS_FILES.ca)));
    const nodeCert = new X509Certificate(readFileSync(join(certs, TLS_FILES.node.cert)));
    const coordCert = new X509Certificate(readFileSync(join(certs, TLS_FILES.coordinator.cert)));
    expect(ca.ca).toBe(true);
    expect(nodeCert.verify(ca.publicKey) && coordCert.verify(ca.publicKey)).toBe(true);
    expect(nodeCert.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(nodeCert.checkHost('localhost')).toBe('localhost');
    expect(nodeCert.checkHost('elsewhere.example')).toBeUndefined();
    // Nodes call each other: their certificate is a server and a client certificate.
    expect(nodeCert.keyUsage).toEqual(expect.arrayContaining(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']));
    expect(coordCert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']);
    for (const f of [TLS_FILES.caKey, TLS_FILES.node.key, TLS_FILES.coordinator.key, TLS_FILES.token]) {
      expect(statSync(join(certs, f)).mode & 0o077, f).toBe(0);
    }
    expect(readFileSync(tokenFile, 'utf8').trim()).toMatch(/^[0-9a-f]{64}$/);
    // Each side finds its own files.
    expect(loadTls(certs, 'node').name).toBe('chainrule node');
    expect(loadTls(certs, 'coordinator').name).toBe('chainrule coordinator');
  });

  it('the command names the hosts, refuses to overwrite and rejects a bad host', async () => {
    const dir = join(root, 'cli-certs');
    const out: string[] = [];
    const log = vi.spyOn(console, 'log').mockImplementation((s: string) => { out.push(s); });
    const err = vi.spyOn(console, 'error').mockImplementation((s: string) => { out.push(s); });
    try {
      expect(await main(['certs', dir, '--hosts', 'hostA,10.0.0.7,[fd00::7]'])).toBe(0);
      expect(out.join('\n')).toMatch(/names hostA, 10\.0\.0\.7, fd00::7, localhost, 127\.0\.0\.1, ::1/);
      const c = new X509Certificate(readFileSync(join(dir, TLS_FILES.node.cert)));
      expect([c.checkHost('hostA'), c.checkIP('10.0.0.7'), c.checkIP('fd00::7')]).toEqual(['hostA', '10.0.0.7', 'fd00::7']);
      out.length = 0;
      expect(await main(['certs', dir, '--hosts', 'hostA'])).toBe(2);
      expect(out.join('\n')).toMatch(/already holds ca\.pem.*--force/s);
      out.length = 0;
      expect(await main(['certs', join(root, 'x'), '--hosts', 'host;rm -rf'])).toBe(2);
      expect(out.join('\n')).toMatch(/"host;rm -rf" is neither a host name nor an IP address/);
      out.length = 0;
      expect(await main(['certs', join(root, 'y')])).toBe(2);
      expect(out.join('\n')).toMatch(/--hosts is required/);
    } finally {
      log.mockRestore();
      err.mockRestore();
    }
  });

  it('a TLS directory with a missing or mismatched file is refused naming the file', () => {
    expect(() => loadTls(join(root, 'nowhere'), 'node')).toThrow(/ca\.pem does not exist.*chainrule certs/s);
    const mixed = join(root, 'mixed');
    makeCerts(mixed, { hosts: ['127.0.0.1'] });
    writeFileSync(join(mixed, TLS_FILES.ca), readFileSync(join(foreign, TLS_FILES.ca)));
    expect(() => loadTls(mixed, 'coordinator')).toThrow(/coordinator\.pem was not issued by the CA in .*ca\.pem/);
  });
});

describe('the right credentials', () => {
  it('train to the weights of plaintext loopback, with one replica and with two', async () => {
    // Only the log lines of this test's runs: the nodes are shared with the other tests.
    const seen = new Map(secure.map((n) => [n, linesOf(n).length]));
    const reference = await train({ nodes: addresses(plain) });
    expect(await train({ nodes: addresses(secure), tls: certs, tokenFile })).toBe(reference);
    const replicated = await train({ nodes: addresses(plain), replicas: 2 });
    expect(await train({ nodes: addresses(secure), tls: certs, tokenFile, replicas: 2 })).toBe(replicated);
    // Every run ended with its coordinator: the one-run nodes are free again.
    for (const n of secure) {
      expect(linesOf(n).slice(seen.get(n)).filter((l) => / run run-\w+… opened by 127\.0\.0\.1:\d+ \(CN=chainrule coordinator\)/.test(l))).toHaveLength(2);
      expect(linesOf(n).slice(seen.get(n)).filter((l) => /ended: its coordinator shut it down; it hosted [12] actors? for \d+ s/.test(l))).toHaveLength(2);
    }
  });

  it('tls and tokenFile are coordinator options with flags, only for the gRPC placement', () => {
    expect(() => new Coordinator({ model: spec, dataset: data, tls: certs })).toThrow(/options\.tls is only used with options\.placement grpc \(got local\)/);
    expect(() => new Coordinator({ model: spec, dataset: data, tokenFile })).toThrow(/options\.tokenFile is only used with options\.placement grpc/);
  });
});

/** Opens a one-stage run on the first secure node with these transport options; the error. */
async function refusal(opts: ConstructorParameters<typeof GrpcTransport>[1], n = secure[0]!): Promise<TransportError> {
  const t = new GrpcTransport([n.address], { connectTimeoutMs: 3000, ...opts });
  try {
    await t.open({ replicas: 1, stages: 1 }, `run-refused-${Math.random().toString(16).slice(2)}`);
  } catch (e) {
    expect(e).toBeInstanceOf(TransportError);
    return e as TransportError;
  } finally {
    await t.close();
  }
  throw new Error('expected the node to refuse');
}

describe('strangers are refused, each with the right message, and logged by the node naming the peer', () => {
  it('a plaintext client', async () => {
    const n = secure[0]!;
    const seen = linesOf(n).length; // this test's log lines only: the node logs every test's
    const e = await refusal({});
    expect(e.code).toBe('TLS_HANDSHAKE');
    expect(e.message).toMatch(new RegExp(`^TLS handshake with node ${n.address} \\(stage 0\\) failed: node ${n.address} requires TLS, and this side speaks plaintext: pass --tls DIR`));
    await vi.waitFor(() => expect(linesOf(n).slice(seen).some((l) => /refused TLS handshake from 127\.0\.0\.1:\d+ failed: not TLS \(a plaintext client/.test(l))).toBe(true));
  });

  it('a TLS client to a plaintext node', async () => {
    const n = plain[0]!;
    const e = await refusal({ tls: certs, tokenFile }, n);
    expect(e.message).toMatch(new RegExp(`^TLS handshake with node ${n.address} \\(stage 0\\) failed: node ${n.address} does not speak TLS \\(was it started without --tls\\?\\)`));
  });

  it('a client without a certificate', async () => {
    const n = secure[0]!;
    const seen = linesOf(n).length; // this test's log lines only: the node logs every test's
    const tls = loadTls(certs, 'coordinator');
    const c = makeClient(n.address, grpc.credentials.createSsl(tls.ca));
    try {
      const e = await unary(c, n.address, 'Call', { type: 'gradients', run: 'r', stage: 0, step: 0, microBatch: -1 }, 3000, tokenMetadata(readFileSync(tokenFile, 'utf8').trim())).catch((x: unknown) => x);
      expect((e as { code: string }).code).toBe('NODE_UNREACHABLE');
      expect((e as Error).message).toMatch(/certificate required/);
    } finally {
      c.close();
    }
    await vi.waitFor(() => expect(linesOf(n).slice(seen).some((l) => /refused TLS handshake from 127\.0\.0\.1:\d+ failed: it presented no client certificate/.test(l))).toBe(true));
  });

  it('a foreign CA, either way round', async () => {
    const n = secure[0]!;
    const seen = linesOf(n).length; // this test's log lines only: the node logs every test's
    // The coordinator does not trust the node's certificate.
    const e = await refusal({ tls: foreign, tokenFile });
    expect(e.message).toMatch(new RegExp(`^TLS handshake with node ${n.address} \\(stage 0\\) failed: node ${n.address}'s certificate is not signed by our CA \\(SELF_SIGNED_CERT_IN_CHAIN\\)`));
    await vi.waitFor(() => expect(linesOf(n).slice(seen).some((l) => /refused TLS handshake from 127\.0\.0\.1:\d+ failed: the client hung up during the handshake/.test(l))).toBe(true));
    // A client that trusts the node but holds a certificate of another CA.
    const own = loadTls(certs, 'coordinator');
    const other = loadTls(foreign, 'coordinator');
    const c = makeClient(n.address, grpc.credentials.createSsl(own.ca, other.key, other.cert));
    try {
      const err = await unary(c, n.address, 'Call', { type: 'gradients', run: 'r', stage: 0, step: 0, microBatch: -1 }, 3000).catch((x: unknown) => x);
      expect((err as { code: string }).code).toBe('NODE_UNREACHABLE');
    } finally {
      c.close();
    }
    // What the coordinator would say of it (it cannot hold such a pair: loadTls refuses it).
    expect(await diagnoseTls(n.address, { ...own, cert: other.cert, key: other.key })).toMatch(new RegExp(`^node ${n.address} (closed the connection after the handshake: it refused our certificate|refused our certificate)`));
    await vi.waitFor(() => expect(linesOf(n).slice(seen).some((l) => /refused TLS handshake from 127\.0\.0\.1:\d+ failed: its client certificate is not valid for this node \(UNABLE_TO_VERIFY_LEAF_SIGNATURE/.test(l))).toBe(true));
  });

  it('a wrong token and a missing token (UNAUTHENTICATED), on calls and on streams', async () => {
    const n = secure[0]!;
    const seen = linesOf(n).length; // this test's log lines only: the node logs every test's
    const wrong = await refusal({ tls: certs, tokenFile: wrongTokenFile });
    expect(wrong.code).toBe('UNAUTHENTICATED');
    expect(wrong.message).toMatch(new RegExp(`^gRPC node ${n.address} \\(stage 0\\): connect: node ${n.address} refused the call: wrong bearer token`));
    const missing = await refusal({ tls: certs });
    expect(missing.code).toBe('UNAUTHENTICATED');
    expect(missing.message).toMatch(/refused the call: no bearer token \(metadata authorization: Bearer \.\.\.\); this node checks tokens: pass --token-file FILE/);
    expect(linesOf(n).slice(seen).some((l) => /refused 127\.0\.0\.1:\d+ \(CN=chainrule coordinator\): Call: wrong bearer token/.test(l))).toBe(true);
    expect(linesOf(n).slice(seen).some((l) => /refused 127\.0\.0\.1:\d+ \(CN=chainrule coordinator\): Call: no bearer token/.test(l))).toBe(true);
    // A stream with a wrong token ends at once with UNAUTHENTICATED.
    const tls = loadTls(certs, 'node');
    const c = makeClient(n.address, grpc.credentials.createSsl(tls.ca, tls.key, tls.cert));
    try {
      const status = await new Promise<grpc.ServiceError>((resolve) => {
        const s = c.DeliverStream(tokenMetadata('not-the-token-of-this-run-0123456789'));
        s.on('error', resolve);
        s.on('data', () => { /* none expected */ });
        s.write({ type: 'activation', run: 'r', stage: 0, body: encodeMessage({ type: 'activation', run: 'r', stage: 0, step: 0, microBatch: 0, x: Tensor.zeros([1, 4]) }), id: 1 });
      });
      expect(status.code).toBe(grpc.status.UNAUTHENTICATED);
      expect(status.details).toMatch(/wrong bearer token/);
    } finally {
      c.close();
    }
    expect(linesOf(n).slice(seen).some((l) => /refused 127\.0\.0\.1:\d+ \(CN=chainrule node\): DeliverStream: wrong bearer token/.test(l))).toBe(true);
  });

  it('a coordinator past --max-runs is told the node is busy, which run and since when; the run frees the node when it ends', async () => {
    const n = secure[1]!;
    const seen = linesOf(n).length; // this test's log lines only: the node logs every test's
    const first = new GrpcTransport([n.address], { tls: certs, tokenFile });
    try {
      await first.open({ replicas: 1, stages: 1 }, 'run-0123456789abcdef0123456789abcdef');
      const e = await refusal({ tls: certs, tokenFile }, n);
      expect(e.code).toBe('NODE_BUSY');
      expect(e.message).toMatch(new RegExp(`^node ${n.address} is busy: it hosts run run-01234567… since \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z \\(last call \\d+ s ago\\) and takes at most 1 run at a time \\(--max-runs\\)`));
      expect(e.message).not.toMatch(/0123456789abcdef0123/); // the other run's id is not given away
      expect(linesOf(n).slice(seen).some((l) => /refused 127\.0\.0\.1:\d+ \(CN=chainrule coordinator\): run run-refused-\w{0,4}…: busy with run run-01234567…/.test(l))).toBe(true);
    } finally {
      await first.close();
    }
    // Shut down by its coordinator: the node takes the next one.
    const next = new GrpcTransport([n.address], { tls: certs, tokenFile });
    try {
      await next.open({ replicas: 1, stages: 1 }, 'run-next');
    } finally {
      await next.close();
    }
  });

  it('a run answers only to the token that opened it', async () => {
    const two = join(root, 'two-tokens');
    writeFileSync(two, '# one token per coordinator\nfirst-token-0123456789abcdef\nsecond-token-0123456789abcdef\n');
    const n = await node({ tls: certs, tokenFile: two, maxRuns: 2 });
    expect(linesOf(n).some((l) => / warning .*two-tokens can be read by other users of this host: chmod 600 it/.test(l))).toBe(true);
    const tls = loadTls(certs, 'coordinator');
    const c = makeClient(n.address, grpc.credentials.createSsl(tls.ca, tls.key, tls.cert));
    const h = { run: 'run-owned', stage: 0, step: 0, microBatch: -1 };
    try {
      const ok = await unary(c, n.address, 'Call', { ...h, type: 'configure', config: { model: tiny, start: 0, end: 1, seed: 1, capacity: 1 } }, 3000, tokenMetadata('first-token-0123456789abcdef'));
      expect((ok as Reply).type).toBe('configured');
      const e = await unary(c, n.address, 'Call', { ...h, type: 'getParams' }, 3000, tokenMetadata('second-token-0123456789abcdef')).catch((x: unknown) => x);
      expect((e as { code: string }).code).toBe('PERMISSION_DENIED');
      expect((e as Error).message).toMatch(/refused the call: run run-owned was opened with another token/);
      // The token file is read again when it changes: a fresh token for the next run needs no restart.
      writeFileSync(two, 'third-token-0123456789abcdef\n');
      const fresh = await unary(c, n.address, 'Call', { ...h, run: 'run-fresh', type: 'configure', config: { model: tiny, start: 0, end: 1, seed: 1, capacity: 1 } }, 3000, tokenMetadata('third-token-0123456789abcdef'));
      expect((fresh as Reply).type).toBe('configured');
      // The open run keeps the token it was opened with.
      expect(((await unary(c, n.address, 'Call', { ...h, type: 'getParams' }, 3000, tokenMetadata('first-token-0123456789abcdef'))) as Reply).type).toBe('tensors');
    } finally {
      c.close();
      await n.close();
    }
  });

  it('a run whose coordinator went silent past --run-timeout is closed, and a late call is told why', async () => {
    const n = await node({ maxRuns: 1, runTimeoutMs: 200 });
    const c = makeClient(n.address);
    const h = { run: 'run-silent', stage: 0, step: 0, microBatch: -1 };
    try {
      expect(((await unary(c, n.address, 'Call', { ...h, type: 'configure', config: { model: tiny, start: 0, end: 1, seed: 1, capacity: 1 } }, 3000)) as Reply).type).toBe('configured');
      await vi.waitFor(() => expect(linesOf(n).some((l) => / run run-silent closed: no call from its coordinator for \d+ s \(--run-timeout 0 s\); it hosted 1 actor for \d+ s/.test(l))).toBe(true), { timeout: 5000 });
      const late = (await unary(c, n.address, 'Call', { ...h, type: 'getParams' }, 3000)) as Reply & { message: string };
      expect(late.message).toMatch(/no stage 0 of run run-silent here; send 'configure' first; run run-silent closed: no call from its coordinator/);
      // The node is free for another coordinator.
      expect(((await unary(c, n.address, 'Call', { ...h, run: 'run-other', type: 'configure', config: { model: tiny, start: 0, end: 1, seed: 1, capacity: 1 } }, 3000)) as Reply).type).toBe('configured');
    } finally {
      c.close();
      await n.close();
    }
  });

  it('a node refuses to listen off loopback without TLS, before it binds anything', async () => {
    await expect(startNode({ host: '0.0.0.0', port: 0, log: false })).rejects.toThrow(/chainrule node: refusing to listen on 0\.0\.0\.0:0 without TLS.*--tls DIR.*--insecure/s);
    await expect(startNode({ host: '::', port: 0, log: false })).rejects.toThrow(/refusing to listen on \[::\]:0 without TLS/);
  });
});

describe('a node answers failures with errors of ours and keeps serving', () => {
  it('a neighbour it cannot reach fails the step with an error naming it, not the process', async () => {
    const n = plain[0]!;
    const c = makeClient(n.address);
    const dead = await deadPort();
    const h = { run: 'run-lonely', stage: 0, step: 0, microBatch: -1 };
    try {
      expect(((await unary(c, n.address, 'Call', { ...h, type: 'configure', config: { model: { ...tiny, layers: [{ type: 'dense', inputs: 4, units: 4 }, { type: 'dense', inputs: 4, units: 3 }] }, start: 0, end: 1, seed: 1, capacity: 2 } }, 3000)) as Reply).type).toBe('configured');
      expect(((await unary(c, n.address, 'Call', { ...h, type: 'connect', next: { address: `127.0.0.1:${dead}`, stage: 1 } }, 3000)) as Reply).type).toBe('ok');
      const r = (await unary(c, n.address, 'Call', { ...h, type: 'runStep', actions: ['0F0', '0F1', '0B0', '0B1'], inputs: [Tensor.ones([2, 4]), Tensor.ones([2, 4])] }, 10_000)) as Reply & { code: string; message: string };
      expect(r.type).toBe('error');
      expect(r.code).toBe('NODE_UNREACHABLE');
      expect(r.message).toMatch(new RegExp(`^node ${n.address}: stage 0: runStep \\(step 0\\): gRPC node 127\\.0\\.0\\.1:${dead}: delivery stream broke \\(UNAVAILABLE`));
      // Still serving, the same run and others.
      expect(((await unary(c, n.address, 'Call', { ...h, type: 'getParams' }, 3000)) as Reply).type).toBe('tensors');
      expect(((await unary(c, n.address, 'Call', { ...h, type: 'shutdown' }, 3000)) as Reply).type).toBe('ok');
    } finally {
      c.close();
    }
  });

  it('a neighbour that goes down mid-run, recovery off: the coordinator names it, the surviving node keeps serving', async () => {
    const a = await node();
    const b = await node();
    const c = new Coordinator({ model: spec, dataset: data, epochs: 2, batchSize: 32, lr: 0.1, seed: 3, placement: 'grpc', stages: 2, microBatches: 2, nodes: [a.address, b.address], commitEvery: 0,
      onStep: (r) => { if (r.step === 2) void b.close(); } });
    try {
      const err = await c.train().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(Error);
      expect((err as Error).message).toMatch(new RegExp(`${b.address.replace(/\./g, '\\.')}`));
    } finally {
      await c.close();
    }
    // Alive, and free for the next run.
    const client = makeClient(a.address);
    try {
      const r = await unary(client, a.address, 'Call', { run: 'run-after', stage: 0, step: 0, microBatch: -1, type: 'configure', config: { model: tiny, start: 0, end: 1, seed: 1, capacity: 1 } }, 3000);
      expect((r as Reply).type).toBe('configured');
    } finally {
      client.close();
      await a.close();
    }
  });

  it('a bug of ours is answered as INTERNAL naming the node and stage, its JavaScript text only in the log', async () => {
    const n = plain[1]!;
    const seen = linesOf(n).length; // this test's log lines only: the node logs every test's
    const c = makeClient(n.address);
    const h = { run: 'run-buggy', stage: 0, step: 0, microBatch: -1 };
    try {
      expect(((await unary(c, n.address, 'Call', { ...h, type: 'configure', config: { model: tiny, start: 0, end: 1, seed: 1, capacity: 1 } }, 3000)) as Reply).type).toBe('configured');
      // `actions` should be a list: the actor trips over it (a validation gap, and so a bug of ours).
      const body = encodeMessage({ ...h, type: 'runStep', actions: 'not a list' } as never);
      const r = await new Promise<Reply>((resolve, reject) => c.Call({ type: 'runStep', run: h.run, stage: 0, body }, { deadline: new Date(Date.now() + 3000) }, (err, rep) => (err ? reject(err) : resolve(decodeMessage(rep!.body, { actor: 'test' }) as Reply))));
      expect(r).toMatchObject({ type: 'error', code: 'INTERNAL' });
      const message = (r as { message: string }).message;
      expect(message).toMatch(new RegExp(`^node ${n.address}: stage 0: runStep \\(step 0\\): internal error #\\d+ \\(TypeError\\); the node's log has the details$`));
      expect(message).not.toMatch(/is not a function/);
      expect(linesOf(n).slice(seen).some((l) => / error internal error #\d+ in stage 0: runStep \(step 0\): TypeError: .*is not a function/.test(l))).toBe(true);
      expect(((await unary(c, n.address, 'Call', { ...h, type: 'getParams' }, 3000)) as Reply).type).toBe('tensors');
    } finally {
      c.close();
    }
  });
});

describe('chainrule node as a real process', () => {
  // Asynchronous, so that this process reads the node's stderr while the coordinator runs.
  const chainrule = (...args: string[]) => runTsx(chainruleBin, args);
  /** A `chainrule node` process with TLS and tokens, once it listens; its stderr so far. */
  const nodeProcess = () => startNodeProcess(['--port', '0', '--tls', certs, '--token-file', tokenFile]);
  const started: ChildProcessWithoutNullStreams[] = [];
  let child: ChildProcessWithoutNullStreams;
  let address = '';
  let nodeStderr: () => string = () => '';
  const csv = join(root, 'toy.csv');

  beforeAll(async () => {
    const rows = ['a,b,c,d,label'];
    for (let i = 0; i < 120; i++) rows.push([0, 1, 2, 3].map((j) => ((j === i % 3 ? 2 : 0) + ((i * 7 + j * 13) % 10) / 10).toFixed(2)).join(',') + `,${i % 3}`);
    writeFileSync(csv, rows.join('\n') + '\n');
    ({ child, address, stderr: nodeStderr } = await nodeProcess());
    started.push(child);
  });

  afterAll(() => { for (const c of started) if (c.exitCode === null) c.kill('SIGKILL'); });

  const trainArgs = ['train', '--dataset', `csv:${csv}`, '--model', join(root, 'toy.json'), '--epochs', '1', '--batch-size', '20', '--seed', '4', '--lr', '0.1'];

  it('trains with the right files, names the node and the cause otherwise, and logs each refusal naming the peer', async () => {
    writeFileSync(join(root, 'toy.json'), JSON.stringify({ inputShape: [4], layers: [{ type: 'dense', inputs: 4, units: 8 }, { type: 'relu' }, { type: 'dense', inputs: 8, units: 3 }], loss: 'softmaxCrossEntropy' }));
    const local = await chainrule(...trainArgs);
    expect(local.status, local.stderr).toBe(0);
    const want = /weights sha256 ([0-9a-f]{64})/.exec(local.stdout)![1];
    const remote = await chainrule(...trainArgs, '--placement', 'grpc', '--nodes', address, '--tls', certs, '--token-file', tokenFile);
    expect(remote.status, remote.stderr).toBe(0);
    expect(/weights sha256 ([0-9a-f]{64})/.exec(remote.stdout)![1]).toBe(want);

    const wrong = await chainrule(...trainArgs, '--placement', 'grpc', '--nodes', address, '--tls', certs, '--token-file', wrongTokenFile);
    expect(wrong.status).toBe(2);
    expect(wrong.stderr).toMatch(new RegExp(`chainrule: gRPC node ${address} \\(stage 0\\): connect: node ${address} refused the call: wrong bearer token`));
    const stranger = await chainrule(...trainArgs, '--placement', 'grpc', '--nodes', address, '--tls', foreign, '--token-file', tokenFile);
    expect(stranger.status).toBe(2);
    expect(stranger.stderr).toMatch(new RegExp(`chainrule: TLS handshake with node ${address} \\(stage 0\\) failed: node ${address}'s certificate is not signed by our CA`));
    await vi.waitFor(() => expect(nodeStderr()).toMatch(/ refused TLS handshake from 127\.0\.0\.1:\d+ failed: the client hung up during the handshake/));
    expect(nodeStderr()).toMatch(/chainrule node 127\.0\.0\.1:\d+ listening on 127\.0\.0\.1:\d+: mutual TLS \(chainrule node, CA from .*\), bearer tokens from .*token, at most 1 run at a time/);
    expect(nodeStderr()).toMatch(/connection from 127\.0\.0\.1:\d+ \(CN=chainrule coordinator\) \(first call: Call\)/);
    expect(nodeStderr()).toMatch(/ run run-[0-9a-f]{8}… opened by 127\.0\.0\.1:\d+ \(CN=chainrule coordinator\)/);
    expect(nodeStderr()).toMatch(/ run run-[0-9a-f]{8}… ended: its coordinator shut it down/);
    expect(nodeStderr()).toMatch(/ refused 127\.0\.0\.1:\d+ \(CN=chainrule coordinator\): Call: wrong bearer token/);
    expect(nodeStderr()).toMatch(/ refused TLS handshake from 127\.0\.0\.1:\d+ failed: the client hung up during the handshake/);
    // One event, one line: every line is a log line.
    for (const l of nodeStderr().trim().split('\n')) expect(l).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z chainrule node \S+ (listening|connection|run|refused|error|warning) /);
  });

  it('stops on SIGTERM with exit 0', async () => {
    // A node of its own: the other tests keep theirs running.
    const { child: own, address: at, stderr: ownStderr } = await nodeProcess();
    started.push(own);
    // NOTE: the node prints its listening line before it installs its SIGTERM handler, so a
    // signal sent on that line alone can beat the handler. Once it has answered a plaintext
    // probe (and logged the refusal), its start-up code has run.
    const [host, port] = [at.slice(0, at.lastIndexOf(':')), Number(at.slice(at.lastIndexOf(':') + 1))];
    const probe = connect(port, host, () => probe.write('not TLS\r\n'));
    probe.on('error', () => {});
    await vi.waitFor(() => expect(ownStderr()).toMatch(/ refused TLS handshake from 127\.0\.0\.1:\d+ failed: not TLS/));
    probe.destroy();
    const code = await new Promise<number | null>((resolve) => { own.once('exit', resolve); own.kill('SIGTERM'); });
    expect(code).toBe(0);
  });

  it('refuses to listen on 0.0.0.0 without TLS, and says how to fix it', async () => {
    const r = await chainrule('node', '--host', '0.0.0.0', '--port', '0');
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/chainrule node: refusing to listen on 0\.0\.0\.0:0 without TLS: anyone who can reach it could drive this node/);
    expect(r.stderr).toMatch(/How to fix: pass --tls DIR .* or --insecure/);
    const both = await chainrule('node', '--port', '0', '--tls', certs, '--insecure');
    expect(both.status).toBe(2);
    expect(both.stderr).toMatch(/--tls and --insecure contradict each other/);
    const ignored = await chainrule('node', '--port', '0', '--insecure');
    expect(ignored.status).toBe(2);
    expect(ignored.stderr).toMatch(/--insecure only matters off loopback, and --host 127\.0\.0\.1 is loopback/);
  });
});
