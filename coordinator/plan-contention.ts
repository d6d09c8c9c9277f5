/**
 * How much two threads computing a model's steps at once slow each other on this host: shared
 * caches, memory bandwidth and the clock of a chip with more cores busy. The planner's
 * `contention` (the slowdown of each thread per further thread computing at once), measured
 * rather than assumed: one worker thread runs forward, backward and W passes of the model
 * alone, then two run them in the same window, and c = (alone rate / together rate) − 1.
 *
 * This module is also the workers' entry (it imports only the model code).
 *
 * @example const c = await measureContention(mlpSpec(), 32, 'native'); // 0.4: two threads each run at 1/1.4
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Tensor } from '../src/tensor/tensor.js';
import { Arena } from '../src/tensor/arena.js';
import { Rng } from '../src/tensor/rng.js';
import { selectBackend } from '../src/tensor/select.js';
import { Tape } from '../src/autograd/index.js';
import { Sequential, type ModelSpec } from '../src/nn/index.js';

interface Job { spec: ModelSpec; rows: number; backend: string; seconds: number; go: SharedArrayBuffer }

/** Steps per second of one worker: warm-up, `ready`, wait for the go flag, then passes for the window. */
function work({ spec, rows, backend, seconds, go }: Job): void {
  selectBackend(backend);
  const model = Sequential.fromSpec(spec, 42);
  const rng = new Rng(7);
  const per = spec.inputShape.reduce((a, b) => a * b, 1);
  const x = new Tensor(Float32Array.from({ length: rows * per }, () => rng.normal()), [rows, ...spec.inputShape]);
  const arena = new Arena();
  const pass = (step: number) => {
    arena.reset();
    for (const [, p] of model.parameters()) p.zeroGrad();
    arena.run(() => {
      const tape = new Tape();
      const out = tape.run(() => model.forward(x, { training: true, seed: 1, step, microBatch: 0, auxLosses: [], microBatching: true }));
      tape.backwardFrom([[out, Tensor.full(out.shape, 1 / out.size, out.dtype)]]);
      model.flushDeferredGrads();
    });
  };
  for (let i = 0; i < 3; i++) pass(i);
  parentPort!.postMessage({ ready: true });
  Atomics.wait(new Int32Array(go), 0, 0);
  let n = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < seconds * 1000) pass(3 + n++);
  parentPort!.postMessage({ rate: n / ((performance.now() - t0) / 1000) });
}

if (!isMainThread && (workerData as { planContention?: Job } | null)?.planContention) work((workerData as { planContention: Job }).planContention);

/** Runs `threads` workers in one window; their step rates. */
async function rates(job: Omit<Job, 'go'>, threads: number): Promise<number[]> {
  const fromSource = import.meta.url.endsWith('.ts');
  const execArgv = fromSource ? ['--import', pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href] : [];
  const go = new SharedArrayBuffer(4);
  const workers = Array.from({ length: threads }, () => new Worker(fileURLToPath(import.meta.url), { workerData: { planContention: { ...job, go } }, execArgv }));
  try {
    const ready = workers.map((w) => new Promise<void>((resolve, reject) => {
      w.on('message', (m: { ready?: boolean }) => { if (m.ready) resolve(); });
      w.once('error', reject);
    }));
    const done = workers.map((w) => new Promise<number>((resolve, reject) => {
      w.on('message', (m: { rate?: number }) => { if (m.rate !== undefined) resolve(m.rate); });
      w.once('error', reject);
      w.once('exit', (code) => reject(new Error(`plan: a contention worker exited with ${code}`)));
    }));
    await Promise.all(ready);
    Atomics.store(new Int32Array(go), 0, 1);
    Atomics.notify(new Int32Array(go), 0);
    return await Promise.all(done);
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

/**
 * The contention of two threads running this model's passes on `rows` rows at once (0: none;
 * never negative). The fastest of two rounds each way, since a neighbour's burst only slows.
 */
export async function measureContention(spec: ModelSpec, rows: number, backend: string, seconds = 0.5): Promise<number> {
  const job = { spec, rows, backend, seconds };
  let alone = 0;
  let together = 0;
  for (let round = 0; round < 2; round++) {
    alone = Math.max(alone, (await rates(job, 1))[0]!);
    const two = await rates(job, 2);
    together = Math.max(together, two.reduce((a, b) => a + b, 0) / two.length);
  }
  return together > 0 ? Math.max(0, alone / together - 1) : 0;
}
