/**
 * Micro-batch overhead in one process: training steps of the wide MLP 784-1024×5-10
 * (batch 256, SGD, one stage) with M micro-batches against M = 1, the two interleaved
 * window by window in the same process (the machine is shared and noisy: a neighbour's
 * burst hits both sides alike, and each side keeps its best window).
 *
 * @example
 * // npx tsx bench/microbatch.ts [--quick] [--json] [--m 8] [--backend native]
 * const r = await benchMicroBatches({ microBatches: 8, seconds: 6 });
 * console.log(r.ratio); // steps/s at M=8 over steps/s at M=1
 */
import { pathToFileURL } from 'node:url';
import { Coordinator } from '../coordinator/index.js';
import { Batcher, loadMnist, type Dataset } from '../src/data/index.js';
import { mlpSpec } from '../src/nn/index.js';
import { backend } from '../src/tensor/backend.js';
import { selectBackend } from '../src/tensor/select.js';
import { emitJson, printTable, ratioTo, type Row } from './report.js';

export interface MicroBatchBench {
  microBatches: number;
  /** Steps per second, best window, at M = 1 and at M = microBatches. */
  one: number;
  many: number;
  /** many / one. */
  ratio: number;
  backend: string;
}

/**
 * Opens two one-stage coordinators on the same model and seed (M = 1 and M = `microBatches`),
 * warms both, then alternates timed windows between them for about `seconds` in all.
 */
export async function benchMicroBatches(o: { microBatches?: number; seconds?: number; windows?: number; data?: { train: Dataset; test: Dataset } } = {}): Promise<MicroBatchBench> {
  const M = o.microBatches ?? 8;
  const seconds = o.seconds ?? 6;
  const windows = o.windows ?? 6;
  const data = o.data ?? loadMnist();
  const model = mlpSpec([1024, 1024, 1024, 1024, 1024], 784, 10);
  const open = async (microBatches: number): Promise<Coordinator> => {
    const c = new Coordinator({ model, dataset: data, epochs: 1, batchSize: 256, microBatches, optimizer: 'sgd', lr: 0.01, backend: backend().name, kernelThreads: 1 });
    await c.open();
    return c;
  };
  const one = await open(1);
  const many = await open(M);
  try {
    const batches = [...new Batcher(data.train, { batchSize: 256, seed: 1 }).epoch(0)].slice(0, 16);
    let n = 0;
    const stepOf = async (c: Coordinator): Promise<void> => {
      const b = batches[n++ % batches.length]!;
      await c.step(b.x, b.y);
    };
    for (let i = 0; i < 3; i++) { await stepOf(one); await stepOf(many); }
    const best = { one: 0, many: 0 };
    const windowMs = (seconds * 1000) / (2 * windows);
    for (let w = 0; w < windows; w++) {
      // Alternate which side goes first, so neither always follows the other.
      const order: ['one' | 'many', Coordinator][] = w % 2 === 0 ? [['one', one], ['many', many]] : [['many', many], ['one', one]];
      for (const [side, c] of order) {
        let steps = 0;
        const t0 = performance.now();
        do { await stepOf(c); steps++; } while (performance.now() - t0 < windowMs);
        best[side] = Math.max(best[side], steps / ((performance.now() - t0) / 1000));
      }
    }
    return { microBatches: M, one: best.one, many: best.many, ratio: best.many / best.one, backend: backend().name };
  } finally {
    await many.close();
    await one.close();
  }
}

/** The bench's rows: both step rates and the figure "wide MLP one process M=8 / M=1". */
export function microBatchRows(r: MicroBatchBench): Row[] {
  const ref = `wide MLP one process M=1 (${r.backend})`;
  return [
    { name: ref, value: r.one * 256, unit: 'samples/s' },
    { name: `wide MLP one process M=${r.microBatches} (${r.backend})`, value: r.many * 256, unit: 'samples/s', ratio: ratioTo(r.many, ref, r.one) },
    { name: `wide MLP one process M=${r.microBatches} / M=1`, value: r.ratio, unit: '×' },
  ];
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const arg = (name: string): string | undefined => {
    const i = process.argv.indexOf(name);
    return i >= 0 ? process.argv[i + 1] : undefined;
  };
  selectBackend(arg('--backend')); // the default (fastest) unless named
  const quick = process.argv.includes('--quick');
  const r = await benchMicroBatches({ microBatches: Number(arg('--m') ?? 8), seconds: quick ? 3 : 8 });
  const rows = microBatchRows(r);
  printTable(rows, 'Micro-batch overhead (MLP 784-1024×5-10, batch 256, SGD, one process, M=1 and M interleaved)');
  emitJson(rows, { quick, backend: r.backend });
  process.exit(0);
}
