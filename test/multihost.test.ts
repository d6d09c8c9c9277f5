/**
 * Two hosts for real: the test makes two network namespaces joined by a bridge (10.77.0.2 and
 * 10.77.0.3), starts a `chainrule node` process inside each, listening on its own address with
 * mutual TLS and a token, and trains 2 replicas × 2 stages across them, both the pipeline
 * links and the replicas' reduction crossing hosts. The weights equal the single-process run's.
 * Skipped, with the reason, where namespaces cannot be made (no root, no `ip`).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { firstDigits, startNodeProcess, tinySpec } from './helpers.js';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Coordinator, type CoordinatorOptions } from '../coordinator/index.js';
import { makeCerts } from '../coordinator/certs.js';
import { TLS_FILES } from '../node/tls.js';
import { makeTestHosts } from './netns.js';

const net = makeTestHosts('10.77.0', 2, 'mh');
const { hosts } = net;

const spec = tinySpec;
const data = firstDigits(256, 64);
const base: CoordinatorOptions = { model: spec, dataset: data, epochs: 1, batchSize: 32, lr: 0.1, seed: 8, replicas: 2, stages: 2, microBatches: 2, schedule: '1f1b', optimizer: 'adam' };

const skipReason = net.skip;
const certs = mkdtempSync(join(tmpdir(), 'chainrule-multihost-'));
const children: ChildProcess[] = [];

/** `chainrule node` inside host h's namespace, on its own address, with TLS and the token. */
async function nodeOn(h: (typeof hosts)[number]): Promise<string> {
  const n = await startNodeProcess(['--host', h.ip, '--port', '7301', '--tls', certs, '--token-file', join(certs, TLS_FILES.token)], ['ip', 'netns', 'exec', h.ns]);
  children.push(n.child);
  return n.address;
}

describe.skipIf(skipReason !== null)(`two hosts in network namespaces${skipReason ? ` (skipped: ${skipReason})` : ''}`, () => {
  let addresses: string[] = [];
  beforeAll(async () => {
    makeCerts(certs, { hosts: hosts.map((h) => h.ip) });
    addresses = await Promise.all(hosts.map(nodeOn));
  }, 60_000);
  afterAll(async () => {
    await Promise.all(children.map((c) => new Promise((resolve) => { if (c.exitCode !== null || c.signalCode !== null) resolve(null); else { c.once('exit', resolve); c.kill('SIGKILL'); } })));
    net.remove();
  });

  it('2 replicas × 2 stages across two hosts (pipeline and reduction both cross them), mutual TLS: the single-process weights', async () => {
    expect(addresses).toEqual(['10.77.0.2:7301', '10.77.0.3:7301']);
    const [a, b] = addresses as [string, string];
    // Replica-major: replica 0 is stage 0 on A, stage 1 on B; replica 1 the other way round.
    const c = new Coordinator({ ...base, placement: 'grpc', nodes: [a, b, b, a], tls: certs, tokenFile: join(certs, TLS_FILES.token) });
    let remote: string;
    try { remote = (await c.train()).weightsSha256; } finally { await c.close(); }
    const l = new Coordinator({ ...base, placement: 'local' });
    try { expect(remote).toBe((await l.train()).weightsSha256); } finally { await l.close(); }
  }, 120_000);
});
