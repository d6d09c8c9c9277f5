/**
 * The V8 heap growth the `chainrule` executable sets (coordinator/heap.ts): what it sets and when it
 * leaves the user's choice alone, and, on real node processes under `--trace-gc` serving a real
 * gRPC run, that it cuts the mark-compacts it exists to cut without changing the weights.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { Coordinator } from '../coordinator/index.js';
import { HEAP_GROWING_PERCENT, tuneHeap } from '../coordinator/heap.js';
import { mlpSpec } from '../src/nn/index.js';
import { chainruleBin, firstDigits, runTsx } from './helpers.js';

const children: ChildProcessWithoutNullStreams[] = [];
afterAll(() => { for (const c of children) if (c.exitCode === null) c.kill('SIGKILL'); });

describe('tuneHeap', () => {
  it('leaves a heap growth given to node alone, and CHAINRULE_V8_HEAP=default means V8\'s own', () => {
    expect(tuneHeap({}, ['--heap-growing-percent=50'])).toBe('V8 heap growth: --heap-growing-percent=50 (given to node)');
    expect(tuneHeap({}, ['--heap_growing_percent=50'])).toMatch(/given to node/);
    expect(tuneHeap({ CHAINRULE_V8_HEAP: 'default' }, [])).toBe('V8 heap growth: V8 default (CHAINRULE_V8_HEAP=default)');
  });

  it('sets its own percent, or the one in CHAINRULE_V8_HEAP, and names a bad one', () => {
    expect(tuneHeap({}, [])).toBe(`V8 heap growth: --heap-growing-percent=${HEAP_GROWING_PERCENT}`);
    expect(tuneHeap({ CHAINRULE_V8_HEAP: '250' }, [])).toBe('V8 heap growth: --heap-growing-percent=250');
    expect(() => tuneHeap({ CHAINRULE_V8_HEAP: 'lots' }, [])).toThrow(/CHAINRULE_V8_HEAP must be 'default' or a heap growth in percent \(1\.\.10000\), got 'lots'/);
  });

  it('the chainrule executable refuses a bad CHAINRULE_V8_HEAP with exit 2, naming it, before any command runs', async () => {
    process.env.CHAINRULE_V8_HEAP = '0';
    try {
      const r = await runTsx(chainruleBin, ['node', '--port', '0']);
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(/chainrule: CHAINRULE_V8_HEAP must be 'default' or a heap growth in percent \(1\.\.10000\), got '0'/);
    } finally {
      delete process.env.CHAINRULE_V8_HEAP;
    }
  });
});

/** A real `chainrule node` under `node --trace-gc` (which logs each collection to stdout). */
async function tracedNode(heap: string | undefined): Promise<{ address: string; markCompacts: () => number }> {
  const env = { ...process.env };
  if (heap === undefined) delete env.CHAINRULE_V8_HEAP; else env.CHAINRULE_V8_HEAP = heap;
  const child = spawn(process.execPath, ['--trace-gc', '--import', 'tsx', chainruleBin, 'node', '--port', '0'], { stdio: 'pipe', env });
  children.push(child);
  let out = '';
  let markCompacts = 0;
  child.stderr.resume();
  const address = await new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out = (out + d.toString());
      const hit = /listening on ([^\s,]+)/.exec(out);
      if (hit) resolve(hit[1]!);
      // Count whole lines only, then drop them: the log grows by a line per collection.
      const lines = out.split('\n');
      out = lines.pop()!;
      markCompacts += lines.filter((l) => l.includes('Mark-Compact')).length;
    });
    child.once('exit', (code) => reject(new Error(`chainrule node exited with ${code}`)));
  });
  return { address, markCompacts: () => markCompacts };
}

describe('a node process with chainrule\'s heap growth', () => {
  it('does a fraction of the mark-compacts of V8\'s default over the same run, with the same weights', async () => {
    // The default MLP over 2 replicas on 2 nodes: several small messages a step, the case in
    // which V8's default kept a ~17 MB heap marking every ~45 ms.
    const data = firstDigits(8000, 64);
    const run = async (heap: string | undefined) => {
      const nodes = [await tracedNode(heap), await tracedNode(heap)];
      const c = new Coordinator({ model: mlpSpec(), dataset: data, epochs: 2, batchSize: 64, lr: 0.05, seed: 4, optimizer: 'sgd', replicas: 2, placement: 'grpc', nodes: nodes.map((n) => n.address) });
      try {
        const before = nodes.map((n) => n.markCompacts());
        const summary = await c.train();
        return { weights: summary.weightsSha256, markCompacts: nodes.reduce((s, n, i) => s + n.markCompacts() - before[i]!, 0) };
      } finally { await c.close(); }
    };
    const v8Default = await run('default');
    const tuned = await run(undefined);
    expect(tuned.weights).toBe(v8Default.weights);
    // Measured: 26 against 3 over these 250 steps.
    expect(tuned.markCompacts * 3).toBeLessThan(v8Default.markCompacts);
  }, 120_000);
});
