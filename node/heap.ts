/**
 * The V8 heap setting of the `chainrule` executable (coordinator/bin.ts), for every command;
 * a node's first log line says which it is.
 *
 * Why: a node's live JS heap is small (~17 MB: parameters and messages live in ArrayBuffers,
 * outside it), and V8 sizes the next collection's limit from the live heap, so the limit sits a
 * few MB above it. grpc-js allocates per message (frames, metadata, promises), so at a few
 * thousand messages a second the heap reaches that limit every ~45 ms, V8 starts incremental
 * marking at once and finishes it with a mark-compact: ~200 mark-compacts in 6 s over two nodes
 * (`--trace-gc`), the node's main thread waiting ~27% of the time and V8's helper threads
 * taking 0.3-0.4 of a core per node, on a 2-core machine that has none to spare. Letting the
 * heap grow 5x its live size between collections cut the default MLP's gRPC replicas from
 * 269-288 to 10-11 mark-compacts per 1,000 steps and took them from 6,191-6,367 to
 * 11,958-12,575 samples/s, the nodes' peak RSS from 180-188 to 214-237 MB (`npx tsx bench/node-heap.ts`).
 * The coordinator of a gRPC run is a grpc-js client with the same pattern (its V8 helper threads
 * went from ~12 to ~3.5 ms of CPU per step on the wide MLP's two gRPC stages); local and thread
 * runs allocate little per step and measured no difference.
 * `--heap-growing-percent` is one of the few heap flags V8 reads at every collection, so setting
 * it at run time works; `--initial-old-space-size` does not (it only counts at launch). The flag is
 * process-wide: a library user who wants it calls tuneHeap() once at start.
 */
import { setFlagsFromString } from 'node:v8';
import { ChainruleError } from '../src/errors.js';

/** How much the heap may grow past its live size before V8 collects again (by default V8 picks a factor from its GC's speed). */
export const HEAP_GROWING_PERCENT = 400;

const FLAG = '--heap-growing-percent';
/** What tuneHeap did, for heapSetting(). */
let setting: string | null = null;

/**
 * Sets `--heap-growing-percent` for this process: HEAP_GROWING_PERCENT, or the percent in
 * `CHAINRULE_V8_HEAP`; nothing with `CHAINRULE_V8_HEAP=default` or when the process was
 * started with a heap growth of its own (`node --heap-growing-percent=N ...`).
 * Returns what it did, for the tests; throws on a CHAINRULE_V8_HEAP it cannot read.
 */
export function tuneHeap(env: NodeJS.ProcessEnv = process.env, execArgv: readonly string[] = process.execArgv): string {
  const given = execArgv.find((a) => a.replace(/_/g, '-').startsWith(FLAG));
  if (given !== undefined) return (setting = `V8 heap growth: ${given} (given to node)`);
  const wanted = env.CHAINRULE_V8_HEAP?.trim();
  if (wanted === 'default') return (setting = 'V8 heap growth: V8 default (CHAINRULE_V8_HEAP=default)');
  if (wanted !== undefined && wanted !== '' && !(/^\d+$/.test(wanted) && Number(wanted) >= 1 && Number(wanted) <= 10_000)) {
    throw new ChainruleError('BAD_V8_HEAP', `CHAINRULE_V8_HEAP must be 'default' or a heap growth in percent (1..10000), got '${wanted}'`, { hint: 'unset it for chainrule\'s setting (400)' });
  }
  const percent = wanted ? Number(wanted) : HEAP_GROWING_PERCENT;
  setFlagsFromString(`${FLAG}=${percent}`);
  return (setting = `V8 heap growth: ${FLAG}=${percent}`);
}

/** What the last tuneHeap did in this process; null if it never ran (a node started through the API). */
export function heapSetting(): string | null { return setting; }
