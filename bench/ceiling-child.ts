/**
 * One of bench/ceiling.ts's processes: warms up on its own, says `ready`, waits for `go` on
 * stdin (so that every child's window is the same wall-clock window), trains for the given
 * seconds and prints its samples/s as JSON.
 */
import { once } from 'node:events';
import { Coordinator, type CoordinatorOptions } from '../coordinator/index.js';
import { Batcher, loadMnist } from '../src/data/index.js';
import { warmUpMs } from './throughput.js';

const { seconds, ...o } = JSON.parse(process.argv[2] ?? '{}') as { seconds: number } & CoordinatorOptions;
const data = loadMnist();
const c = new Coordinator({ dataset: data, epochs: 1, kernelThreads: 1, ...o });
try {
  await c.open();
  const batches = [...new Batcher(data.train, { batchSize: c.options.batchSize, seed: 1 }).epoch(0)];
  // The same warm-up as measureThroughput's, so that the ceiling compares compiled code with compiled code.
  let n = 0;
  for (const t0 = performance.now(); n < 3 || performance.now() - t0 < warmUpMs(seconds); n++) await c.step(batches[n % batches.length]!.x, batches[n % batches.length]!.y);
  console.log('ready');
  await once(process.stdin, 'data');
  let samples = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < seconds * 1000) {
    const b = batches[n++ % batches.length]!;
    await c.step(b.x, b.y);
    samples += b.x.shape[0]!;
  }
  console.log(JSON.stringify({ samplesPerSecond: samples / ((performance.now() - t0) / 1000) }));
} finally {
  await c.close();
  process.stdin.destroy();
}
