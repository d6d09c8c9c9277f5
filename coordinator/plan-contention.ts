/**
 * How much two threads computing a model's steps at once slow each other on this host: shared
 * caches, memory bandwidth and the clock of a chip with more cores busy. The planner's
 * `contention` (the slowdown of each thread per further thread computing at once), measured
 * rather than assumed: one worker thread runs forward, backward and W passes of the model
 * alone, then two run them in the same window, and c = (alone rate / together rate) − 1.
 *
 * This module is also the workers' entry (piscina's task, `work`; it imports only the model code).
 *
 * @example const c = await measureContention(mlpSpec(), 32, 'native'); // 0.4: two threads each run at 1/1.4
 */
import { Piscina } from 'piscina';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Tensor } from '../src/tensor/tensor.js';
import { Arena } from '../src/tensor/arena.js';
import { Rng } from '../src/tensor/rng.js';
import { selectBackend } from '../src/tensor/select.js';
import { Tape } from '../src/autograd/index.js';
import { Sequential, type ModelSpec } from '../src/nn/index.js';

interface Job { spec: ModelSpec; rows: number; backend: string; seconds: number; sync: SharedArrayBuffer }

/**
 * One worker's steps per second (piscina's task): warm-up, count itself ready, wait for the go
 * flag, then passes for the window. `sync`: [ready count, go flag].
 */
export default function work({ spec, rows, backend, seconds, sync }: Job): number {
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
  const flags = new Int32Array(sync);
  Atomics.add(flags, 0, 1);
  Atomics.wait(flags, 1, 0);
  let n = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < seconds * 1000) pass(3 + n++);
  return n / ((performance.now() - t0) / 1000);
}

/** Runs `threads` workers in one window; their step rates. */
async function rates(job: Omit<Job, 'sync'>, threads: number): Promise<number[]> {
  const fromSource = import.meta.url.endsWith('.ts');
  // tsx from this package when running from source, as the thread placement's workers do.
  const execArgv = fromSource ? ['--import', pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href] : [];
  const pool = new Piscina({ filename: fileURLToPath(import.meta.url), execArgv, minThreads: threads, maxThreads: threads });
  const sync = new SharedArrayBuffer(8);
  const flags = new Int32Array(sync);
  try {
    const done = Array.from({ length: threads }, () => pool.run({ ...job, sync } satisfies Job) as Promise<number>);
    // One window for all: go once every worker has warmed up (or one has failed).
    let failed: unknown = null;
    for (const d of done) d.catch((e: unknown) => { failed ??= e; });
    while (Atomics.load(flags, 0) < threads && failed === null) await new Promise((r) => setTimeout(r, 5));
    Atomics.store(flags, 1, 1);
    Atomics.notify(flags, 1);
    return await Promise.all(done);
  } finally {
    await pool.destroy();
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
