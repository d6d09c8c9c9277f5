/**
 * `chainrule node --health-port P`: a real node process with mutual TLS and a token answers
 * the standard gRPC health check in plaintext on P (what Kubernetes' gRPC probe sends: no
 * certificate, no token), serves nothing else there, and its main port still refuses plaintext.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { chainruleBin, freePort, runTsx, startNodeProcess, type NodeProcess } from './helpers.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { makeCerts } from '../coordinator/certs.js';
import { startNode } from '../node/server.js';
import { makeClient, unary } from '../node/grpc-common.js';
import { TLS_FILES } from '../node/tls.js';
import { gpipe } from '../coordinator/schedules/index.js';
import { Tensor } from '../src/tensor/tensor.js';
import { formatAction, type Reply } from '../src/wire/index.js';

const root = mkdtempSync(join(tmpdir(), 'chainrule-health-'));
const certs = join(root, 'certs');

type HealthClient = grpc.Client & {
  check(req: { service: string }, opts: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r?: { status: string }) => void): void;
  watch(req: { service: string }): grpc.ClientReadableStream<{ status: string }>;
};
const Health = grpc.makeGenericClientConstructor(healthService as unknown as grpc.ServiceDefinition, 'Health');
const healthClient = (address: string, creds = grpc.credentials.createInsecure()) => new Health(address, creds) as unknown as HealthClient;

/** The status the Check RPC answers for `service`, or the gRPC error. */
function check(address: string, service: string, creds?: grpc.ChannelCredentials): Promise<string> {
  const c = healthClient(address, creds);
  return new Promise<string>((resolve, reject) => {
    c.check({ service }, { deadline: new Date(Date.now() + 5000) }, (e, r) => (e ? reject(e) : resolve(r!.status)));
  }).finally(() => c.close());
}

const run = (...args: string[]) => runTsx(chainruleBin, args);
/** Where a node listening with --health-port checks its health. */
const healthOf = (n: NodeProcess) => `127.0.0.1:${/health checks in plaintext on port (\d+)/.exec(n.stdout())![1]}`;

describe('chainrule node --health-port, as a real process with mutual TLS and a token', () => {
  let child: ChildProcessWithoutNullStreams;
  let main = '';
  let health = '';
  let stderr: () => string = () => '';

  beforeAll(async () => {
    makeCerts(certs, { hosts: ['127.0.0.1'] });
    const n = await startNodeProcess(['--port', '0', '--health-port', '0', '--tls', certs, '--token-file', join(certs, TLS_FILES.token)]);
    ({ child, address: main } = n);
    health = healthOf(n);
    stderr = n.stderr;
  });

  afterAll(() => { if (child.exitCode === null) child.kill('SIGKILL'); });

  it('answers SERVING in plaintext, with no certificate and no token, for the node and its service', async () => {
    expect(health).not.toBe(main);
    expect(await check(health, '')).toBe('SERVING');
    expect(await check(health, 'chainrule.StageService')).toBe('SERVING');
    const unknown = await check(health, 'no.Such').catch((e: grpc.ServiceError) => e);
    expect((unknown as grpc.ServiceError).code).toBe(grpc.status.NOT_FOUND);
    // Watch (what a long-lived balancer uses) starts with the current status too.
    const c = healthClient(health);
    try {
      const first = await new Promise<string>((resolve, reject) => {
        const w = c.watch({ service: '' });
        w.on('data', (r: { status: string }) => { resolve(r.status); w.cancel(); });
        w.on('error', (e: grpc.ServiceError) => { if (e.code !== grpc.status.CANCELLED) reject(e); });
      });
      expect(first).toBe('SERVING');
    } finally {
      c.close();
    }
    expect(stderr()).toMatch(new RegExp(`listening on ${main}: mutual TLS .*, health checks in plaintext on ${health}`));
  });

  it('serves nothing but health there: a stage call is UNIMPLEMENTED', async () => {
    const c = makeClient(health);
    try {
      const e = await unary(c, health, 'Call', { type: 'configure', run: 'run-x', stage: 0, step: 0, microBatch: -1, config: { model: { inputShape: [1], layers: [], loss: 'mse' }, start: 0, end: 0, seed: 1, capacity: 1 } } as never, 5000)
        .catch((err: Error & { code?: string }) => err);
      expect((e as { code?: string }).code).toBe('GRPC_UNIMPLEMENTED');
    } finally {
      c.close();
    }
  });

  it('the main port still refuses plaintext, health checks included, and answers them over mutual TLS', async () => {
    const plain = await check(main, '').catch((e: grpc.ServiceError) => e);
    expect(plain).toBeInstanceOf(Error);
    expect((plain as grpc.ServiceError).code).toBe(grpc.status.UNAVAILABLE);
    const { loadTls, clientCredentials } = await import('../node/tls.js');
    expect(await check(main, '', clientCredentials(loadTls(certs, 'coordinator')))).toBe('SERVING');
  });

  it('stops both ports on SIGTERM, with exit 0', async () => {
    const code = await new Promise<number | null>((resolve) => { child.once('exit', resolve); child.kill('SIGTERM'); });
    expect(code).toBe(0);
    const after = await check(health, '').catch((e: grpc.ServiceError) => e);
    expect((after as grpc.ServiceError).code).toBe(grpc.status.UNAVAILABLE);
  });
});

describe('--health-port on the command line and in the API', () => {
  it('a bad value is refused naming the flag (exit 2); a port in use names --health-port (exit 1)', async () => {
    const bad = await run('node', '--port', '0', '--health-port', 'seven');
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/chainrule node: --health-port must be an integer in 0\.\.65535, got 'seven'/);
    const taken = await startNode({ port: 0, log: false });
    try {
      const clash = await run('node', '--port', '0', '--health-port', String(taken.port));
      expect(clash.status).toBe(1);
      expect(clash.stderr).toMatch(new RegExp(`chainrule node: cannot listen for health checks on 127\\.0\\.0\\.1:${taken.port} \\(--health-port\\)`));
    } finally {
      await taken.close();
    }
    expect((await run('node', '--help')).stdout).toMatch(/--health-port P +also serve only the gRPC health service, in plaintext/);
  });

  it('startNode({ healthPort }) reports the bound port and frees it on close', async () => {
    await expect(startNode({ port: 0, healthPort: 70000, log: false })).rejects.toThrow('options.healthPort must be an integer in 0..65535, got 70000');
    const want = await freePort();
    const n = await startNode({ port: 0, healthPort: want, log: false });
    expect(n.healthPort).toBe(want);
    expect(await check(`127.0.0.1:${want}`, 'chainrule.StageService')).toBe('SERVING');
    await n.close();
    // Free again: another node can take it.
    const again = await startNode({ port: 0, healthPort: want, log: false });
    await again.close();
  });
});

describe('the health port reports what the main server does', () => {
  it('NOT_SERVING while the node drains a call in flight at SIGTERM, then gone with the node (exit 0)', async () => {
    // Stage 1 on the node process waits for stage 0's activation, sent only after the signal.
    const n = await startNodeProcess(['--port', '0', '--health-port', '0', '--drain-timeout', '60s']);
    const { child, address, exited } = n;
    const health = healthOf(n);
    const n0 = await startNode({ port: 0, log: false });
    const c0 = makeClient(n0.address);
    const c1 = makeClient(address);
    try {
      const model = { inputShape: [4], layers: [{ type: 'dense', inputs: 4, units: 8 }, { type: 'relu' }, { type: 'dense', inputs: 8, units: 3 }], loss: 'softmaxCrossEntropy' };
      const at = (k: number) => ({ run: 'health-drain', stage: k, replica: 0, step: 0, microBatch: -1 });
      const call = async (k: number, body: object): Promise<Reply> => (await unary(k === 0 ? c0 : c1, k === 0 ? n0.address : address, 'Call', { ...at(k), ...body } as never, 30_000)) as Reply;
      expect((await call(0, { type: 'configure', config: { model, start: 0, end: 2, seed: 1, capacity: 1 } })).type).toBe('configured');
      expect((await call(1, { type: 'configure', config: { model, start: 2, end: 3, seed: 1, capacity: 1 } })).type).toBe('configured');
      expect((await call(0, { type: 'connect', next: { address, stage: 1 } })).type).toBe('ok');
      expect((await call(1, { type: 'connect', prev: { address: n0.address, stage: 0 } })).type).toBe('ok');
      const actions = gpipe(2, 1).map((a) => a.map(formatAction));
      const stage1 = call(1, { type: 'runStep', actions: actions[1], targets: [Int32Array.from([0, 2])] });
      // Calls on one channel reach the node in order: once this one is answered, the runStep is being served.
      expect((await call(1, { type: 'getParams' })).type).toBe('tensors');
      expect(await check(health, '')).toBe('SERVING');

      child.kill('SIGTERM');
      await vi.waitFor(() => expect(n.stderr()).toMatch(/draining SIGTERM: .*1 call in flight/), { timeout: 30_000 });
      expect(await check(health, '')).toBe('NOT_SERVING');
      expect(await check(health, 'chainrule.StageService')).toBe('NOT_SERVING');

      expect((await call(0, { type: 'runStep', actions: actions[0], inputs: [new Tensor(Float32Array.from({ length: 8 }, (_, i) => i / 8), [2, 4])] })).type).toBe('stepDone');
      expect((await stage1).type).toBe('stepDone');
      expect(await exited).toBe(0);
      const after = await check(health, '').catch((e: grpc.ServiceError) => e);
      expect((after as grpc.ServiceError).code).toBe(grpc.status.UNAVAILABLE);
    } finally {
      c0.close();
      c1.close();
      await n0.close();
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});
