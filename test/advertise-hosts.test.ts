/**
 * `advertise` across real hosts: network namespaces on a bridge (test/netns.ts), a
 * `chainrule node` process inside each on its own address with mutual TLS and a token, and
 * this process on the bridge's address. A mixed placement whose thread and in-process stages
 * this process serves trains to the single-process weights only because the node reaches them
 * at the advertised address; a grpc run whose node is killed mid-epoch moves the lost stages
 * into this process, which the surviving node reaches the same way. Skipped, with the reason,
 * where namespaces cannot be made (no root, no `ip`).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { firstDigits, startNodeProcess, tinySpec } from './helpers.js';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Coordinator, MixedTransport, type CoordinatorOptions } from '../coordinator/index.js';
import { makeCerts } from '../coordinator/certs.js';
import { TLS_FILES } from '../node/tls.js';
import { makeTestHosts } from './netns.js';

const net = makeTestHosts('10.78.0', 2, 'adv');
const certs = mkdtempSync(join(tmpdir(), 'chainrule-advertise-'));
const tokenFile = join(certs, TLS_FILES.token);
const children: ChildProcess[] = [];

const spec = tinySpec;
const data = firstDigits(256, 64);
const base: CoordinatorOptions = { model: spec, dataset: data, epochs: 2, batchSize: 32, lr: 0.1, seed: 9, microBatches: 4, schedule: '1f1b' };

async function train(o: CoordinatorOptions): Promise<Awaited<ReturnType<Coordinator['train']>>> {
  const c = new Coordinator({ ...base, ...o });
  try { return await c.train(); } finally { await c.close(); }
}

/** `chainrule node` inside host h's namespace, on its own address, with TLS and the token. */
async function nodeOn(h: (typeof net.hosts)[number]): Promise<{ child: ChildProcess; address: string }> {
  const n = await startNodeProcess(['--host', h.ip, '--port', '7401', '--tls', certs, '--token-file', tokenFile], ['ip', 'netns', 'exec', h.ns]);
  children.push(n.child);
  return n;
}

describe.skipIf(net.skip !== null)(`this process's own stages, reached from other hosts by the advertised address${net.skip ? ` (skipped: ${net.skip})` : ''}`, () => {
  let reference = '';
  beforeAll(async () => {
    // One certificate for every node, this host included: it serves stages too.
    makeCerts(certs, { hosts: [net.self, ...net.hosts.map((h) => h.ip)] });
    reference = (await train({ stages: 3, partition: [1, 1, 1] })).weightsSha256;
  }, 60_000);
  afterAll(async () => {
    await Promise.all(children.map((c) => new Promise((resolve) => { if (c.exitCode !== null || c.signalCode !== null) resolve(null); else { c.once('exit', resolve); c.kill('SIGKILL'); } })));
    net.remove();
  });

  it('a mixed placement, a thread and an in-process stage here and one on another host: refused without advertise, the single-process weights with it', async () => {
    const { child, address } = await nodeOn(net.hosts[0]!);
    try {
      expect(address).toBe(`${net.hosts[0]!.ip}:7401`);
      const places = ['threads', 'local', `grpc:${address}`];
      expect(() => new MixedTransport(places, { tls: certs, tokenFile })).toThrow(new RegExp(`node ${address.replace(/\./g, '\\.')} is on another host.*pass advertise \\(--advertise HOST\\)`));
      const mixed = new MixedTransport(places, { advertise: net.self, tls: certs, tokenFile });
      const s = await train({ stages: 3, partition: [1, 1, 1], placement: mixed });
      expect(s.weightsSha256).toBe(reference);
    } finally {
      await new Promise((resolve) => { child.once('exit', resolve); child.kill('SIGKILL'); });
    }
  }, 120_000);

  it('a grpc run across two hosts whose node is killed mid-epoch: with --advertise this process takes over, the surviving node reaches it, same weights', async () => {
    const a = await nodeOn(net.hosts[0]!);
    const b = await nodeOn(net.hosts[1]!);
    const nodes = [a.address, b.address];
    const two = (await train({ stages: 2 })).weightsSha256;
    let killed = false;
    const s = await train({
      stages: 2, placement: 'grpc', nodes, commitEvery: 1, advertise: net.self, tls: certs, tokenFile,
      onStep: (r) => { if (r.step === 3 && !killed) { killed = true; b.child.kill('SIGKILL'); } },
    });
    expect(s.weightsSha256).toBe(two);
    expect(s.recoveries).toHaveLength(1);
    expect(s.recoveries[0]!.replacement).toMatch(new RegExp(`^${net.self.replace(/\./g, '\\.')}:\\d+$`));
  }, 120_000);
});
