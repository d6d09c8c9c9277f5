/**
 * `npx tsx bench/node-heap.ts [rounds]`: what the nodes' heap growth (node/heap.ts) buys. Two
 * real `chainrule node` processes under `node --trace-gc`, started with V8's default
 * (`CHAINRULE_V8_HEAP=default`) and with chainrule's, alternately, serve the default MLP (R=2
 * replicas, then K=2 1F1B stages, M=4) and the CNN (K=2); each row gives samples/s (the
 * bench's windows, after its warm-up), the two nodes' mark-compacts per 1,000 steps in those
 * windows and their peak RSS. Collections depend on timing: run it on a quiet machine, and compare within a run.
 */
import { readFileSync } from 'node:fs';
import type { CoordinatorOptions } from '../coordinator/index.js';
import { tuneHeap } from '../node/heap.js';
import { loadMnist } from '../src/data/index.js';
import { cnnSpec, mlpSpec } from '../src/nn/index.js';
import { spawnNode } from './node-process.js';
import { measureThroughput } from './throughput.js';
import { printTable, type Row } from './report.js';

tuneHeap();
const rounds = Number(process.argv[2] ?? 2);
const seconds = 4;
const mnist = loadMnist();

/** A `chainrule node` under `--trace-gc` (one stdout line per collection), with this heap setting. */
async function tracedNode(heap: 'default' | 'chainrule') {
  const env = { ...process.env };
  if (heap === 'default') env.CHAINRULE_V8_HEAP = 'default'; else delete env.CHAINRULE_V8_HEAP;
  let markCompacts = 0;
  const node = await spawnNode({ nodeFlags: ['--trace-gc'], env, onStdoutLine: (line) => { if (line.includes('Mark-Compact')) markCompacts++; } });
  return {
    ...node,
    markCompacts: () => markCompacts,
    peakRssMb: () => Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${node.pid}/status`, 'utf8'))?.[1] ?? NaN) / 1024,
  };
}

const configs: Array<{ name: string; options: CoordinatorOptions }> = [
  { name: 'default MLP, gRPC R=2', options: { model: mlpSpec(), batchSize: 64, lr: 0.05, replicas: 2 } },
  { name: 'default MLP, gRPC K=2 1f1b M=4', options: { model: mlpSpec(), batchSize: 64, lr: 0.05, stages: 2, microBatches: 4, schedule: '1f1b' } },
  { name: 'CNN, gRPC K=2 1f1b M=4', options: { model: cnnSpec(), batchSize: 64, lr: 0.05, stages: 2, microBatches: 4, schedule: '1f1b' } },
];
const rows: Row[] = [];
for (let round = 0; round < rounds; round++) {
  for (const heap of ['default', 'chainrule'] as const) {
    const nodes = [await tracedNode(heap), await tracedNode(heap)];
    try {
      for (const c of configs) {
        // measureThroughput reads its counter before and after the windows: the nodes' mark-compacts.
        const t = await measureThroughput({ ...c.options, optimizer: 'sgd', placement: 'grpc', nodes: nodes.map((n) => n.address) }, mnist, seconds, () => nodes.reduce((s, n) => s + n.markCompacts(), 0));
        const mc = t.cpuMs;
        const label = `${c.name}, ${heap === 'default' ? "V8's heap growth" : "chainrule's heap growth"}, round ${round + 1}`;
        rows.push({ name: `${label}: samples/s`, value: t.samplesPerSecond, unit: 'samples/s' });
        rows.push({ name: `${label}: mark-compacts per 1,000 steps`, value: (1000 * mc) / t.steps, unit: 'count' });
        rows.push({ name: `${label}: peak RSS of the nodes`, value: Math.max(...nodes.map((n) => n.peakRssMb())), unit: 'MB' });
      }
    } finally {
      for (const n of nodes) await n.stop();
    }
  }
}
printTable(rows, 'gRPC nodes: V8\'s heap growth against chainrule\'s (node/heap.ts)');
