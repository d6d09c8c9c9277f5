/**
 * The V8 heap growth the `chainrule` executable sets (node/heap.ts): what it sets, when it leaves
 * the user's choice alone, and that a real node process runs with it. What it buys (mark-compacts
 * and samples/s against V8's default) is measured by `npx tsx bench/node-heap.ts`, not here: the
 * count of collections depends on timing, and so on what else the machine runs.
 */
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { HEAP_GROWING_PERCENT, tuneHeap } from '../node/heap.js';
import { chainruleBin, runTsx, startNodeProcess } from './helpers.js';

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

describe('a chainrule node process', () => {
  it('says its heap growth in its first log line: chainrule\'s, CHAINRULE_V8_HEAP\'s, or V8\'s default', async () => {
    const cases: Array<[string[], RegExp]> = [
      [[], new RegExp(`V8 heap growth: --heap-growing-percent=${HEAP_GROWING_PERCENT}$`, 'm')],
      [['env', 'CHAINRULE_V8_HEAP=250'], /V8 heap growth: --heap-growing-percent=250$/m],
      [['env', 'CHAINRULE_V8_HEAP=default'], /V8 heap growth: V8 default \(CHAINRULE_V8_HEAP=default\)$/m],
    ];
    for (const [wrap, line] of cases) {
      const n = await startNodeProcess(['--port', '0'], wrap);
      children.push(n.child);
      await n.waitFor(/listening on/);
      expect(n.stderr()).toMatch(line);
      n.child.kill('SIGTERM');
      expect(await n.exited).toBe(0);
    }
  }, 60_000);
});
