import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { Rng } from '../src/tensor/rng.js';
import {
  Batcher, applyTransform, augmentBatch, augmentEpoch, augmentStream, checkFinite, fitTransform,
  loadIdxDir, makeDataset, parseTransformSpec, readIdx, sampleSize, transformInputs, type Dataset, type LabeledDataset, type TransformSpec,
} from '../src/data/index.js';

import { dataError } from './helpers.js';

/** n samples of `features` values drawn as offset[f] + scale[f] * normal, labels i % 3. */
function gaussianDataset(name: string, n: number, features: number, seed: number, offset = 5, scale = 3): LabeledDataset {
  const rng = new Rng(seed);
  const inputs = new Float32Array(n * features);
  for (let i = 0; i < n; i++) {
    for (let f = 0; f < features; f++) inputs[i * features + f] = offset * (f + 1) + scale * (f + 1) * rng.normal();
  }
  const labels = Int32Array.from({ length: n }, (_, i) => i % 3);
  return makeDataset({ name, inputShape: [features], numClasses: 3, inputs, labels });
}

/** Mean and population std of feature f (or of all values when f is undefined), in float64. */
function stats(ds: Dataset, f?: number): { mean: number; std: number; min: number; max: number } {
  const per = sampleSize(ds);
  const xs: number[] = [];
  for (let k = 0; k < ds.inputs.length; k++) if (f === undefined || k % per === f) xs.push(ds.inputs[k]!);
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const std = Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / xs.length);
  return { mean, std, min: Math.min(...xs), max: Math.max(...xs) };
}

// ---------- IDX helpers: real files, written byte by byte per the spec ----------

const IDX_TYPES = { ubyte: 0x08, sbyte: 0x09, int16: 0x0b, int32: 0x0c, float32: 0x0d, float64: 0x0e } as const;
type IdxTypeName = keyof typeof IDX_TYPES;
const SIZES: Record<IdxTypeName, number> = { ubyte: 1, sbyte: 1, int16: 2, int32: 4, float32: 4, float64: 8 };

function idxBytes(type: IdxTypeName, dims: number[], values: ArrayLike<number>): Buffer {
  const header = 4 + 4 * dims.length;
  const b = Buffer.alloc(header + values.length * SIZES[type]);
  b[2] = IDX_TYPES[type];
  b[3] = dims.length;
  dims.forEach((d, i) => b.writeUInt32BE(d, 4 + 4 * i));
  for (let i = 0; i < values.length; i++) {
    const at = header + i * SIZES[type];
    const v = values[i]!;
    if (type === 'ubyte') b.writeUInt8(v, at);
    else if (type === 'sbyte') b.writeInt8(v, at);
    else if (type === 'int16') b.writeInt16BE(v, at);
    else if (type === 'int32') b.writeInt32BE(v, at);
    else if (type === 'float32') b.writeFloatBE(v, at);
    else b.writeDoubleBE(v, at);
  }
  return b;
}

/** n images of rows×cols ubyte pixels: pixel p of image i is (i * 7 + p * 3) % 256; label i % classes. */
function imagesAndLabels(n: number, rows: number, cols: number, classes: number, seedOffset = 0): { images: Buffer; labels: Buffer; pixels: Uint8Array; labelValues: number[] } {
  const pixels = new Uint8Array(n * rows * cols);
  for (let i = 0; i < n; i++) for (let p = 0; p < rows * cols; p++) pixels[i * rows * cols + p] = (i * 7 + p * 3 + seedOffset) % 256;
  const labelValues = Array.from({ length: n }, (_, i) => i % classes);
  return { images: idxBytes('ubyte', [n, rows, cols], pixels), labels: idxBytes('ubyte', [n], labelValues), pixels, labelValues };
}

// Each test writes files of its own names here, or into a directory of its own from dirWith.
const tmp = mkdtempSync(join(tmpdir(), 'chainrule-idx-'));
afterAll(() => { rmSync(tmp, { recursive: true, force: true }); });

/** A fresh directory holding the given files. */
function dirWith(files: Record<string, Buffer>): string {
  const dir = mkdtempSync(join(tmp, 'd'));
  for (const [name, bytes] of Object.entries(files)) writeFileSync(join(dir, name), bytes);
  return dir;
}

/** The four standard files (train 12 images, test 5, 4×4 pixels, 4 classes). */
function standardFiles(opts: { gz?: boolean; dot?: boolean; testOffset?: number } = {}): Record<string, Buffer> {
  const tr = imagesAndLabels(12, 4, 4, 4);
  const te = imagesAndLabels(5, 4, 4, 4, opts.testOffset ?? 100);
  const sep = opts.dot ? '.' : '-';
  const z = (b: Buffer): Buffer => (opts.gz ? gzipSync(b) : b);
  const gz = opts.gz ? '.gz' : '';
  return {
    [`train-images${sep}idx3-ubyte${gz}`]: z(tr.images),
    [`train-labels${sep}idx1-ubyte${gz}`]: z(tr.labels),
    [`t10k-images${sep}idx3-ubyte${gz}`]: z(te.images),
    [`t10k-labels${sep}idx1-ubyte${gz}`]: z(te.labels),
  };
}

// ---------- transforms ----------

describe('transforms: fitted on the training split only', () => {
  it('standardize: transformed train has mean ≈ 0 and std ≈ 1 per feature; test uses the train statistics', () => {
    const train = gaussianDataset('toy/train', 500, 4, 1);
    const test = gaussianDataset('toy/test', 200, 4, 2, 50, 10);
    const spec = fitTransform('standardize', train, { perFeature: true });
    expect(spec.kind).toBe('standardize');
    const t = applyTransform(spec, train);
    for (let f = 0; f < 4; f++) {
      const s = stats(t, f);
      expect(Math.abs(s.mean)).toBeLessThan(1e-5);
      expect(s.std).toBeCloseTo(1, 5);
    }
    // The test split is transformed with train's numbers, so it is not centred (it is far from train).
    const tt = applyTransform(spec, test);
    if (spec.kind !== 'standardize') throw new Error('unreachable');
    for (let k = 0; k < 8; k++) {
      const f = k % 4;
      expect(tt.inputs[k]).toBeCloseTo((test.inputs[k]! - spec.mean[f]!) / spec.std[f]!, 4);
    }
    expect(Math.abs(stats(tt, 0).mean)).toBeGreaterThan(5);
    // Inputs untouched, labels equal, a new dataset.
    expect(tt.inputs).not.toBe(test.inputs);
    expect(Array.from(tt.labels)).toEqual(Array.from(test.labels));
    expect(test.inputs[0]).toBe(gaussianDataset('again', 200, 4, 2, 50, 10).inputs[0]);
  });

  it('changing the test split does not change the fitted spec (IDX dirs sharing train files, different test files)', () => {
    const a = loadIdxDir(dirWith(standardFiles({ testOffset: 100 })), { name: 'same' });
    const b = loadIdxDir(dirWith(standardFiles({ testOffset: 31 })), { name: 'same' });
    expect(Array.from(a.test.inputs)).not.toEqual(Array.from(b.test.inputs));
    for (const kind of ['standardize', 'minmax'] as const) {
      for (const perFeature of [true, false]) {
        const sa = fitTransform(kind, a.train, { perFeature });
        const sb = fitTransform(kind, b.train, { perFeature });
        expect(sb).toEqual(sa);
        expect(JSON.stringify(sb)).toBe(JSON.stringify(sa));
        // … and differs from a fit on the test split, so the check above could fail.
        expect(fitTransform(kind, a.test, { perFeature })).not.toEqual(sa);
      }
    }
  });

  it('standardize globally: one mean and one std over all values', () => {
    const train = gaussianDataset('g', 300, 3, 3);
    const spec = fitTransform('standardize', train, { perFeature: false });
    if (spec.kind !== 'standardize') throw new Error('unreachable');
    expect(spec.mean).toHaveLength(1);
    expect(spec.std).toHaveLength(1);
    const s = stats(applyTransform(spec, train));
    expect(Math.abs(s.mean)).toBeLessThan(1e-5);
    expect(s.std).toBeCloseTo(1, 5);
  });

  it('a constant feature is only centred (std stored as 1), never divided by ~0', () => {
    const inputs = new Float32Array([0, 1, 0, 3, 0, 5]); // feature 0 is always 0
    const train = makeDataset({ name: 'c', inputShape: [2], numClasses: 1, inputs, labels: new Int32Array(3) });
    const spec = fitTransform('standardize', train);
    if (spec.kind !== 'standardize') throw new Error('unreachable');
    expect(spec.std[0]).toBe(1);
    const out = transformInputs(spec, new Float32Array([0.1, 3]), [2]);
    expect(out[0]).toBeCloseTo(0.1, 6);
    expect(out[1]).toBeCloseTo(0, 6);
    const mm = fitTransform('minmax', train);
    expect(transformInputs(mm, new Float32Array([0.1, 3]), [2])[0]).toBeCloseTo(0.1, 6);
  });

  it('minmax maps train to [0, 1] per feature (min 0, max 1 exactly); test may fall outside', () => {
    const train = gaussianDataset('m/train', 300, 3, 4);
    const spec = fitTransform('minmax', train, { perFeature: true });
    const t = applyTransform(spec, train);
    for (let f = 0; f < 3; f++) {
      const s = stats(t, f);
      expect(s.min).toBe(0);
      expect(s.max).toBeCloseTo(1, 6);
      expect(s.max).toBeLessThanOrEqual(1 + 1e-6);
    }
    const wide = applyTransform(spec, gaussianDataset('m/test', 100, 3, 5, 5, 30));
    const s = stats(wide, 0);
    expect(s.min < 0 || s.max > 1).toBe(true);
    const g = stats(applyTransform(fitTransform('minmax', train, { perFeature: false }), train));
    expect(g.min).toBe(0);
    expect(g.max).toBeCloseTo(1, 6);
  });

  it('the spec survives a JSON round trip and gives identical outputs', () => {
    const train = gaussianDataset('j', 100, 5, 6);
    for (const kind of ['standardize', 'minmax', 'none'] as const) {
      const spec = fitTransform(kind, train, { perFeature: true });
      const back = parseTransformSpec(JSON.parse(JSON.stringify(spec)));
      expect(back).toEqual(spec);
      expect(Array.from(applyTransform(back, train).inputs)).toEqual(Array.from(applyTransform(spec, train).inputs));
    }
    const none = applyTransform({ kind: 'none' }, train);
    expect(Array.from(none.inputs)).toEqual(Array.from(train.inputs));
    expect(none.inputs).not.toBe(train.inputs);
  });

  it('rejects bad specs and options with clear errors', () => {
    const train = gaussianDataset('v', 20, 2, 7);
    const good = fitTransform('standardize', train) as Extract<TransformSpec, { kind: 'standardize' }>;
    const cases: [unknown, RegExp][] = [
      [null, /must be an object/],
      [{ kind: 'zscore' }, /kind must be one of 'minmax', 'standardize', 'none', got "zscore"/],
      [{ ...good, std: [1] }, /std has 1 values, expected 2/],
      [{ ...good, std: [1, -2] }, /std\[1\] must be positive, got -2/],
      [{ ...good, mean: [0, null] }, /mean\[1\] must be a finite number, got null/],
      [{ ...good, perFeature: 'yes' }, /perFeature must be a boolean/],
      [{ kind: 'minmax', perFeature: false, features: 2, min: [3], max: [1], floor: 0, fittedOn: 'x' }, /max\[0\] = 1 is below min\[0\] = 3/],
    ];
    for (const [spec, re] of cases) {
      const e = dataError(() => parseTransformSpec(spec));
      expect(e.code).toBe('BAD_OPTION');
      expect(e.message).toMatch(re);
    }
    const e = dataError(() => applyTransform({ ...good, std: [1] }, train));
    expect(e.message).toMatch(/applyTransform to dataset "v": transform spec: standardize: std has 1 values/);
    const other = gaussianDataset('three', 10, 3, 8);
    const shape = dataError(() => applyTransform(good, other));
    expect(shape.code).toBe('BAD_SHAPE');
    expect(shape.message).toMatch(/fitted on samples of 2 features \(dataset "v"\), but these samples have 3/);

    expect(dataError(() => fitTransform('zscore' as never, train)).message).toMatch(/kind must be one of/);
    expect(dataError(() => fitTransform('minmax', train, { perfeature: true } as never)).message).toMatch(/unknown option "perfeature"/);
    expect(dataError(() => fitTransform('minmax', train, { floor: -1 })).message).toMatch(/options.floor must be a finite non-negative number/);
    const nan = makeDataset({ name: 'nan', inputShape: [2], numClasses: 1, inputs: new Float32Array([1, 2, NaN, 4]), labels: new Int32Array(2) });
    const ne = dataError(() => fitTransform('standardize', nan));
    expect(ne.code).toBe('NOT_A_NUMBER');
    expect(ne.message).toMatch(/sample 1, feature 0/);
  });
});

describe('checkFinite', () => {
  it('names the sample and feature of a NaN or Infinity, passes finite data', () => {
    const inputs = new Float32Array(12);
    const ds = makeDataset({ name: 'f', inputShape: [2, 2], numClasses: 1, inputs, labels: new Int32Array(3) });
    expect(() => checkFinite(ds)).not.toThrow();
    inputs[2 * 4 + 3] = -Infinity;
    const e = dataError(() => checkFinite(ds, 'source.idx'));
    expect(e.code).toBe('NOT_A_NUMBER');
    expect(e.message).toMatch(/source\.idx \(dataset "f"\): input of sample 2, feature 3 \(flat index 11\) is -Infinity/);
    inputs[5] = NaN;
    expect(dataError(() => checkFinite(ds)).message).toMatch(/dataset "f": input of sample 1, feature 1 .* is NaN/);
  });
});

// ---------- augmentation ----------

function randomImages(n: number, per: number, seed: number): Float32Array {
  const r = new Rng(seed);
  return Float32Array.from({ length: n * per }, () => r.float());
}

describe('augmentation', () => {
  it('is reproducible from (seed, epoch, batch) alone and differs for another epoch or batch', () => {
    const x = randomImages(8, 784, 1);
    const opts = { shift: 2, rotate: 10, noise: 0.1 };
    const a = augmentBatch(x, [784], opts, augmentStream(42, 3, 5));
    const b = augmentBatch(x, [784], opts, augmentStream(42, 3, 5));
    expect(Array.from(b)).toEqual(Array.from(a));
    expect(a).not.toBe(x);
    for (const [seed, epoch, batch] of [[42, 4, 5], [42, 3, 6], [43, 3, 5]] as const) {
      const c = augmentBatch(x, [784], opts, augmentStream(seed, epoch, batch));
      expect(Array.from(c)).not.toEqual(Array.from(a));
    }
    // The input is left as it was.
    expect(Array.from(x)).toEqual(Array.from(randomImages(8, 784, 1)));
  });

  it('shift moves a known pixel pattern by the drawn integer amount, all channels together, zero fill', () => {
    const shift = 3;
    const n = 200;
    const [c, h, w] = [2, 9, 11];
    const per = c * h * w;
    const x = new Float32Array(n * per);
    // Channel 0: pixels at (4, 5) = 1 and (4, 7) = 0.5; channel 1: (6, 5) = 0.25.
    for (let s = 0; s < n; s++) {
      x[s * per + 4 * w + 5] = 1;
      x[s * per + 4 * w + 7] = 0.5;
      x[s * per + h * w + 6 * w + 5] = 0.25;
    }
    const out = augmentBatch(x, [c, h, w], { shift }, augmentStream(9, 0, 0));
    // The documented draw order: per sample dx, then dy, each uniform in [-shift, shift].
    const replica = augmentStream(9, 0, 0);
    const seen = new Set<string>();
    for (let s = 0; s < n; s++) {
      const dx = replica.int(2 * shift + 1) - shift;
      const dy = replica.int(2 * shift + 1) - shift;
      seen.add(`${dx},${dy}`);
      const expected = new Float32Array(per);
      expected[(4 + dy) * w + 5 + dx] = 1;
      expected[(4 + dy) * w + 7 + dx] = 0.5;
      expected[h * w + (6 + dy) * w + 5 + dx] = 0.25;
      expect(Array.from(out.subarray(s * per, (s + 1) * per))).toEqual(Array.from(expected));
    }
    expect(seen.size).toBeGreaterThan(30); // of 49 possible shifts

    // A flat [784] is a 28 × 28 image; content moved past the edge is dropped, zeros come in.
    const img = new Float32Array(784);
    img[0] = 1; // top-left corner
    img[27 * 28 + 27] = 2; // bottom-right corner
    const moved = augmentBatch(img, [784], { shift: 1 }, augmentStream(5, 1, 1));
    const r = augmentStream(5, 1, 1);
    const dx = r.int(3) - 1;
    const dy = r.int(3) - 1;
    const want = new Float32Array(784);
    if (dx >= 0 && dy >= 0) want[dy * 28 + dx] = 1;
    if (dx <= 0 && dy <= 0) want[(27 + dy) * 28 + 27 + dx] = 2;
    expect(Array.from(moved)).toEqual(Array.from(want));
  });

  it('rotate by 0 (and no options) is the identity, in a new buffer', () => {
    const x = randomImages(4, 3 * 8 * 8, 2);
    for (const opts of [{ rotate: 0 }, {}, { shift: 0, rotate: 0, noise: 0 }, { rotate: 0, sampling: 'nearest' as const }]) {
      const y = augmentBatch(x, [3, 8, 8], opts, augmentStream(1, 0, 0));
      expect(Array.from(y)).toEqual(Array.from(x));
      expect(y).not.toBe(x);
    }
  });

  it('small rotations keep a centred disc in place and change its edge', () => {
    const [h, w] = [21, 21];
    const x = new Float32Array(h * w);
    for (let i = 0; i < h; i++) for (let j = 0; j < w; j++) if ((i - 10) ** 2 + ((j - 10) / 2) ** 2 <= 36) x[i * w + j] = 1; // an ellipse
    for (const sampling of ['bilinear', 'nearest'] as const) {
      const y = augmentBatch(x, [h, w], { rotate: 15, sampling }, augmentStream(3, 0, 0));
      expect(y[10 * w + 10]).toBeCloseTo(1, 6); // the centre is the fixed point
      const sum = (a: Float32Array): number => a.reduce((p, v) => p + v, 0);
      expect(Math.abs(sum(y) - sum(x)) / sum(x)).toBeLessThan(0.08); // area is kept
      expect(Array.from(y)).not.toEqual(Array.from(x));
      for (const v of y) expect(v >= 0 && v <= 1 + 1e-6).toBe(true);
    }
  });

  it('a positive angle turns the image counterclockwise as displayed', () => {
    // A bright pixel right of centre; rotate: 180 draws from [-180, 180], so draw until the angle is near +90.
    const [h, w] = [15, 15];
    const x = new Float32Array(h * w);
    x[7 * w + 12] = 1; // right of centre (7, 7)
    for (let b = 0; b < 200; b++) {
      const angle = (2 * augmentStream(11, 0, b).float() - 1) * 180;
      if (Math.abs(angle - 90) > 5) continue;
      const y = augmentBatch(x, [h, w], { rotate: 180, sampling: 'nearest' }, augmentStream(11, 0, b));
      // Counterclockwise by ~90°: it lands above the centre, around (2, 7).
      expect(y[2 * w + 7]).toBe(1);
      return;
    }
    throw new Error('no angle near 90° in 200 draws');
  });

  it('noise has the requested standard deviation and mean 0', () => {
    const n = 50_000;
    const y = augmentBatch(new Float32Array(n), [5], { noise: 0.3 }, augmentStream(7, 2, 1));
    let s = 0;
    let ss = 0;
    for (const v of y) { s += v; ss += v * v; }
    const mean = s / n;
    const std = Math.sqrt(ss / n - mean * mean);
    expect(Math.abs(mean)).toBeLessThan(0.01);
    expect(std).toBeGreaterThan(0.3 * 0.98);
    expect(std).toBeLessThan(0.3 * 1.02);
  });

  it('validates options, shapes and the rng', () => {
    const x = new Float32Array(784);
    const rng = augmentStream(0, 0, 0);
    const cases: [unknown, RegExp][] = [
      [{ shift: -1 }, /options.shift must be a non-negative integer \(pixels\), got -1/],
      [{ shift: 1.5 }, /options.shift must be a non-negative integer/],
      [{ rotate: 200 }, /options.rotate must be a number of degrees in \[0, 180\], got 200/],
      [{ noise: NaN }, /options.noise must be a finite non-negative number/],
      [{ sampling: 'cubic' }, /options.sampling must be 'bilinear' or 'nearest'/],
      [{ rotation: 5 }, /unknown option "rotation"/],
      [null, /options must be an object/],
    ];
    for (const [opts, re] of cases) {
      const e = dataError(() => augmentBatch(x, [784], opts as never, rng));
      expect(e.code).toBe('BAD_OPTION');
      expect(e.message).toMatch(re);
    }
    const notImage = dataError(() => augmentBatch(new Float32Array(10), [10], { shift: 1 }, rng));
    expect(notImage.code).toBe('BAD_SHAPE');
    expect(notImage.message).toMatch(/shift and rotate need images, but inputShape is \[10\]/);
    expect(augmentBatch(new Float32Array(10), [10], { noise: 0.1 }, rng)).toHaveLength(10); // noise works on any shape
    expect(dataError(() => augmentBatch(new Float32Array(785), [784], {}, rng)).message).toMatch(/785 values, not a whole number of samples/);
    expect(dataError(() => augmentBatch(x, [784], {}, {} as Rng)).message).toMatch(/rng must be an Rng/);
    expect(dataError(() => augmentStream(0, -1, 0)).message).toMatch(/epoch must be a non-negative integer/);
    expect(dataError(() => augmentStream(0, 0, 0.5)).message).toMatch(/batchIndex must be a non-negative integer/);
  });

  it('augmentEpoch augments each minibatch of a batcher from its own stream', () => {
    const n = 10;
    const ds = makeDataset({ name: 'img', inputShape: [1, 6, 6], numClasses: 2, inputs: randomImages(n, 36, 4), labels: Int32Array.from({ length: n }, (_, i) => i % 2) });
    const batcher = new Batcher(ds, { batchSize: 4, seed: 8 });
    const opts = { shift: 1, noise: 0.05 };
    const plain = [...batcher.epoch(1)];
    const aug = [...augmentEpoch(batcher, 1, opts)];
    expect(aug).toHaveLength(2);
    for (let b = 0; b < aug.length; b++) {
      expect(Array.from(aug[b]!.y)).toEqual(Array.from(plain[b]!.y));
      expect(Array.from(aug[b]!.indices)).toEqual(Array.from(plain[b]!.indices));
      expect(aug[b]!.x.shape).toEqual([4, 1, 6, 6]);
      const direct = augmentBatch(plain[b]!.x.data as Float32Array, [1, 6, 6], opts, augmentStream(8, 1, b));
      expect(Array.from(aug[b]!.x.data)).toEqual(Array.from(direct));
    }
  });
});

// ---------- IDX ----------

describe('IDX files', () => {
  it('reads every element type, big-endian, plain and gzipped', () => {
    const cases: [IdxTypeName, number[]][] = [
      ['ubyte', [0, 1, 127, 255, 200, 3]],
      ['sbyte', [-128, -1, 0, 1, 127, 5]],
      ['int16', [-32768, -2, 0, 258, 32767, 7]],
      ['int32', [-2147483648, -70000, 0, 65537, 2147483647, 9]],
      ['float32', [-1.5, 0, 0.25, 3.140000104904175, 2 ** 60, -7]],
      ['float64', [-1.5, 0, 0.1, Math.PI, 1e300, -7]],
    ];
    for (const [type, values] of cases) {
      for (const gz of [false, true]) {
        const raw = idxBytes(type, [2, 3], values);
        const file = join(tmp, `t-${type}${gz ? '.gz' : ''}`);
        writeFileSync(file, gz ? gzipSync(raw) : raw);
        const { dims, data } = readIdx(file);
        expect(dims).toEqual([2, 3]);
        expect(data.constructor.name).toBe({ ubyte: 'Uint8Array', sbyte: 'Int8Array', int16: 'Int16Array', int32: 'Int32Array', float32: 'Float32Array', float64: 'Float64Array' }[type]);
        expect(Array.from(data)).toEqual(values);
      }
    }
  });

  it('loads an MNIST-layout directory (plain, "-" names): shapes, scaling to [0, 1], labels, classes', () => {
    const files = standardFiles();
    const dir = dirWith(files);
    const { train, test } = loadIdxDir(dir);
    expect(train.size).toBe(12);
    expect(test.size).toBe(5);
    expect(train.inputShape).toEqual([16]);
    expect(train.numClasses).toBe(4);
    expect(test.numClasses).toBe(4);
    const tr = imagesAndLabels(12, 4, 4, 4);
    expect(Array.from(train.inputs)).toEqual(Array.from(tr.pixels, (p) => Math.fround(p / 255)));
    expect(Array.from(train.labels)).toEqual(tr.labelValues);
    expect(train.name.endsWith('/train')).toBe(true);
    for (const v of train.inputs) expect(v >= 0 && v <= 1).toBe(true);
  });

  it('loads gzipped files and "." names the same way', () => {
    const plain = loadIdxDir(dirWith(standardFiles()), { name: 'x' });
    for (const variant of [{ gz: true }, { dot: true }, { gz: true, dot: true }]) {
      const other = loadIdxDir(dirWith(standardFiles(variant)), { name: 'x' });
      expect(other).toEqual(plain);
    }
  });

  it('28 × 28 images become inputShape [784]; numClasses is the largest label + 1', () => {
    const tr = imagesAndLabels(3, 28, 28, 10);
    const te = imagesAndLabels(2, 28, 28, 10);
    const labels = idxBytes('ubyte', [3], [0, 9, 2]);
    const { train, test } = loadIdxDir(dirWith({
      'train-images-idx3-ubyte.gz': gzipSync(tr.images), 'train-labels-idx1-ubyte.gz': gzipSync(labels),
      't10k-images-idx3-ubyte.gz': gzipSync(te.images), 't10k-labels-idx1-ubyte.gz': gzipSync(te.labels),
    }));
    expect(train.inputShape).toEqual([784]);
    expect(test.inputShape).toEqual([784]);
    expect(train.numClasses).toBe(10);
  });

  it('a truncated file names the file and the expected and found sizes', () => {
    const raw = idxBytes('ubyte', [3, 4, 4], new Uint8Array(48));
    const file = join(tmp, 'truncated-idx3-ubyte');
    writeFileSync(file, raw.subarray(0, raw.length - 5));
    const e = dataError(() => readIdx(file));
    expect(e.code).toBe('BAD_SHAPE');
    expect(e.message).toContain(file);
    expect(e.message).toMatch(/truncated: dims \[3, 4, 4\] of ubyte need 64 bytes \(16 header \+ 48 × 1\), found 59/);
    // The same inside a gzip, and with extra bytes at the end.
    writeFileSync(file + '.gz', gzipSync(raw.subarray(0, 30)));
    expect(dataError(() => readIdx(file + '.gz')).message).toMatch(/need 64 bytes .* found 30/);
    writeFileSync(file, Buffer.concat([raw, Buffer.alloc(2)]));
    expect(dataError(() => readIdx(file)).message).toMatch(/corrupt \(extra bytes after the data\).* need 64 bytes .* found 66/);
    // A header cut inside the dimensions.
    writeFileSync(file, raw.subarray(0, 10));
    expect(dataError(() => readIdx(file)).message).toMatch(/truncated IDX header: 3 dimensions need 16 header bytes, found 10/);
    // A gzip stream cut short.
    writeFileSync(file + '.gz', gzipSync(raw).subarray(0, 20));
    const gz = dataError(() => readIdx(file + '.gz'));
    expect(gz.code).toBe('FILE_UNREADABLE');
    expect(gz.message).toMatch(/gzip data is corrupt or truncated/);
  });

  it('bad magic, empty files and missing files are named', () => {
    const file = join(tmp, 'bad-magic');
    writeFileSync(file, Buffer.from('<!DOCTYPE html><html></html>'));
    const e = dataError(() => readIdx(file));
    expect(e.code).toBe('BAD_HEADER');
    expect(e.message).toMatch(/bad-magic: not an IDX file: the magic number is 0x3c 0x21 0x44 0x4f/);
    const typeByte = idxBytes('ubyte', [1], [0]);
    typeByte[2] = 0x0a;
    writeFileSync(file, typeByte);
    expect(dataError(() => readIdx(file)).message).toMatch(/magic number is 0x00 0x00 0x0a 0x01/);
    writeFileSync(file, Buffer.alloc(0));
    expect(dataError(() => readIdx(file)).code).toBe('EMPTY_FILE');
    const missing = dataError(() => readIdx(join(tmp, 'nope')));
    expect(missing.code).toBe('FILE_NOT_FOUND');
    expect(missing.message).toContain(join(tmp, 'nope'));
  });

  it('a missing file of the four names the directory and every name tried', () => {
    const files = standardFiles({ gz: true });
    delete files['t10k-labels-idx1-ubyte.gz'];
    const dir = dirWith(files);
    const e = dataError(() => loadIdxDir(dir));
    expect(e.code).toBe('FILE_NOT_FOUND');
    expect(e.message).toContain(`no t10k labels file in ${dir}: tried t10k-labels-idx1-ubyte, t10k-labels-idx1-ubyte.gz, t10k-labels.idx1-ubyte, t10k-labels.idx1-ubyte.gz`);
    const none = dataError(() => loadIdxDir(join(tmp, 'no-such-dir')));
    expect(none.code).toBe('FILE_NOT_FOUND');
    expect(none.message).toMatch(/IDX directory not found: .*no-such-dir/);
  });

  it('image and label counts must agree', () => {
    const files = standardFiles();
    files['train-labels-idx1-ubyte'] = idxBytes('ubyte', [11], new Uint8Array(11));
    const dir = dirWith(files);
    const e = dataError(() => loadIdxDir(dir));
    expect(e.code).toBe('BAD_DATASET');
    expect(e.message).toMatch(/train split of .*: .*train-images-idx3-ubyte holds 12 images but .*train-labels-idx1-ubyte holds 11 labels/);
  });

  it('NaN or Infinity in float images is reported with the file, sample and feature', () => {
    const files = standardFiles();
    const values = new Float32Array(5 * 16).fill(0.5);
    values[3 * 16 + 9] = NaN;
    files['t10k-images-idx3-ubyte'] = idxBytes('float32', [5, 4, 4], values);
    const dir = dirWith(files);
    const e = dataError(() => loadIdxDir(dir));
    expect(e.code).toBe('NOT_A_NUMBER');
    expect(e.message).toMatch(/t10k-images-idx3-ubyte \(dataset ".*\/test"\): input of sample 3, feature 9 .* is NaN/);
    // Float images are kept as stored (no /255).
    values[3 * 16 + 9] = 2;
    files['t10k-images-idx3-ubyte'] = idxBytes('float32', [5, 4, 4], values);
    expect(loadIdxDir(dirWith(files)).test.inputs[3 * 16 + 9]).toBe(2);
  });

  it('labels out of range are reported with the file and sample', () => {
    const files = standardFiles();
    const e = dataError(() => loadIdxDir(dirWith(files), { numClasses: 3 }));
    expect(e.code).toBe('BAD_LABEL');
    expect(e.message).toMatch(/train-labels-idx1-ubyte: label 3 of sample 3 is outside \[0, 3\)/);
    files['t10k-labels-idx1-ubyte'] = idxBytes('sbyte', [5], [0, 1, -2, 0, 1]);
    const neg = dataError(() => loadIdxDir(dirWith(files)));
    expect(neg.code).toBe('BAD_LABEL');
    expect(neg.message).toMatch(/t10k-labels-idx1-ubyte: label -2 of sample 2 is not a non-negative integer/);
    expect(dataError(() => loadIdxDir(tmp, { numClasses: 0 })).message).toMatch(/options.numClasses must be a positive integer/);
  });
});
