/**
 * `npx tsx bench/interleaved.ts [--seconds S] [--rounds N] [--batch-size B]`: 1F1B against interleaved 1F1B
 * (`--virtual-stages` 2 and 3) on the wide MLP (bench/wide-mlp.json, batch 256 by default, SGD) on worker
 * threads, K=2 stages, M=8, rounds interleaved (a neighbour's burst on a shared machine then
 * hits every configuration alike), with the measured bubble next to the theoretical one.
 */
import { parseArgs } from 'node:util';
import type { CoordinatorOptions } from '../coordinator/index.js';
import { theoreticalBubble } from '../coordinator/schedules/index.js';
import { loadMnist } from '../src/data/index.js';
import { mlpSpec } from '../src/nn/index.js';
import { measureThroughput } from './throughput.js';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '4' }, rounds: { type: 'string', default: '2' }, 'batch-size': { type: 'string', default: '256' } } });
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);
const spec = mlpSpec([1024, 1024, 1024, 1024, 1024], 784, 10); // bench/wide-mlp.json
const mnist = loadMnist();
const M = 8;
const base: CoordinatorOptions = { model: spec, batchSize: Number(values['batch-size']), optimizer: 'sgd', lr: 0.01, placement: 'threads', stages: 2, microBatches: M };
const configs: { name: string; o: CoordinatorOptions; V: number }[] = [
  { name: `K=2 1f1b M=${M}`, o: { ...base, schedule: '1f1b' }, V: 1 },
  { name: `K=2 interleaved V=2 M=${M}`, o: { ...base, schedule: 'interleaved-1f1b', virtualStages: 2 }, V: 2 },
  { name: `K=2 interleaved V=3 M=${M}`, o: { ...base, schedule: 'interleaved-1f1b', virtualStages: 3 }, V: 3 },
];
for (let round = 0; round < rounds; round++) {
  for (const c of configs) {
    const r = await measureThroughput(c.o, mnist, seconds);
    const theory = theoreticalBubble(c.V === 1 ? '1f1b' : 'interleaved-1f1b', 2, M, c.V);
    console.log(`round ${round + 1}  ${c.name.padEnd(26)} ${r.samplesPerSecond.toFixed(0).padStart(6)} samples/s  measured bubble ${r.bubble.toFixed(3)}  theoretical ${theory.toFixed(3)}  (${r.steps} steps)`);
  }
}
process.exit(0);
