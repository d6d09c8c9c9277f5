/**
 * Training throughput of several configurations measured window by window in turn, in one
 * process: every Coordinator is open at once, each is warmed up, then timed windows alternate
 * between them (the order rotating). A neighbour's burst on a shared machine then hits every
 * configuration alike; measured one after the other, four pairs of identical runs of the default
 * MLP's thread replicas differed by up to 14% here, more than some of the effects the bench reports.
 * Each configuration's figure is its samples over its time in all windows: the best of many
 * short windows favours the configuration whose speed varies more (one process of the CNN
 * reached 2,395 samples/s at best against 2,060-2,100 in 1.3 s windows, beside the same
 * replicas).
 *
 * @example
 * const [one, r2] = await alternateThroughput([{ model: 'mlp' }, { model: 'mlp', placement: 'threads', replicas: 2 }], mnist, 8);
 * console.log(r2.samplesPerSecond / one.samplesPerSecond);
 */
import { Coordinator, type CoordinatorOptions } from '../coordinator/index.js';
import { Batcher, type Dataset } from '../src/data/index.js';
import { warmUpMs } from './throughput.js';

export interface AlternateOptions {
  /** Timed windows per configuration (default 6). */
  windows?: number;
}

/** Samples/s of each configuration over `seconds` of alternated windows in all (one kernel thread unless asked, as measureThroughput). */
export async function alternateThroughput(configs: readonly CoordinatorOptions[], data: { train: Dataset; test: Dataset }, seconds: number, o: AlternateOptions = {}): Promise<{ samplesPerSecond: number }[]> {
  const windows = o.windows ?? 6;
  const opened: Coordinator[] = [];
  try {
    for (const c of configs) {
      const coordinator = new Coordinator({ dataset: data, epochs: 1, kernelThreads: 1, ...c });
      opened.push(coordinator);
      await coordinator.open();
    }
    const batchSize = opened[0]!.options.batchSize;
    if (opened.some((c) => c.options.batchSize !== batchSize)) throw new Error('alternateThroughput: the configurations must share a batch size');
    const batches = [...new Batcher(data.train, { batchSize, seed: 1 }).epoch(0)];
    let n = 0;
    /** Runs steps on `c` for `ms`; the samples and the milliseconds they took. */
    const run = async (c: Coordinator, ms: number): Promise<[number, number]> => {
      let samples = 0;
      const t0 = performance.now();
      do {
        // As train() steps: one request of as many steps as the coordinator sends at a time.
        const g = Array.from({ length: c.stepsPerRequest() }, () => batches[n++ % batches.length]!);
        await c.steps(g);
        samples += g.length * batchSize;
      } while (performance.now() - t0 < ms);
      return [samples, performance.now() - t0];
    };
    // Each warms up on its own (see throughput.ts: the isolates compile their hot code first).
    for (const c of opened) await run(c, warmUpMs(seconds));
    const total = opened.map(() => [0, 0]);
    const windowMs = (seconds * 1000) / (windows * opened.length);
    for (let w = 0; w < windows; w++) {
      for (let i = 0; i < opened.length; i++) {
        const k = (i + w) % opened.length;
        const [samples, ms] = await run(opened[k]!, windowMs);
        total[k]![0] += samples;
        total[k]![1] += ms;
      }
    }
    return total.map(([samples, ms]) => ({ samplesPerSecond: samples! / (ms! / 1000) }));
  } finally {
    for (const c of opened.reverse()) await c.close();
  }
}
