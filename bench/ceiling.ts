/**
 * The ceiling of R=2 data parallelism on this machine: two processes that each train the
 * model on half the minibatch in the same wall-clock window (each warms up, then all start
 * together) and never communicate (no reduction, no synchronization, no coordinator). Their
 * summed samples/s, against one process on the whole
 * batch, is the most any two single-threaded replicas can reach here: what is left is the
 * cores' shared caches, memory bandwidth and clock.
 *
 * @example const { samplesPerSecond } = await replicaCeiling({ model: 'mlp', batchSize: 64 }, 4);
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { CoordinatorOptions } from '../coordinator/index.js';

export interface Ceiling { samplesPerSecond: number; each: number[] }

/** `o` must be JSON (a model spec or name, no dataset): it goes to the children on their command line. */
export async function replicaCeiling(o: CoordinatorOptions, seconds: number, replicas = 2): Promise<Ceiling> {
  const batchSize = o.batchSize ?? 64;
  if (batchSize % replicas !== 0) throw new Error(`replicaCeiling: batch ${batchSize} is not divisible by ${replicas}`);
  const fromSource = import.meta.url.endsWith('.ts');
  const child = fileURLToPath(new URL(`./ceiling-child.${fromSource ? 'ts' : 'js'}`, import.meta.url));
  const args = JSON.stringify({ ...o, batchSize: batchSize / replicas, seconds });
  const children = Array.from({ length: replicas }, () => {
    const p = spawn(process.execPath, [...(fromSource ? ['--import', 'tsx'] : []), child, args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let onReady: () => void = () => {};
    const ready = new Promise<void>((resolve) => { onReady = resolve; });
    p.stdout.on('data', (d: Buffer) => { out += d.toString(); if (out.includes('ready')) onReady(); });
    p.stderr.on('data', (d: Buffer) => { err = (err + d.toString()).slice(-2000); });
    const result = new Promise<number>((resolve, reject) => {
      p.once('exit', (code) => {
        const line = out.trim().split('\n').pop() ?? '';
        if (code === 0 && line.startsWith('{')) resolve((JSON.parse(line) as { samplesPerSecond: number }).samplesPerSecond);
        else reject(new Error(`the ceiling's child exited with ${code}: ${err.trim().split('\n').slice(-3).join(' | ')}`));
      });
    });
    // A child that dies before it is ready must not leave the others waiting for ever.
    return { p, ready: Promise.race([ready, result.then(() => {})]), result };
  });
  await Promise.all(children.map((c) => c.ready));
  // One window for all: every child starts its timed steps at once.
  for (const c of children) c.p.stdin.write('go\n');
  const each = await Promise.all(children.map((c) => c.result));
  return { samplesPerSecond: each.reduce((a, b) => a + b, 0), each };
}
