/**
 * `npx tsx bench/zero-bubble.ts [--seconds S] [--rounds N] [--commit-every N]`: 1F1B against
 * ZB-H1 on the wide MLP (bench/wide-mlp.json, batch 256, SGD) on worker threads, K=2 stages,
 * M=8, each as a ratio to one process with M=1 measured in the same round, rounds interleaved
 * (a neighbour's burst on a shared machine then hits every configuration alike), with the
 * measured bubble next to the theoretical one and the CPU time per sample (all threads of the
 * process, a figure the neighbours disturb less). Prints each round, then medians and spread.
 */
import { parseArgs } from 'node:util';
import type { CoordinatorOptions } from '../coordinator/index.js';
import { bubbleFormula, theoreticalBubble } from '../coordinator/schedules/index.js';
import { loadMnist } from '../src/data/index.js';
import { mlpSpec } from '../src/nn/index.js';
import { measureThroughput } from './throughput.js';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '4' }, rounds: { type: 'string', default: '3' }, 'commit-every': { type: 'string' } } });
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);
const commit = values['commit-every'] === undefined ? {} : { commitEvery: Number(values['commit-every']) };
const cpuMs = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
const spec = mlpSpec([1024, 1024, 1024, 1024, 1024], 784, 10); // bench/wide-mlp.json
const mnist = loadMnist();
const base: CoordinatorOptions = { model: spec, batchSize: 256, optimizer: 'sgd', lr: 0.01 };
const M = 8;
const configs: { name: string; o: CoordinatorOptions; schedule?: string }[] = [
  { name: 'one process, M=1', o: base },
  { name: `threads K=2 1f1b M=${M}`, o: { ...base, ...commit, placement: 'threads', stages: 2, microBatches: M, schedule: '1f1b' }, schedule: '1f1b' },
  { name: `threads K=2 zb-h1 M=${M}`, o: { ...base, ...commit, placement: 'threads', stages: 2, microBatches: M, schedule: 'zb-h1' }, schedule: 'zb-h1' },
];
type Figures = { sps: number; ratio: number; bubble: number; cpu: number };
const results = new Map<string, Figures[]>();
for (let round = 0; round < rounds; round++) {
  let one = 0;
  for (const c of configs) {
    const r = await measureThroughput(c.o, mnist, seconds, cpuMs);
    if (!c.schedule) one = r.samplesPerSecond;
    const ratio = r.samplesPerSecond / one;
    const cpu = (r.cpuMs / (r.steps * base.batchSize!)) * 1000; // CPU µs per sample, over all windows
    (results.get(c.name) ?? results.set(c.name, []).get(c.name)!).push({ sps: r.samplesPerSecond, ratio, bubble: r.bubble, cpu });
    const theory = c.schedule ? `  theoretical ${bubbleFormula(c.schedule)} = ${theoreticalBubble(c.schedule, 2, M).toFixed(3)}` : '';
    console.log(`round ${round + 1}  ${c.name.padEnd(24)} ${r.samplesPerSecond.toFixed(0).padStart(6)} samples/s  ×${ratio.toFixed(3)} one process  ${cpu.toFixed(0)} CPU µs/sample  bubble ${r.bubble.toFixed(3)}${theory}`);
  }
}
const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2; };
const stat = (xs: number[], d: number) => `${median(xs).toFixed(d)} (${Math.min(...xs).toFixed(d)}–${Math.max(...xs).toFixed(d)})`;
console.log(`\nmedian (min–max) over ${rounds} rounds${values['commit-every'] === undefined ? '' : `, --commit-every ${values['commit-every']}`}:`);
for (const [name, rs] of results) {
  console.log(`  ${name.padEnd(24)} ${stat(rs.map((r) => r.sps), 0)} samples/s  ×${stat(rs.map((r) => r.ratio), 3)}  ${stat(rs.map((r) => r.cpu), 0)} CPU µs/sample  bubble ${stat(rs.map((r) => r.bubble), 3)}`);
}
const f = results.get(configs[1]!.name)!;
const z = results.get(configs[2]!.name)!;
const perRound = z.map((r, i) => r.sps / f[i]!.sps);
console.log(`  zb-h1 / 1f1b samples/s per round: ${perRound.map((x) => x.toFixed(3)).join(', ')} (median ${median(perRound).toFixed(3)})`);
process.exit(0);
