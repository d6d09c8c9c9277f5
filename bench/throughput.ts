/**
 * The one way the benchmarks and the planner's check measure training speed: samples/s of
 * Coordinator steps after a warm-up, the best of three windows (a neighbour's burst on a
 * shared machine only slows), with the measured bubble over the same steps.
 *
 * The warm-up runs 3 s of steps: every isolate (the coordinator, each worker thread,
 * each node process) compiles its hot code with V8's optimizing compiler on helper threads,
 * and where the actors keep both cores busy that compilation waits for them: two thread
 * replicas of the default MLP ran at 26-35k samples/s in their first 125 steps and reached
 * 70-100k only after 2,000 steps (about 3 s), where one process is at 75k from its first
 * epoch. Measured after 3 steps, the bench's windows fell in that ramp (two runs put those
 * replicas at 0.45x and 0.96x of one process).
 *
 * @example const { samplesPerSecond } = await measureThroughput({ model: 'mlp' }, mnist, 4);
 */
import { Coordinator, type CoordinatorOptions } from '../coordinator/index.js';
import { Batcher, type Dataset } from '../src/data/index.js';

/** Steps handed to Coordinator.steps at a time (it sends them in requests of stepsPerRequest). */
const GROUP = 32;
/** Milliseconds of steps run before windows of `seconds` in all (see above): 3 s, at most 3/4 of the windows' time (the bench's --quick). */
export const warmUpMs = (seconds: number): number => Math.min(3000, 750 * seconds);

export interface Throughput { samplesPerSecond: number; bubble: number; steps: number; cpuMs: number }

/** `cpu()`, when given, reads a CPU-time counter (ms) before and after the windows. */
export async function measureThroughput(o: CoordinatorOptions, data: { train: Dataset; test: Dataset }, seconds: number, cpu: () => number = () => 0): Promise<Throughput> {
  // One kernel thread unless asked: the bench's ratios are to one thread.
  const c = new Coordinator({ dataset: data, epochs: 1, kernelThreads: 1, ...o });
  try {
    await c.open();
    const batches = [...new Batcher(data.train, { batchSize: c.options.batchSize, seed: 1 }).epoch(0)];
    for (let i = 0; i < 3; i++) await c.step(batches[i]!.x, batches[i]!.y);
    let n = 3;
    const group = () => Array.from({ length: GROUP }, () => batches[n++ % batches.length]!);
    for (const t0 = performance.now(); performance.now() - t0 < warmUpMs(seconds);) await c.steps(group());
    const n0 = n;
    const busy0 = c.meter.busyMs;
    const wall0 = c.meter.actorWallMs;
    const cpu0 = cpu();
    let best = 0;
    for (let w = 0; w < 3; w++) {
      let samples = 0;
      const t0 = performance.now();
      while (performance.now() - t0 < (seconds * 1000) / 3) {
        // As train() steps: as many to a request as options.stepsPerRequest allows.
        const g = group();
        await c.steps(g);
        for (const b of g) samples += b.x.shape[0]!;
      }
      best = Math.max(best, samples / ((performance.now() - t0) / 1000));
    }
    const busy = c.meter.busyMs - busy0;
    const wall = c.meter.actorWallMs - wall0;
    return { samplesPerSecond: best, bubble: wall > 0 ? 1 - busy / wall : 0, steps: n - n0, cpuMs: cpu() - cpu0 };
  } finally {
    await c.close();
  }
}
