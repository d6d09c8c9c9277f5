/**
 * `npx tsx scripts/plan-check.ts [--quick] [--models wide,mlp,cnn] [--seconds S] [--json]`:
 * `chainrule plan`'s predictions against measured runs on this machine, for the
 * configurations of the bench's scaling table (bench/run.ts, section 3): one process with M=1
 * and with the bench's M, and with M=1 on 2 kernel threads, R=2 thread replicas, K=2 thread stages under every schedule, R=2 and
 * K=2 (1F1B) over 2 gRPC node processes on loopback. Measured as the bench measures
 * (`chainruleThroughput`: three warm-up steps, then the best of three windows); predicted from
 * one profile per model. Ends with the on-paper answer for 8 hosts of 2 cores on a 1 Gbit/s
 * link for the wide MLP. The machine should be quiet: `uptime` is printed before and after.
 */
import { execSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { CoordinatorOptions } from '../coordinator/index.js';
import { measureThroughput } from '../bench/throughput.js';
import { spawnNode } from '../bench/node-process.js';
import { interleaves, schedules } from '../coordinator/schedules/index.js';
import { candidateConfigs, configName, formatPlanTable, neededKernelThreads, neededSizes, planFromProfile, profileModel, type PlanConfig, type PlanMachine, type PlanOptions } from '../coordinator/plan.js';
import { loadMnist } from '../src/data/index.js';
import { mlpSpec, cnnSpec, layerParameterCounts, type ModelSpec } from '../src/nn/index.js';
import { selectBackend } from '../src/tensor/select.js';
import { backend } from '../src/tensor/backend.js';
import { tuneHeap } from '../node/heap.js';

// As the chainrule executable (and so `chainrule plan`) does.
tuneHeap();

const args = process.argv.slice(2);
const flag = (name: string) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : undefined; };
const quick = args.includes('--quick');
const json = args.includes('--json');
const seconds = Number(flag('--seconds') ?? (quick ? 1.5 : 4));
const wanted = (flag('--models') ?? 'wide,mlp,cnn').split(',');
const mnist = loadMnist();
selectBackend();

const uptime = () => { try { return execSync('uptime', { encoding: 'utf8' }).trim(); } catch { return 'uptime unavailable'; } };

/** CPU ms of this process (every thread) and of the node processes: independent of the machine's load. */
function cpuMs(pids: number[]): number {
  const u = process.cpuUsage();
  let ms = (u.user + u.system) / 1000;
  for (const pid of pids) {
    try {
      // utime and stime, fields 14 and 15, in clock ticks (100 per second on Linux).
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
      ms += ((Number(f[11]) + Number(f[12])) * 1000) / 100;
    } catch { /* not Linux: this process only */ }
  }
  return ms;
}

/** As bench/run.ts measures (bench/throughput.ts), with the CPU ms per step of every process in `pids`. */
async function measure(o: CoordinatorOptions, pids: number[], secs = seconds): Promise<{ samplesPerSecond: number; bubble: number; cpuMsPerStep: number }> {
  const r = await measureThroughput(o, mnist, secs, () => cpuMs(pids));
  return { samplesPerSecond: r.samplesPerSecond, bubble: r.bubble, cpuMsPerStep: r.cpuMs / r.steps };
}


const models = [
  { key: 'wide', label: 'MLP 784-1024×5-10, batch 256', spec: mlpSpec([1024, 1024, 1024, 1024, 1024], 784, 10), batchSize: 256, lr: 0.01, M: 8 },
  { key: 'mlp', label: 'MLP 784-256-128-10, batch 64', spec: mlpSpec(), batchSize: 64, lr: 0.05, M: 4 },
  { key: 'cnn', label: 'CNN, batch 64', spec: cnnSpec(), batchSize: 64, lr: 0.05, M: 4 },
].filter((m) => wanted.includes(m.key));

/** The bench's configurations for one model. */
function benchConfigs(M: number): { config: PlanConfig; options: CoordinatorOptions }[] {
  const out: { config: PlanConfig; options: CoordinatorOptions }[] = [
    { config: { placement: 'local', replicas: 1, stages: 1, microBatches: 1, schedule: 'gpipe' }, options: {} },
    { config: { placement: 'local', replicas: 1, stages: 1, microBatches: M, schedule: 'gpipe' }, options: { microBatches: M } },
    ...(backend().kernelThreads ? [{ config: { placement: 'local' as const, replicas: 1, stages: 1, microBatches: 1, schedule: 'gpipe', kernelThreads: 2 }, options: { kernelThreads: 2 } }] : []),
    { config: { placement: 'threads', replicas: 2, stages: 1, microBatches: 1, schedule: 'gpipe' }, options: { placement: 'threads', replicas: 2 } },
  ];
  // The plan does not model virtual stages (and an interleaved schedule with one chunk per stage is 1F1B).
  for (const schedule of Object.keys(schedules).filter((name) => !interleaves(name))) {
    out.push({ config: { placement: 'threads', replicas: 1, stages: 2, microBatches: M, schedule }, options: { placement: 'threads', stages: 2, microBatches: M, schedule } });
  }
  out.push({ config: { placement: 'grpc', replicas: 2, stages: 1, microBatches: 1, schedule: 'gpipe' }, options: { placement: 'grpc', replicas: 2 } });
  out.push({ config: { placement: 'grpc', replicas: 1, stages: 2, microBatches: M, schedule: '1f1b' }, options: { placement: 'grpc', stages: 2, microBatches: M, schedule: '1f1b' } });
  return out;
}

const here: PlanMachine = { cores: 2, grpcNodes: 2, hosts: 0, coresPerHost: 2, link: { latencyMs: 0.1, gbps: 1 } };
const eightHosts: PlanMachine = { cores: 2, hosts: 8, coresPerHost: 2, link: { latencyMs: 0.1, gbps: 1 } };
// With nodes of 2 kernel threads too (one per host), where the backend has them.
const eightHostsOptions = (batchSize: number): PlanOptions => ({ batchSize, machine: eightHosts, kernelThreads: backend().kernelThreads ? [2] : [] });

const before = uptime();
console.log(`plan-check: ${before}`);
const nodes = [await spawnNode(), await spawnNode()];
const report: Record<string, unknown>[] = [];
let paper: { table: string; best: unknown } | null = null;
try {
  for (const m of models) {
    const cases = benchConfigs(m.M);
    const extra = m.key === 'wide' ? candidateConfigs(layerParameterCounts(m.spec).length, eightHostsOptions(m.batchSize)) : [];
    const all = [...cases.map((c) => c.config), ...extra];
    const sizes = neededSizes(all, m.batchSize);
    const threads = neededKernelThreads(all);
    const profile = await profileModel({ spec: m.spec, data: mnist.train, microBatchSizes: sizes, optimizer: { type: 'sgd', lr: m.lr }, log: (s) => console.error(s),
      ...(threads.length > 0 ? { kernelThreads: { counts: threads, microBatchSizes: neededSizes(all, m.batchSize, true) } } : {}) });
    const predicted = planFromProfile(profile, m.spec as ModelSpec, { batchSize: m.batchSize, machine: here }, cases.map((c) => c.config));
    const rows: string[][] = [];
    for (const c of cases) {
      const p = predicted.find((x) => configName(x.config) === configName(c.config))!;
      const grpc = c.config.placement === 'grpc';
      const r = await measure({ model: m.spec, batchSize: m.batchSize, optimizer: 'sgd', lr: m.lr, ...c.options, ...(grpc ? { nodes: nodes.map((n) => n.address) } : {}) }, grpc ? nodes.map((n) => n.pid) : []);
      const error = p.samplesPerSecond / r.samplesPerSecond - 1;
      const cpuError = p.cpuMs / r.cpuMsPerStep - 1;
      rows.push([configName(c.config), Math.round(p.samplesPerSecond).toString(), Math.round(r.samplesPerSecond).toString(), `${(error * 100).toFixed(1)}%`, p.bubble.toFixed(3), c.config.replicas * c.config.stages > 1 ? r.bubble.toFixed(3) : '-',
        p.cpuMs.toFixed(2), r.cpuMsPerStep.toFixed(2), `${(cpuError * 100).toFixed(1)}%`]);
      report.push({ model: m.key, config: c.config, predicted: p.samplesPerSecond, measured: r.samplesPerSecond, error, predictedBubble: p.bubble, measuredBubble: r.bubble, predictedCpuMs: p.cpuMs, measuredCpuMs: r.cpuMsPerStep, cpuError });
      console.error(`plan-check: ${m.key} ${configName(c.config)}: predicted ${Math.round(p.samplesPerSecond)}, measured ${Math.round(r.samplesPerSecond)} (${(error * 100).toFixed(1)}%); CPU ms/step ${p.cpuMs.toFixed(2)} vs ${r.cpuMsPerStep.toFixed(2)}`);
    }
    const head = ['configuration', 'predicted/s', 'measured/s', 'error', 'bubble pred', 'bubble meas', 'cpu ms pred', 'cpu ms meas', 'cpu error'];
    const widths = head.map((h, j) => Math.max(h.length, ...rows.map((r) => r[j]!.length)));
    console.log(`\n${m.label} (profiled in ${profile.seconds.toFixed(1)} s)`);
    for (const r of [head, widths.map((w) => '-'.repeat(w)), ...rows]) console.log(r.map((c, j) => (j === 0 ? c.padEnd(widths[j]!) : c.padStart(widths[j]!))).join('  '));
    // The memory contention that would make the threads R=2 prediction match (chainrule plan --contention X).
    const r2 = cases.findIndex((c) => c.config.placement === 'threads' && c.config.replicas === 2);
    if (r2 >= 0) {
      const target = report.filter((r) => r['model'] === m.key)[r2]!['measured'] as number;
      const at = (x: number) => planFromProfile(profile, m.spec as ModelSpec, { batchSize: m.batchSize, machine: { ...here, contention: x } }, [cases[r2]!.config])[0]!.samplesPerSecond;
      let lo = 0;
      let hi = 4;
      if (at(lo) <= target) hi = 0;
      for (let i = 0; i < 40 && hi > 0; i++) { const mid = (lo + hi) / 2; if (at(mid) > target) lo = mid; else hi = mid; }
      console.log(`contention that fits threads R=2: ${hi === 0 ? '0 (the prediction is already below the measurement)' : hi >= 4 ? 'above 4 (the machine is loaded?)' : hi.toFixed(3)}`);
    }
    if (m.key === 'wide') {
      const onPaper = planFromProfile(profile, m.spec as ModelSpec, eightHostsOptions(m.batchSize), extra);
      paper = { table: formatPlanTable(onPaper, 8), best: onPaper[0] };
    }
  }
} finally {
  await Promise.all(nodes.map((n) => n.stop()));
}
const errors = report.map((r) => Math.abs(r['error'] as number));
console.log(`\nmean |error| ${(100 * errors.reduce((a, b) => a + b, 0) / Math.max(1, errors.length)).toFixed(1)}%, max ${(100 * Math.max(0, ...errors)).toFixed(1)}%, within 15%: ${errors.filter((e) => e <= 0.15).length}/${errors.length}`);
if (paper) console.log(`\nOn paper: the wide MLP (batch 256) on 8 hosts × 2 cores, 1 Gbit/s, 0.1 ms (coordinator on a 2-core host of its own):\n${paper.table}`);
const after = uptime();
console.log(`\nplan-check: ${after}`);
if (json) console.log(JSON.stringify({ before, after, report, paper: paper?.best ?? null }));
process.exit(0);
