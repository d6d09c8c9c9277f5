/**
 * Stages this process serves itself, for nodes on other hosts (`advertise`): a mixed placement
 * whose in-process and thread stages listen on every interface with mutual TLS and a token and
 * are advertised by name, trains to the in-process weights; a node on another host without
 * `advertise` is refused before anything starts; a process that ran a mixed placement exits
 * once it has closed it, even when a neighbour hung mid-step; a lost node's actors are taken
 * over only where the other nodes can reach them. Real processes, sockets and threads; every
 * connection goes to loopback (the advertised name is `localhost`).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { runTsx, startNodeProcess, type Finished } from './helpers.js';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { makeCerts } from '../coordinator/certs.js';
import { NodePool } from '../coordinator/node-pool.js';
import { MixedTransport, TransportError } from '../coordinator/transports/index.js';
import { Coordinator } from '../coordinator/index.js';
import { healthy, makeClient, unary } from '../node/grpc-common.js';
import { startNode } from '../node/server.js';
import type { Reply } from '../src/wire/index.js';
import { createServer } from 'node:net';
import { Inbox } from '../node/inbox.js';
import { TLS_FILES, clientCredentials, diagnoseTls, loadTls } from '../node/tls.js';
import { Tensor } from '../src/tensor/tensor.js';

const root = mkdtempSync(join(tmpdir(), 'chainrule-mixed-hosts-'));
const certs = join(root, 'certs');
const other = join(root, 'other-certs');
const tokenFile = join(certs, TLS_FILES.token);
const repo = join(import.meta.dirname, '..');
const bin = join(repo, 'coordinator', 'bin.ts');
const mod = (p: string) => JSON.stringify(pathToFileURL(join(repo, p)).href);

beforeAll(() => {
  makeCerts(certs, { hosts: ['localhost'] });
  makeCerts(other, { hosts: ['hostb.example'] });
});

/** A `chainrule node` process, once it listens, and its address. */
const nodeProcess = (...args: string[]) => startNodeProcess(['--port', '0', ...args]);

/** Runs a script (TypeScript, through tsx) in a process of its own; resolves when that process exits, with its output. */
function script(name: string, body: string, ...args: string[]): Promise<Finished> {
  const file = join(root, name);
  writeFileSync(file, body);
  return runTsx(file, args, { cwd: repo });
}

// The run every script trains: three one-layer stages on a slice of the digits.
const runPrelude = `
import { Coordinator, MixedTransport } from ${mod('coordinator/index.ts')};
import { loadMnist, subset } from ${mod('src/data/index.ts')};
const m = loadMnist();
const data = { train: subset(m.train, Array.from({ length: 128 }, (_, i) => i)), test: subset(m.test, Array.from({ length: 50 }, (_, i) => i)) };
const spec = { inputShape: [784], layers: [{ type: 'dense', inputs: 784, units: 16 }, { type: 'relu' }, { type: 'dense', inputs: 16, units: 10 }], loss: 'softmaxCrossEntropy' };
const base = { model: spec, dataset: data, epochs: 1, batchSize: 32, lr: 0.1, seed: 5, stages: 3, partition: [1, 1, 1], microBatches: 4 };
`;

describe('a mixed placement with a node on another host', () => {
  it('is refused before anything starts without advertise, naming --advertise and the node', () => {
    const far = () => new MixedTransport(['threads', 'local', 'grpc:hostb.example:7001']);
    expect(far).toThrow(TransportError);
    expect(far).toThrow(/the mixed placement: node hostb\.example:7001 is on another host, and this process's stages listen on 127\.0\.0\.1, which it cannot reach; pass advertise \(--advertise HOST\): the name or IP by which hostb\.example reaches this host/);
    try { far(); } catch (e) { expect((e as TransportError).code).toBe('NO_ADVERTISE'); }
    // Nodes only (nothing served here), or every node on loopback: nothing to advertise.
    expect(() => new MixedTransport(['grpc:hostb.example:7001', 'grpc:hostc.example:7001'])).not.toThrow();
    expect(() => new MixedTransport(['threads', 'grpc:127.0.0.1:7001', 'grpc:localhost:7002', 'grpc:[::1]:7003'])).not.toThrow();
  });

  it('advertise needs a host without a port, TLS, and a node certificate that names it', () => {
    const places = ['local', 'grpc:hostb.example:7001'];
    expect(() => new MixedTransport(places, { advertise: 'hosta:7001', tls: certs })).toThrow(/the mixed placement's advertise \(--advertise\) must be a host name or IP address without a port, got "hosta:7001"/);
    expect(() => new MixedTransport(places, { advertise: 'hosta' })).toThrow(/advertise \(--advertise\) hosta: this process's stages would listen on every interface without TLS\nHow to fix: pass the mixed placement's tls \(--tls\) DIR made by `chainrule certs DIR --hosts \.\.\.,hosta`/);
    expect(() => new MixedTransport(places, { advertise: 'hosta.example', tls: other })).toThrow(/--tls .*other-certs: the node certificate does not name hosta\.example \(the mixed placement's advertise \(--advertise\)\), so nodes would refuse this process's stages\nHow to fix: remake the directory with `chainrule certs .*other-certs --hosts \.\.\.,hosta\.example --force`/);
    expect(() => new MixedTransport(places, { advertise: 'hostb.example', tls: other, tokenFile })).not.toThrow();
    expect(() => new MixedTransport(places, { advertise: 'localhost', tls: join(root, 'nowhere') })).toThrow(/--tls .*nowhere: the CA certificate .* does not exist/);
  });

  it('is refused by the Coordinator too when advertise is given as a run option, since the transport takes its own', () => {
    const mixed = new MixedTransport(['threads', 'grpc:127.0.0.1:7001']);
    expect(() => new Coordinator({ placement: mixed, stages: 2, advertise: 'localhost' })).toThrow(/options\.advertise is only used with options\.placement grpc \(got a mixed Transport object, which takes its own\)/);
  });

  it('trains to the in-process weights with its own stages on every interface, advertised by name, over mutual TLS with a token; the process exits after close()', async () => {
    const node = await nodeProcess('--tls', certs, '--token-file', tokenFile);
    try {
      const r = await script('mixed-advertised.mts', `${runPrelude}
const local = new Coordinator(base);
const want = (await local.train()).weightsSha256;
await local.close();
const mixed = new MixedTransport(['threads', 'local', 'grpc:' + process.argv[2]], { advertise: 'localhost', tls: process.argv[3], tokenFile: process.argv[4] });
const c = new Coordinator({ ...base, placement: mixed, schedule: '1f1b' });
const got = (await c.train()).weightsSha256;
await c.close();
console.log(JSON.stringify({ want, got }));
`, node.address, certs, tokenFile);
      expect(r.status, r.stderr).toBe(0);
      const { want, got } = JSON.parse(r.stdout.trim().split('\n').pop()!) as { want: string; got: string };
      expect(got).toBe(want);
      // The thread's and the in-process stage's servers: every interface, TLS and the token.
      const listening = r.stderr.split('\n').filter((l) => / listening on 0\.0\.0\.0:\d+: mutual TLS \(chainrule node, CA from .*\), bearer tokens from .*token/.test(l));
      expect(listening, r.stderr).toHaveLength(2);
    } finally {
      node.child.kill('SIGKILL');
    }
  });

  it('a process whose mixed run hung on a stopped node exits once close() returns, with no wait left behind', async () => {
    // The node process is the script's own, stopped (SIGSTOP) mid-step: a neighbour that never
    // answers. Before, a waiting stage kept a 120 s timer alive after close().
    const r = await script('mixed-hung.mts', `${runPrelude}
import { spawn } from 'node:child_process';
const node = spawn(process.execPath, ['--import', 'tsx', process.argv[2], 'node', '--port', '0'], { stdio: ['ignore', 'pipe', 'ignore'] });
const address = await new Promise((resolve) => { let o = ''; node.stdout.on('data', (b) => { o += b; const m = /listening on (\\S+)/.exec(o); if (m) resolve(m[1]); }); });
let stopped = false;
const c = new Coordinator({ ...base, epochs: 3, commitEvery: 0, placement: new MixedTransport(['local', 'local', 'grpc:' + address]),
  onStep: (s) => { if (s.step === 2) { node.kill('SIGSTOP'); stopped = true; } } });
const training = c.train().then(() => 'finished', (e) => 'failed: ' + e.message);
while (!stopped) await new Promise((r) => setTimeout(r, 50));
await new Promise((r) => setTimeout(r, 500));
await c.close();
node.kill('SIGKILL');
node.stdout.destroy();
console.log('closed; training ' + await training);
`, bin);
    expect(r.signal, r.stderr).toBe(null);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/closed; training failed: /);
  }, 100_000);
});

describe('a released actor ends its waits', () => {
  it('a take waiting for a neighbour fails at once, naming the actor, and holds no timer', async () => {
    const inbox = new Inbox(() => 1, 120_000, 'stage 1');
    const waiting = inbox.take('activation', 0, 0);
    inbox.close('released (its run was shut down) while waiting for a neighbour');
    await expect(waiting).rejects.toThrow('stage 1: released (its run was shut down) while waiting for a neighbour');
    // A later delivery is no one's: it is kept for nobody and nothing throws.
    await inbox.deliver('activation', 0, 1, Tensor.ones([1]));
  });
});

describe('taking over a lost node', () => {
  it('with nodes on other hosts and no advertise, fails naming --advertise and --spares, after the checkpoint is written', async () => {
    const pool = new NodePool(['hosta.example:7001', 'hostb.example:7001']);
    let kept = 0;
    const e = await pool.replace(['hostb.example:7001'], { step: 12, commitStep: 10, keep: () => { kept++; return '/ckpt/step-10'; } }).catch((err: unknown) => err);
    expect(kept).toBe(1);
    expect((e as { code?: string }).code).toBe('NO_ADVERTISE');
    expect((e as Error).message).toMatch(/node hostb\.example:7001 was lost at step 12 and no spare is left; this process cannot take over its actors, since node hosta\.example:7001 on another host would reach them at 127\.0\.0\.1; the checkpoint of step 10 was written to \/ckpt\/step-10\nHow to fix: pass --spares, or --advertise HOST/);
    await pool.close();
  });

  it('--advertise is a run option of the grpc placement: it needs --tls, and means nothing elsewhere', async () => {
    const o = { model: { inputShape: [784], layers: [{ type: 'dense', inputs: 784, units: 10 }], loss: 'softmaxCrossEntropy' } };
    expect(() => new Coordinator({ ...o, placement: 'grpc', nodes: ['hosta.example:7001'], advertise: 'localhost' })).toThrow(/options\.advertise \(--advertise\) localhost: this process's stages would listen on every interface without TLS/);
    expect(() => new Coordinator({ ...o, placement: 'grpc', nodes: ['hosta.example:7001'], advertise: 'host:1', tls: certs })).toThrow(/options\.advertise \(--advertise\) must be a host name or IP address without a port, got "host:1"/);
    expect(() => new Coordinator({ ...o, advertise: 'localhost' })).toThrow(/options\.advertise is only used with options\.placement grpc \(got local\)/);
    const c = new Coordinator({ ...o, placement: 'grpc', nodes: ['hosta.example:7001'], advertise: 'localhost', tls: certs, tokenFile });
    await c.close();
  });

  it('with advertise, serves the actors on every interface with the run\'s TLS and token, under the advertised name', async () => {
    expect(() => new NodePool(['hosta.example:7001'], [], { advertise: 'localhost' })).toThrow(/options\.advertise \(--advertise\) localhost: this process's stages would listen on every interface without TLS/);
    const pool = new NodePool(['hosta.example:7001', 'hostb.example:7001'], [], { advertise: 'localhost', tls: certs, tokenFile });
    try {
      const at = await pool.replace(['hostb.example:7001'], { step: 3, commitStep: 3, keep: () => null });
      expect(at).toMatch(/^localhost:\d+$/);
      expect(pool.nodes).toEqual(['hosta.example:7001', at]);
      const tlsClient = makeClient(at!, clientCredentials(loadTls(certs, 'coordinator')));
      const plainClient = makeClient(at!, grpc.credentials.createInsecure());
      try {
        expect(await healthy(tlsClient, 5000)).toBe(true);
        expect(await healthy(plainClient, 2000)).toBe(false);
      } finally {
        tlsClient.close();
        plainClient.close();
      }
    } finally {
      await pool.close();
    }
  });
});

describe('a node told a replica peer it cannot reach (an address of another host, say)', () => {
  it('answers the step with an error naming the peer, and keeps serving', async () => {
    const n = await startNode({ port: 0, log: false });
    const dead = await new Promise<number>((resolve) => {
      const srv = createServer().listen(0, '127.0.0.1', () => { const p = (srv.address() as { port: number }).port; srv.close(() => resolve(p)); });
    });
    const c = makeClient(n.address);
    const h = { run: 'run-peerless', stage: 0, replica: 0, step: 0, microBatch: -1 };
    const model = { inputShape: [4], layers: [{ type: 'dense', inputs: 4, units: 3 }], loss: 'softmaxCrossEntropy' };
    try {
      expect(((await unary(c, n.address, 'Call', { ...h, type: 'configure', config: { model, start: 0, end: 1, seed: 1, capacity: 1, replicas: 2 } }, 3000)) as Reply).type).toBe('configured');
      expect(((await unary(c, n.address, 'Call', { ...h, type: 'connect', peers: [null, { address: `127.0.0.1:${dead}`, stage: 0, replica: 1 }] }, 3000)) as Reply).type).toBe('ok');
      const r = (await unary(c, n.address, 'Call', { ...h, type: 'runStep', actions: ['0F0', '0B0'], inputs: [Tensor.ones([2, 4])], targets: [Int32Array.from([0, 1])] }, 10_000)) as Reply & { code: string; message: string };
      expect(r.type).toBe('error');
      expect(r.code).toBe('NODE_UNREACHABLE');
      expect(r.message).toMatch(new RegExp(`^node ${n.address}: stage 0 of replica 0: runStep \\(step 0\\): gRPC node 127\\.0\\.0\\.1:${dead}: delivery stream broke`));
      expect(((await unary(c, n.address, 'Call', { ...h, type: 'getParams' }, 3000)) as Reply).type).toBe('tensors');
      expect(((await unary(c, n.address, 'Call', { ...h, type: 'shutdown' }, 3000)) as Reply).type).toBe('ok');
    } finally {
      c.close();
      await n.close();
    }
  });
});

describe('a node that is gone, in a TLS run', () => {
  it('is unreachable, not a TLS failure: the diagnosis finds nothing wrong with TLS, so recovery treats it as a lost node', async () => {
    const dead = await new Promise<number>((resolve) => {
      const srv = createServer().listen(0, '127.0.0.1', () => { const p = (srv.address() as { port: number }).port; srv.close(() => resolve(p)); });
    });
    expect(await diagnoseTls(`127.0.0.1:${dead}`, loadTls(certs, 'coordinator'))).toBe(null);
  });
});
