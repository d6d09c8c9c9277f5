/**
 * Property-based fuzzing of every decoder of outside input (`npm run fuzz`). Each decoder runs
 * in a worker thread of its own under a watchdog, so an input that loops forever or exhausts
 * the heap is reported (with its index, to generate it again) instead of stopping the run.
 *
 * @example
 * npm run fuzz                                     # 100,000 inputs per decoder, random seed
 * npm run fuzz -- --runs 5000 --seed 42 --only wire.decodeMessage
 * npm run fuzz -- --seed 42 --show wire.decodeMessage:1234   # print the input at that index
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { parseArgs } from 'node:util';
import { fuzzTargets } from '../test/fuzz/targets.js';
import { type Failure, type FuzzBounds, type FuzzStats, defaultBounds, fuzz, inputAt, show } from '../test/fuzz/harness.js';

interface Job {
  target: string;
  runs: number;
  seed: number;
  start: number;
  skip: number[];
  bounds: FuzzBounds;
  /** [index of the input being decoded] */
  heartbeat: SharedArrayBuffer;
}

type FromWorker = { type: 'ready' } | { type: 'chunk'; stats: FuzzStats; next: number } | { type: 'done'; stats: FuzzStats };

if (!isMainThread) {
  const job = workerData as Job;
  const target = fuzzTargets.find((t) => t.name === job.target)!;
  const beat = new Int32Array(job.heartbeat);
  parentPort!.postMessage({ type: 'ready' } satisfies FromWorker);
  const stats = fuzz(target, {
    runs: job.runs, seed: job.seed, start: job.start, bounds: job.bounds, skip: new Set(job.skip),
    onInput: (i) => Atomics.store(beat, 0, i),
    onChunk: (s, next) => parentPort!.postMessage({ type: 'chunk', stats: s, next } satisfies FromWorker),
  });
  parentPort!.postMessage({ type: 'done', stats } satisfies FromWorker);
} else {
  await main();
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string', default: '100000' },
      seed: { type: 'string' },
      only: { type: 'string' },
      jobs: { type: 'string', default: '2' },
      'hang-ms': { type: 'string', default: String(defaultBounds.hangMs) },
      'watchdog-ms': { type: 'string', default: '15000' },
      show: { type: 'string' },
    },
  });
  const int = (name: string, v: string | undefined, min: number): number => {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < min) {
      console.error(`fuzz: --${name} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
      process.exit(2);
    }
    return n;
  };
  const runs = int('runs', values.runs, 1);
  const seed = values.seed === undefined ? (Date.now() % 2 ** 31) : int('seed', values.seed, -(2 ** 31));
  const jobs = int('jobs', values.jobs, 1);
  const bounds: FuzzBounds = { ...defaultBounds, hangMs: int('hang-ms', values['hang-ms'], 1) };
  const watchdogMs = int('watchdog-ms', values['watchdog-ms'], 100);
  const names = values.only?.split(',') ?? fuzzTargets.map((t) => t.name);
  for (const n of names) {
    if (!fuzzTargets.some((t) => t.name === n)) {
      console.error(`fuzz: unknown decoder '${n}'; decoders: ${fuzzTargets.map((t) => t.name).join(', ')}`);
      process.exit(2);
    }
  }

  if (values.show !== undefined) {
    const [name, at] = values.show.split(':');
    const target = fuzzTargets.find((t) => t.name === name);
    if (!target) {
      console.error(`fuzz: --show takes <decoder>:<index>; decoders: ${fuzzTargets.map((t) => t.name).join(', ')}`);
      process.exit(2);
    }
    console.log(show(inputAt(target, seed, int('show', at, 0))));
    return;
  }

  console.log(`fuzz: ${runs} inputs per decoder, seed ${seed}, ${jobs} worker(s), hang bound ${bounds.hangMs} ms, watchdog ${watchdogMs} ms`);
  const t0 = performance.now();
  const queue = [...names];
  const results: (FuzzStats & { wallMs: number })[] = [];
  await Promise.all(Array.from({ length: Math.min(jobs, queue.length) }, async () => {
    for (let name = queue.shift(); name !== undefined; name = queue.shift()) {
      const started = performance.now();
      const stats = await runSupervised(name, runs, seed, bounds, watchdogMs);
      const r = { ...stats, wallMs: performance.now() - started };
      results.push(r);
      console.log(line(r));
    }
  }));
  const wall = (performance.now() - t0) / 1000;
  const failed = results.filter((r) => r.crashes + r.hangs > 0);
  console.log(`fuzz: ${results.length} decoders, ${results.reduce((n, r) => n + r.inputs, 0)} inputs in ${wall.toFixed(1)} s; ${failed.length === 0 ? 'no failures' : `${failed.length} decoder(s) failed`}`);
  for (const r of failed) {
    for (const f of r.failures) console.log(`  ${r.name} #${f.index} ${f.kind}: ${f.reason}\n    input: ${f.input}\n    again: npm run fuzz -- --seed ${seed} --show ${r.name}:${f.index}`);
  }
  process.exitCode = failed.length === 0 ? 0 : 1;
}

function line(r: FuzzStats & { wallMs: number }): string {
  return `${r.name.padEnd(22)} inputs ${String(r.inputs).padStart(7)}  accepted ${String(r.accepted).padStart(6)}  crashes ${r.crashes}  hangs ${r.hangs}  slowest ${r.slowestMs.toFixed(1).padStart(7)} ms  wall ${(r.wallMs / 1000).toFixed(1).padStart(6)} s`;
}

/**
 * Runs one decoder in a worker; when the worker stops beating (a hang) or dies (a heap
 * exhausted, a native crash), records the input it was on and resumes after it in a new worker.
 */
async function runSupervised(name: string, runs: number, seed: number, bounds: FuzzBounds, watchdogMs: number): Promise<FuzzStats> {
  const total: FuzzStats = { name, inputs: 0, accepted: 0, crashes: 0, hangs: 0, slowestMs: 0, failures: [] };
  const add = (s: FuzzStats): void => {
    total.inputs += s.inputs;
    total.accepted += s.accepted;
    total.crashes += s.crashes;
    total.hangs += s.hangs;
    total.slowestMs = Math.max(total.slowestMs, s.slowestMs);
    total.failures.push(...s.failures.slice(0, Math.max(0, 5 - total.failures.length)));
  };
  const skip: number[] = [];
  let start = 0;
  for (;;) {
    const heartbeat = new SharedArrayBuffer(4);
    const beat = new Int32Array(heartbeat);
    Atomics.store(beat, 0, start);
    const job: Job = { target: name, runs, seed, start, skip, bounds, heartbeat };
    // The heap cap turns a runaway allocation into this worker's death, not the run's.
    // NOTE: this worker cannot start from a .ts file, not even with `--import tsx` (measured on
    // Node 20.20 under tsx 4): a JavaScript entry registers tsx's hooks, then imports this file.
    const entry = `import('tsx/esm/api').then((tsx) => { tsx.register(); return import(${JSON.stringify(import.meta.url)}); });`;
    const worker = new Worker(entry, { eval: true, workerData: job, resourceLimits: { maxOldGenerationSizeMb: 2048 } });
    let ready = false;
    let last: { stats: FuzzStats; next: number } = { stats: { ...total, inputs: 0, accepted: 0, crashes: 0, hangs: 0, slowestMs: 0, failures: [] }, next: start };
    const outcome = await new Promise<{ done: FuzzStats } | { lost: Failure['kind']; reason: string }>((resolve) => {
      let seen = Atomics.load(beat, 0);
      let since = performance.now();
      const timer = setInterval(() => {
        const now = Atomics.load(beat, 0);
        if (now !== seen) {
          seen = now;
          since = performance.now();
        } else if (performance.now() - since > watchdogMs) {
          clearInterval(timer);
          void worker.terminate();
          resolve({ lost: 'hang', reason: `no progress for ${watchdogMs} ms (the watchdog stopped it)` });
        }
      }, 250);
      worker.on('message', (m: FromWorker) => {
        if (m.type === 'ready') ready = true;
        else if (m.type === 'chunk') last = { stats: m.stats, next: m.next };
        else {
          clearInterval(timer);
          resolve({ done: m.stats });
        }
      });
      worker.on('error', (e) => {
        clearInterval(timer);
        resolve({ lost: 'crash', reason: `the worker died: ${(e as NodeJS.ErrnoException).code ?? ''} ${e.message}`.trim() });
      });
      worker.on('exit', (code) => {
        clearInterval(timer);
        resolve({ lost: 'crash', reason: `the worker exited with code ${code}` });
      });
    });
    if ('done' in outcome) {
      add(outcome.done);
      return total;
    }
    if (!ready) {
      console.error(`fuzz: the worker for ${name} failed to start: ${outcome.reason}`);
      process.exit(2);
    }
    // Keep what finished before the last chunk boundary, count the lost input, resume from the boundary without it.
    const index = Atomics.load(beat, 0);
    add(last.stats);
    total.inputs++;
    if (outcome.lost === 'hang') total.hangs++;
    else total.crashes++;
    if (total.failures.length < 5) total.failures.push({ kind: outcome.lost, index, reason: outcome.reason, input: show(inputAt(fuzzTargets.find((t) => t.name === name)!, seed, index)) });
    console.error(`fuzz: ${name} #${index}: ${outcome.lost} (${outcome.reason}); resuming in a new worker`);
    skip.push(index);
    start = last.next;
  }
}
