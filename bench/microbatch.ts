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
import type { CoordinatorOptions } from '../coordinator/index.js';
import { loadMnist, type Dataset } from '../src/data/index.js';
import { alternateThroughput } from './alternate.js';
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
 * Two one-stage coordinators on the same model and seed (M = 1 and M = `microBatches`),
 * their timed windows alternated for about `seconds` in all (bench/alternate.ts).
 */
export async function benchMicroBatches(o: { microBatches?: number; seconds?: number; windows?: number; data?: { train: Dataset; test: Dataset } } = {}): Promise<MicroBatchBench> {
  const M = o.microBatches ?? 8;
  const seconds = o.seconds ?? 6;
  const windows = o.windows ?? 6;
  const data = o.data ?? loadMnist();
  const model = mlpSpec([1024, 1024, 1024, 1024, 1024], 784, 10);
  const at = (microBatches: number): CoordinatorOptions => ({ model, batchSize: 256, microBatches, optimizer: 'sgd', lr: 0.01, backend: backend().name });
  const [one, many] = await alternateThroughput([at(1), at(M)], data, seconds, { windows });
  return { microBatches: M, one: one!.samplesPerSecond / 256, many: many!.samplesPerSecond / 256, ratio: many!.samplesPerSecond / one!.samplesPerSecond, backend: backend().name };
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
