/**
 * Saved models: the safetensors codec (round trips, the exact byte layout, hostile input),
 * save → load → predict bit-identical to the live model, and an independent reader in Python.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { Tensor } from '../src/tensor/tensor.js';
import { Rng } from '../src/tensor/rng.js';
import { noGrad } from '../src/autograd/index.js';
import { Sequential, builtinModel, type ModelSpec } from '../src/nn/index.js';
import { fitTransform, makeDataset, transformInputs } from '../src/data/index.js';
import { ChainruleError } from '../src/errors.js';
import {
  MAX_SAFETENSORS_HEADER_BYTES, SafetensorsError, decodeSafetensors, encodeSafetensors, int32Tensor, type StoredTensor,
} from '../src/wire/index.js';
import { SavedModelError, chainruleVersion, loadModel, readPredictInput, saveModel } from '../coordinator/saved-model.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = mkdtempSync(join(tmpdir(), 'chainrule-saved-'));
let dirs = 0;
const freshDir = (): string => join(root, `m${dirs++}`);

const bytesOf = (a: ArrayBufferView): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

/** A safetensors file from a header text (not padded unless the text is) and data bytes. */
function rawFile(header: string | Uint8Array | object, data: Uint8Array | number = 0): Uint8Array {
  const h = header instanceof Uint8Array ? header : Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const d = typeof data === 'number' ? new Uint8Array(data) : data;
  const out = new Uint8Array(8 + h.length + d.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(d, 8 + h.length);
  return out;
}

function rejects(bytes: Uint8Array, pattern: RegExp): void {
  let err: unknown;
  try {
    decodeSafetensors(bytes, 'bad.safetensors');
  } catch (e) {
    err = e;
  }
  expect(err, `expected a SafetensorsError matching ${pattern}`).toBeInstanceOf(SafetensorsError);
  expect((err as Error).message).toMatch(/^bad\.safetensors: /);
  expect((err as Error).message).toMatch(pattern);
}

const f32 = (name: string, shape: number[], begin: number) => ({ [name]: { dtype: 'F32', shape, data_offsets: [begin, begin + 4 * shape.reduce((a, b) => a * b, 1)] } });

describe('safetensors: round trips', () => {
  it('every dtype, odd shapes and special values, and the metadata, come back bit for bit', () => {
    const tensors: Record<string, StoredTensor> = {
      '0.weight': Tensor.from([1.5, -0, NaN, Infinity, -Infinity, 1e-45, 3.4028234663852886e38], [7]),
      'b.f64': Tensor.from([Math.PI, -0, NaN, Number.MIN_VALUE, -1e308, 2, 3, 4], [2, 2, 2], 'float64'),
      steps: int32Tensor(Int32Array.from([0, -1, 2147483647, -2147483648, 5, 6]), [3, 2]),
      scalar: Tensor.scalar(0.25),
      empty: Tensor.zeros([0, 3]),
      emptyInt: int32Tensor(new Int32Array(0), [2, 0]),
      'ünïcode ✓': Tensor.from([1, 2, 3], [3, 1]),
    };
    const metadata = { format: 'pt', note: 'ünïcode ✓ "quoted"\n', empty: '', json: JSON.stringify({ a: [1, 2] }) };
    const bytes = encodeSafetensors(tensors, metadata);
    const back = decodeSafetensors(bytes, 'rt');
    expect(back.metadata).toEqual(metadata);
    expect(Object.keys(back.tensors).sort()).toEqual(Object.keys(tensors).sort());
    for (const [name, t] of Object.entries(tensors)) {
      const u = back.tensors[name]!;
      expect(u.dtype, name).toBe(t.dtype);
      expect([...u.shape], name).toEqual([...t.shape]);
      expect(bytesOf(u.data).equals(bytesOf(t.data)), name).toBe(true);
      expect(u instanceof Tensor, name).toBe(t instanceof Tensor);
    }
    // Aligned data is read without a copy.
    expect(back.tensors['b.f64']!.data.buffer).toBe(bytes.buffer);
  });

  it('no metadata gives an empty record, and no __metadata__ key is written', () => {
    const bytes = encodeSafetensors({ x: Tensor.from([1]) });
    expect(Buffer.from(bytes).toString('latin1')).not.toContain('__metadata__');
    expect(decodeSafetensors(bytes).metadata).toEqual({});
  });

  it('misaligned data (an odd byte offset, an unpadded header) is copied into aligned arrays', () => {
    const good = encodeSafetensors({ a: Tensor.from([1, 2, 3], [3], 'float64'), b: Tensor.from([4, 5]), c: int32Tensor(Int32Array.from([6])) });
    const shifted = new Uint8Array(good.length + 1);
    shifted.set(good, 1);
    const back = decodeSafetensors(shifted.subarray(1), 'shifted');
    for (const t of Object.values(back.tensors)) expect(t.data.byteOffset % t.data.BYTES_PER_ELEMENT).toBe(0);
    expect(Array.from(back.tensors.a!.data)).toEqual([1, 2, 3]);
    expect(Array.from(back.tensors.b!.data)).toEqual([4, 5]);
    expect(Array.from(back.tensors.c!.data)).toEqual([6]);

    // A 61-byte header puts the data at byte 69: no item size divides it.
    const header = JSON.stringify(f32('x', [2], 0)).padEnd(61, ' ');
    const data = new Uint8Array(new Float32Array([1.25, -2.5]).buffer);
    const unpadded = decodeSafetensors(rawFile(header, data), 'unpadded');
    expect(Array.from(unpadded.tensors.x!.data)).toEqual([1.25, -2.5]);
  });

  it("reads the reference implementation's own documentation example (an unpadded 60-byte header)", () => {
    // From huggingface/safetensors' SafeTensors::deserialize doc comment.
    const text = '{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}';
    expect(text.length).toBe(60);
    const t = decodeSafetensors(rawFile(text, 16)).tensors.test!;
    expect(t.dtype).toBe('int32');
    expect([...t.shape]).toEqual([2, 2]);
    expect(Array.from(t.data)).toEqual([0, 0, 0, 0]);
  });
});

describe('safetensors: the exact byte layout', () => {
  it('a hand-built tiny file: length, header, space padding to 8, offsets by item size then name, raw little-endian data', () => {
    const bytes = encodeSafetensors(
      { c: int32Tensor(Int32Array.from([7])), b: Tensor.from([1, -2]), a: Tensor.from([0.5], [1], 'float64') },
      { k: 'v' },
    );
    const header =
      '{"__metadata__":{"k":"v"},' +
      '"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},' +
      '"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},' +
      '"c":{"dtype":"I32","shape":[1],"data_offsets":[16,20]}}';
    expect(header.length).toBe(188);
    const padded = header + '    '; // 188 → 192, a multiple of 8
    expect(padded.length % 8).toBe(0);
    const expected = Buffer.concat([
      Buffer.from([192, 0, 0, 0, 0, 0, 0, 0]),
      Buffer.from(padded, 'utf8'),
      Buffer.from([0, 0, 0, 0, 0, 0, 0xe0, 0x3f]), // 0.5 as f64
      Buffer.from([0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0]), // 1, -2 as f32
      Buffer.from([7, 0, 0, 0]), // 7 as i32
    ]);
    expect(Buffer.from(bytes).equals(expected)).toBe(true);
    expect(bytes.length).toBe(8 + 192 + 20);
  });

  it('the data buffer starts 8-byte aligned whatever the header length', () => {
    for (let len = 0; len < 12; len++) {
      const bytes = encodeSafetensors({ ['x'.repeat(len + 1)]: Tensor.from([1]) });
      const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
      expect((8 + n) % 8).toBe(0);
      expect(Buffer.from(bytes.subarray(8, 8 + n)).toString().trimEnd().endsWith('}')).toBe(true);
    }
  });
});

describe('safetensors: hostile input is refused with a message naming the file, the tensor and the field', () => {
  it('the header length: too short a file, over the cap (checked before reading on), past the end', () => {
    rejects(new Uint8Array(5), /5 bytes is too short/);
    const huge = new Uint8Array(16);
    new DataView(huge.buffer).setBigUint64(0, BigInt(MAX_SAFETENSORS_HEADER_BYTES + 1), true);
    rejects(huge, /header length 100000001 exceeds the cap of 100000000/);
    const enormous = new Uint8Array(16).fill(0xff);
    rejects(enormous, /header length 18446744073709551615 exceeds the cap/);
    const past = rawFile('{}');
    new DataView(past.buffer).setBigUint64(0, 50n, true);
    rejects(past, /header length 50 runs past the end of the file \(2 bytes follow/);
  });

  it('the header text: not UTF-8, not an object, not JSON', () => {
    rejects(rawFile(Buffer.from([0x7b, 0xff, 0xfe, 0x7d])), /not valid UTF-8/);
    rejects(rawFile('[1, 2]'), /must be a JSON object starting with '\{'/);
    rejects(rawFile('\ufeff{}'), /must be a JSON object starting with '\{'/);
    rejects(rawFile('{"a": {"dtype": "F32",}}'), /the header is not valid JSON/);
  });

  it('dtypes: unsupported and unknown', () => {
    rejects(rawFile({ w: { dtype: 'F16', shape: [2], data_offsets: [0, 4] } }, 4), /tensor "w": field 'dtype': "F16" is not supported; supported dtypes are F64, F32, I32/);
    rejects(rawFile({ w: { dtype: 'float32', shape: [1], data_offsets: [0, 4] } }, 4), /tensor "w": field 'dtype': "float32" is not a safetensors dtype/);
    rejects(rawFile({ w: { dtype: 7, shape: [1], data_offsets: [0, 4] } }, 4), /tensor "w": field 'dtype': 7 is not a safetensors dtype/);
  });

  it('shapes and offsets: sizes, ranges, overlaps, holes, trailing bytes', () => {
    rejects(rawFile({ w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, 8), /tensor "w": field 'data_offsets' \[0, 8\] spans 8 bytes, but shape \[3\] of F32 needs 3 × 4 = 12/);
    rejects(rawFile({ w: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, 4), /tensor "w": field 'shape'\[0\] must be a non-negative integer, got -1/);
    rejects(rawFile({ w: { dtype: 'F32', shape: [1.5], data_offsets: [0, 4] } }, 4), /field 'shape'\[0\] must be a non-negative integer, got 1.5/);
    rejects(rawFile({ w: { dtype: 'F32', shape: '2', data_offsets: [0, 8] } }, 8), /field 'shape' must be an array/);
    rejects(rawFile({ w: { dtype: 'F32', shape: [2 ** 40, 2 ** 40], data_offsets: [0, 8] } }, 8), /holds more elements than can be counted/);
    rejects(rawFile({ w: { dtype: 'F32', shape: [1], data_offsets: [0, 4, 8] } }, 8), /field 'data_offsets' must be \[begin, end\]/);
    rejects(rawFile({ w: { dtype: 'F32', shape: [1], data_offsets: [-4, 0] } }, 4), /field 'data_offsets' must be \[begin, end\]/);
    rejects(rawFile({ w: { dtype: 'F32', shape: [0], data_offsets: [4, 0] } }, 4), /field 'data_offsets' \[4, 0\] ends before it begins/);
    rejects(rawFile({ w: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, 4), /tensor "w": field 'data_offsets' \[0, 8\] is out of range: the data buffer holds 4 bytes/);
    rejects(rawFile({ ...f32('a', [2], 0), ...f32('b', [2], 4) }, 12), /tensor "b": field 'data_offsets' \[4, 12\] overlaps tensor "a" \[0, 8\]/);
    rejects(rawFile({ ...f32('a', [2], 0), ...f32('b', [0], 4) }, 8), /tensor "b": field 'data_offsets' \[4, 4\] overlaps tensor "a"/);
    rejects(rawFile({ ...f32('a', [1], 0), ...f32('b', [1], 8) }, 12), /tensor "b": field 'data_offsets' \[8, 12\] leaves a hole: bytes \[4, 8\) of the data buffer belong to no tensor/);
    rejects(rawFile({ ...f32('a', [1], 4) }, 8), /tensor "a": .* leaves a hole: bytes \[0, 4\)/);
    rejects(rawFile({ ...f32('a', [1], 0) }, 12), /data_offsets end at byte 4 of the data buffer, but it holds 12 bytes: bytes \[4, 12\) belong to no tensor/);
    rejects(rawFile({}, 4), /end at byte 0 of the data buffer, but it holds 4 bytes/);
  });

  it('tensor entries: not an object, unknown fields', () => {
    rejects(rawFile({ w: [0, 4] }, 4), /tensor "w": must be an object with dtype, shape and data_offsets/);
    rejects(rawFile({ w: { dtype: 'F32', shape: [1], data_offsets: [0, 4], offsets: [0, 4] } }, 4), /tensor "w": unknown field "offsets"/);
  });

  it('metadata: not an object, non-string values', () => {
    rejects(rawFile({ __metadata__: ['a'] }), /__metadata__ must be an object of string values/);
    rejects(rawFile({ __metadata__: { epochs: 3 } }), /__metadata__ "epochs" must be a string, got 3/);
    rejects(rawFile({ __metadata__: { spec: { a: 1 } } }), /__metadata__ "spec" must be a string/);
  });

  it('duplicate names and fields (JSON.parse would keep the last silently)', () => {
    const w = '{"dtype":"F32","shape":[1],"data_offsets":[0,4]}';
    rejects(rawFile(`{"w":${w},"w":${w}}`, 4), /tensor name "w" occurs twice/);
    rejects(rawFile(`{"w":${w},"\\u0077":${w}}`, 4), /tensor name "w" occurs twice/);
    rejects(rawFile(`{"__metadata__":{"a":"1","a":"2"},"w":${w}}`, 4), /metadata key "a" occurs twice/);
    rejects(rawFile('{"w":{"dtype":"F32","dtype":"F64","shape":[1],"data_offsets":[0,4]}}', 4), /tensor "w": field "dtype" occurs twice/);
    // Duplicates deeper down are not confused with names, and are refused by the field checks.
    rejects(rawFile('{"w":{"dtype":"F32","shape":[{"x":1,"x":2}],"data_offsets":[0,4]}}', 4), /tensor "w": field 'shape'\[0\]/);
    // Braces and quotes inside strings do not confuse the scan.
    const tricky = decodeSafetensors(rawFile(`{"__metadata__":{"a":"{\\"w\\":1,\\"w\\":2}","b":"\\\\"},"w":${w}}`, 4));
    expect(tricky.metadata).toEqual({ a: '{"w":1,"w":2}', b: '\\' });
  });

  it('prototype names, as tensor names and as metadata keys', () => {
    const w = { dtype: 'F32', shape: [1], data_offsets: [0, 4] };
    rejects(rawFile(`{"__proto__":${JSON.stringify(w)}}`, 4), /tensor name "__proto__" is reserved/);
    rejects(rawFile({ constructor: w }, 4), /tensor name "constructor" is reserved/);
    rejects(rawFile({ toString: w }, 4), /tensor name "toString" is reserved/);
    rejects(rawFile('{"__metadata__":{"__proto__":"x"}}'), /metadata name "__proto__" is reserved/);
    rejects(rawFile({ '': w }, 4), /tensor names must not be empty/);
    expect(({} as Record<string, unknown>).dtype).toBeUndefined(); // nothing leaked into Object.prototype
  });

  it('not bytes at all', () => {
    expect(() => decodeSafetensors('{}' as unknown as Uint8Array, 'x')).toThrow(/x: expected bytes \(a Uint8Array\), got "\{\}"/);
  });

  it('the encoder refuses what no reader could load back', () => {
    const one = Tensor.from([1]);
    expect(() => encodeSafetensors({ __metadata__: one })).toThrow(/cannot be named __metadata__/);
    expect(() => encodeSafetensors(JSON.parse('{"__proto__": 1}') as Record<string, StoredTensor>)).toThrow(/tensor name "__proto__" is reserved/);
    expect(() => encodeSafetensors({ x: one }, { epochs: 3 as unknown as string })).toThrow(/metadata "epochs" must be a string, got 3/);
    expect(() => encodeSafetensors({ x: [1, 2] as unknown as Tensor })).toThrow(/tensor "x": must be a Tensor \(float32 or float64\) or an Int32Tensor, got Array/);
    expect(() => int32Tensor(new Int32Array(3), [2, 2])).toThrow(/shape \[2, 2\] holds 4 elements, the data 3/);
  });
});

// ----- saved models -----

/** The built-in MLP with seeded random parameters. */
function liveMlp(seed = 11): { spec: ModelSpec; model: Sequential } {
  const spec = builtinModel('mlp', [784], 10);
  const model = Sequential.fromSpec(spec, 3);
  const rng = new Rng(seed);
  for (const [, p] of model.parameters()) for (let i = 0; i < p.size; i++) p.data[i] = rng.normal() * 0.05;
  return { spec, model };
}

function randomInputs(n: number, features: number, seed = 5): Tensor {
  const rng = new Rng(seed);
  const x = new Float32Array(n * features);
  for (let i = 0; i < x.length; i++) x[i] = rng.float();
  return new Tensor(x, [n, features]);
}

const evalForward = (model: Sequential, x: Tensor): Tensor =>
  noGrad(() => model.forward(x, { training: false, seed: 0, step: 0, microBatch: 0 }));

function argmaxRows(y: Tensor): number[] {
  const [n, c] = [y.shape[0]!, y.shape[1]!];
  return Array.from({ length: n }, (_, i) => {
    let best = 0;
    for (let j = 1; j < c; j++) if (y.data[i * c + j]! > y.data[i * c + best]!) best = j;
    return best;
  });
}

function expectError(fn: () => unknown, code: string, pattern: RegExp): ChainruleError {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err, `expected a ChainruleError ${code} matching ${pattern}`).toBeInstanceOf(ChainruleError);
  expect((err as ChainruleError).code).toBe(code);
  expect((err as Error).message).toMatch(pattern);
  return err as ChainruleError;
}

describe('saveModel and loadModel', () => {
  it('a saved built-in MLP loads back and predicts bit-identically to the live model', () => {
    const { spec, model } = liveMlp();
    const dir = freshDir();
    saveModel(dir, { spec, params: Object.fromEntries(model.parameters()), metadata: { epochs: 3, optimizer: { type: 'adam' }, note: 'ü' } });
    expect(readdirSync(dir).sort()).toEqual(['model.json', 'model.safetensors']); // no temporaries left

    const m = loadModel(dir);
    expect(m.spec).toEqual(spec);
    expect(m.metadata).toEqual({ epochs: 3, optimizer: { type: 'adam' }, note: 'ü' });
    expect(m.transform).toBeUndefined();
    expect(m.savedBy).toBe(chainruleVersion());
    expect(chainruleVersion()).toBe(JSON.parse(readFileSync(join(here, '..', 'package.json'), 'utf8')).version);
    const params = m.parameters();
    expect(Object.keys(params)).toEqual(model.parameters().map(([n]) => n));
    for (const [name, p] of model.parameters()) expect(bytesOf(params[name]!.data).equals(bytesOf(p.data)), name).toBe(true);

    const x = randomInputs(64, 784);
    const live = evalForward(model, x);
    const y = m.predict(x);
    expect([...y.shape]).toEqual([64, 10]);
    expect(bytesOf(y.data).equals(bytesOf(live.data))).toBe(true);
    expect(Array.from(m.predictClasses(x))).toEqual(argmaxRows(live));
    // Rows are independent in every kernel: predicting in chunks changes the memory, not the bits.
    expect(bytesOf(m.predict(x, { batchSize: 7 }).data).equals(bytesOf(live.data))).toBe(true);
  });

  it('predict applies the saved input transform first', () => {
    const { spec, model } = liveMlp(12);
    const raw = randomInputs(200, 784, 9);
    for (let i = 0; i < raw.size; i++) raw.data[i] = raw.data[i]! * 255 + 3;
    const train = makeDataset({ name: 'toy/train', inputShape: [784], numClasses: 10, inputs: raw.data as Float32Array, labels: new Int32Array(200) });
    const transform = fitTransform('standardize', train);
    const dir = freshDir();
    saveModel(dir, { spec, params: Object.fromEntries(model.parameters()), transform });
    const m = loadModel(dir);
    expect(m.transform).toEqual(transform);
    const x = new Tensor(raw.data.slice(0, 32 * 784), [32, 784]);
    const live = evalForward(model, new Tensor(transformInputs(transform, x.data as Float32Array, [784]), [32, 784]));
    expect(bytesOf(m.predict(x).data).equals(bytesOf(live.data))).toBe(true);

    const ds = makeDataset({ name: 'toy/test', inputShape: [784], numClasses: 10, inputs: x.data as Float32Array, labels: Int32Array.from(argmaxRows(live)) });
    const ev = m.evaluate(ds, { batchSize: 10 });
    expect(ev.accuracy).toBe(1);
    expect(ev.samples).toBe(32);
    expect(Number.isFinite(ev.loss)).toBe(true);
  });

  it('a model with buffers (BatchNorm running statistics) needs them, and predicts with them', () => {
    const spec: ModelSpec = {
      inputShape: [6],
      layers: [{ type: 'dense', inputs: 6, units: 4 }, { type: 'batchNorm', channels: 4 }, { type: 'relu' }, { type: 'dense', inputs: 4, units: 3 }],
    };
    const model = Sequential.fromSpec(spec, 1);
    const bn = model.layers[1]!;
    const rng = new Rng(2);
    for (const [, b] of bn.buffers) for (let i = 0; i < b.size; i++) b.data[i] = 0.5 + rng.float();
    const params = Object.fromEntries(model.parameters());
    const buffers = Object.fromEntries(bn.buffers.map(([n, b]) => [`1.${n}`, b]));
    const dir = freshDir();
    expectError(() => saveModel(dir, { spec, params }), 'MODEL_MISMATCH', /buffer '1\.runningMean' \[4\] of the spec's model is missing[\s\S]*pass them as model\.buffers/);
    expect(existsSync(dir)).toBe(false); // nothing written
    saveModel(dir, { spec, params, buffers });
    const m = loadModel(dir);
    expect(Object.keys(m.buffers())).toEqual(['1.runningMean', '1.runningVar']);
    const x = randomInputs(5, 6);
    expect(bytesOf(m.predict(x).data).equals(bytesOf(evalForward(model, x).data))).toBe(true);
  });

  it('predict takes [n, features] for multi-dimensional inputs, batches internally, and checks its input', () => {
    const spec: ModelSpec = { inputShape: [2, 3], layers: [{ type: 'flatten' }, { type: 'dense', inputs: 6, units: 2 }] };
    const model = Sequential.fromSpec(spec, 4);
    const dir = freshDir();
    saveModel(dir, { spec, params: Object.fromEntries(model.parameters()) });
    const m = loadModel(dir);
    const x = randomInputs(7, 6);
    const live = evalForward(model, x.view([7, 2, 3]));
    expect(bytesOf(m.predict(x).data).equals(bytesOf(live.data))).toBe(true);
    expect(bytesOf(m.predict(x.view([7, 2, 3]), { batchSize: 7 }).data).equals(bytesOf(live.data))).toBe(true);
    expect([...m.predict(x, { batchSize: 3 }).shape]).toEqual([7, 2]);
    expectError(() => m.predict(randomInputs(2, 5)), 'BAD_INPUT', /predict: x has shape \[2, 5\], but the model takes \[batch, 2, 3\] or \[batch, 6\]/);
    expectError(() => m.predict(Tensor.from([1, NaN, 0, 0, 0, 0], [1, 6])), 'BAD_INPUT', /value NaN of sample 0 \(feature 1\) is not finite/);
    expectError(() => m.predict(x, { batchSize: 0 }), 'BAD_INPUT', /options\.batchSize must be a positive integer/);
  });

  it('predictClasses refuses models that are not classifiers', () => {
    const spec: ModelSpec = { inputShape: [3], layers: [{ type: 'dense', inputs: 3, units: 3 }], loss: 'mse', autoencoder: true };
    const model = Sequential.fromSpec(spec, 1);
    const dir = freshDir();
    saveModel(dir, { spec, params: Object.fromEntries(model.parameters()) });
    const m = loadModel(dir);
    expectError(() => m.predictClasses(randomInputs(2, 3)), 'NOT_A_CLASSIFIER', /not a classifier \(loss mse, autoencoder/);
    expect(m.evaluate(makeDataset({ name: 'ae', inputShape: [3], numClasses: 1, inputs: randomInputs(4, 3).data as Float32Array, labels: new Int32Array(4) })).accuracy).toBeNull();
  });

  it('saving again replaces the model; model.json is readable and optional, and must agree with the weights', () => {
    const { spec, model } = liveMlp(1);
    const dir = freshDir();
    saveModel(dir, { spec, params: Object.fromEntries(model.parameters()), metadata: { run: 1 } });
    saveModel(dir, { spec, params: Object.fromEntries(model.parameters()), metadata: { run: 2 } });
    expect(readdirSync(dir).sort()).toEqual(['model.json', 'model.safetensors']);
    const readable = JSON.parse(readFileSync(join(dir, 'model.json'), 'utf8'));
    expect(readable).toMatchObject({ format: 'chainrule-model', version: 1, chainrule: chainruleVersion(), weights: 'model.safetensors', spec, metadata: { run: 2 } });
    expect(readable.tensors['0.weight']).toEqual({ kind: 'parameter', dtype: 'F32', shape: [784, 256] });
    expect(loadModel(dir).metadata).toEqual({ run: 2 });

    // Key order and spacing do not matter; content does.
    writeFileSync(join(dir, 'model.json'), JSON.stringify({ spec: Object.fromEntries(Object.entries(spec).reverse()) }));
    expect(loadModel(dir).spec).toEqual(spec);
    writeFileSync(join(dir, 'model.json'), JSON.stringify({ ...readable, spec: { ...spec, loss: 'mse' } }));
    expectError(() => loadModel(dir), 'MODEL_MISMATCH', /model\.json and .*model\.safetensors disagree on the spec/);
    writeFileSync(join(dir, 'model.json'), '{ not json');
    expectError(() => loadModel(dir), 'BAD_MODEL', /model\.json is not valid JSON/);
    rmSync(join(dir, 'model.json'));
    expect(loadModel(dir).spec).toEqual(spec); // the weights file alone is the model
  });

  it('saveModel checks the parameters against the spec before writing anything', () => {
    const { spec, model } = liveMlp();
    const params = Object.fromEntries(model.parameters());
    const dir = freshDir();
    const { ['4.bias']: _dropped, ...missing } = params;
    expectError(() => saveModel(dir, { spec, params: missing }), 'MODEL_MISMATCH', /parameter '4\.bias' \[10\] of the spec's model is missing from model\.params/);
    expectError(() => saveModel(dir, { spec, params: { ...params, '9.weight': Tensor.zeros([2]) } }), 'MODEL_MISMATCH', /model\.params holds a tensor the spec's model does not have: 9\.weight/);
    expectError(() => saveModel(dir, { spec, params: { ...params, '0.bias': Tensor.zeros([255]) } }), 'MODEL_MISMATCH', /parameter '0\.bias' is \[255\] in model\.params, but the spec's model has \[256\]/);
    expectError(() => saveModel(dir, { spec: { ...spec, layers: [] }, params }), 'BAD_SPEC', /'layers' must be a non-empty array/);
    expectError(() => saveModel(dir, { spec, params, transform: { kind: 'minmax' } as never }), 'BAD_INPUT', /model\.transform: transform spec: minmax: perFeature must be a boolean/);
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    expectError(() => saveModel(dir, { spec, params, metadata: circular }), 'BAD_INPUT', /model\.metadata is not JSON-serializable/);
    expectError(() => saveModel(dir, { spec, params, extra: 1 } as never), 'BAD_INPUT', /unknown field "extra"/);
    expect(existsSync(dir)).toBe(false);
    const file = join(root, 'a-file');
    writeFileSync(file, 'x');
    expectError(() => saveModel(file, { spec, params }), 'WRITE_FAILED', /cannot create the directory/);
  });
});

describe('loadModel refuses what it cannot trust, naming the file', () => {
  const { spec, model } = liveMlp(4);
  const params = Object.fromEntries(model.parameters());
  const meta = { format: 'chainrule-model', version: '1', chainrule: '0.1.0', spec: JSON.stringify(spec) };
  function dirWith(bytes: Uint8Array | null): string {
    const dir = freshDir();
    saveModel(dir, { spec, params });
    rmSync(join(dir, 'model.json'));
    if (bytes) writeFileSync(join(dir, 'model.safetensors'), bytes);
    return dir;
  }

  it('a missing directory or file', () => {
    expectError(() => loadModel(join(root, 'nope')), 'MODEL_NOT_FOUND', /model directory not found: .*nope/);
    const dir = dirWith(null);
    expectError(() => loadModel(join(dir, 'model.safetensors')), 'MODEL_NOT_FOUND', /model\.safetensors is not a directory/);
    rmSync(join(dir, 'model.safetensors'));
    expectError(() => loadModel(dir), 'MODEL_NOT_FOUND', /holds no model\.safetensors/);
  });

  it('a foreign, a newer or a corrupt file', () => {
    expectError(() => loadModel(dirWith(encodeSafetensors(params, { format: 'pt' }))), 'BAD_MODEL', /model\.safetensors is a safetensors file but not a chainrule model \(__metadata__ format is "pt"/);
    expectError(() => loadModel(dirWith(encodeSafetensors(params))), 'BAD_MODEL', /not a chainrule model \(__metadata__ format is missing/);
    expectError(() => loadModel(dirWith(encodeSafetensors(params, { ...meta, version: '2' }))), 'BAD_MODEL', /model format version "2" is not supported/);
    const good = encodeSafetensors(params, meta);
    expectError(() => loadModel(dirWith(good.subarray(0, good.length - 3))), 'BAD_SAFETENSORS', /model\.safetensors: tensor "[^"]+": field 'data_offsets' .* is out of range/);
    expectError(() => loadModel(dirWith(new Uint8Array(0))), 'BAD_SAFETENSORS', /model\.safetensors: 0 bytes is too short/);
    expectError(() => loadModel(dirWith(encodeSafetensors(params, { ...meta, spec: '{"inputShape":' }))), 'BAD_MODEL', /__metadata__ "spec" is not valid JSON/);
    expectError(() => loadModel(dirWith(encodeSafetensors(params, { ...meta, spec: '{"inputShape":[4],"layers":[{"type":"warp"}]}' }))), 'BAD_MODEL', /model\.safetensors: spec: layer 0 \(warp\): unknown layer type 'warp'/);
    expectError(() => loadModel(dirWith(encodeSafetensors(params, { ...meta, metadata: '[1]' }))), 'BAD_MODEL', /__metadata__ "metadata" must be a JSON object/);
    expectError(() => loadModel(dirWith(encodeSafetensors(params, { ...meta, transform: '{"kind":"zscore"}' }))), 'BAD_MODEL', /model\.safetensors: transform: transform spec: kind must be one of/);
    const fitted = fitTransform('minmax', makeDataset({ name: 'd', inputShape: [3], numClasses: 1, inputs: new Float32Array(6), labels: new Int32Array(2) }));
    expectError(() => loadModel(dirWith(encodeSafetensors(params, { ...meta, transform: JSON.stringify(fitted) }))), 'MODEL_MISMATCH', /the transform was fitted on samples of 3 features, but the model takes 784/);
  });

  it('weights that do not fit the spec: a missing, an extra, a misshapen or an integer parameter', () => {
    const { ['2.weight']: _w, ...missing } = params;
    expectError(() => loadModel(dirWith(encodeSafetensors(missing, meta))), 'MODEL_MISMATCH', /model\.safetensors: parameter '2\.weight' \[256, 128\] of the spec's model is missing from the file/);
    expectError(() => loadModel(dirWith(encodeSafetensors({ ...params, extra: Tensor.zeros([1]) }, meta))), 'MODEL_MISMATCH', /the file holds a tensor the spec's model does not have: extra/);
    expectError(() => loadModel(dirWith(encodeSafetensors({ ...params, '4.weight': Tensor.zeros([10, 128]) }, meta))), 'MODEL_MISMATCH', /parameter '4\.weight' is \[10, 128\] in the file, but the spec's model has \[128, 10\]/);
    expectError(() => loadModel(dirWith(encodeSafetensors({ ...params, '4.bias': int32Tensor(new Int32Array(10)) }, meta))), 'MODEL_MISMATCH', /parameter '4\.bias' in the file is I32; it must be F32 or F64/);
  });

  it('a dir argument that is not a path', () => {
    expectError(() => loadModel('' as string), 'BAD_INPUT', /dir must be a non-empty path/);
    expect(SavedModelError.prototype).toBeInstanceOf(ChainruleError);
  });
});

describe('readPredictInput', () => {
  function file(name: string, content: string | Uint8Array): string {
    const p = join(root, `${dirs++}-${name}`);
    writeFileSync(p, content);
    return p;
  }

  it('CSV with or without a header, every column a feature', () => {
    const a = readPredictInput(file('a.csv', 'x,y,z\n1,2,3\n\n4,5,6.5\n'), [3]);
    expect([...a.shape]).toEqual([2, 3]);
    expect(Array.from(a.data)).toEqual([1, 2, 3, 4, 5, 6.5]);
    const b = readPredictInput(file('b.csv', '1,2,3,4,5,6\n'), [2, 3]);
    expect([...b.shape]).toEqual([1, 2, 3]);
    expectError(() => readPredictInput(file('c.csv', '1,2,3,0\n4,5,6,1\n'), [3]), 'BAD_SHAPE', /each sample has 4 features, but the model takes 3 \(input shape \[3\]\)[\s\S]*drop the label column/);
    expectError(() => readPredictInput(file('d.csv', '1,2,3\n1,2,x\n'), [3]), 'NOT_A_NUMBER', /d\.csv:2:3: column is not a number: "x"/);
    expectError(() => readPredictInput(file('e.csv', 'a,b,c\n1,2,3\n4,5\n'), [3]), 'RAGGED_ROW', /e\.csv:3: expected 3 columns, found 2/);
  });

  it('JSON: an array of samples or {"inputs": [...]}', () => {
    expect(Array.from(readPredictInput(file('a.json', '[[1, 2], [3, 4.5]]'), [2]).data)).toEqual([1, 2, 3, 4.5]);
    expect([...readPredictInput(file('b.json', '{"inputs": [[1, 2, 3, 4]]}'), [2, 2]).shape]).toEqual([1, 2, 2]);
    expect(Array.from(readPredictInput(file('noext', ' [[7, 8]]'), [2]).data)).toEqual([7, 8]);
    expectError(() => readPredictInput(file('c.json', '[[1, 2], [3]]'), [2]), 'RAGGED_ROW', /sample 1 has 1 values, sample 0 has 2/);
    expectError(() => readPredictInput(file('d.json', '[[1, "2"]]'), [2]), 'NOT_A_NUMBER', /sample 0, value 1 must be a finite number, got "2"/);
    expectError(() => readPredictInput(file('e.json', '[[[1, 2]]]'), [2]), 'BAD_SHAPE', /each sample has 1 features, but the model takes 2/);
    expectError(() => readPredictInput(file('f.json', '{"input": [[1]]}'), [1]), 'BAD_DATASET', /exactly one field, "inputs"; found "input"/);
    expectError(() => readPredictInput(file('g.json', '[]'), [1]), 'EMPTY_FILE', /holds no samples/);
    expectError(() => readPredictInput(file('h.json', '[[1, 2]'), [2]), 'BAD_DATASET', /is not valid JSON/);
    expectError(() => readPredictInput(file('i.json', '[[1, 2, 3]]'), [2]), 'BAD_SHAPE', /each sample has 3 features, but the model takes 2/);
  });

  it('IDX images, plain or gzipped, ubyte pixels scaled to [0, 1] as in training', () => {
    const idx = new Uint8Array([0, 0, 0x08, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2, 0, 255, 51, 102, 1, 2, 3, 4]);
    for (const [name, bytes] of [['images-idx3-ubyte', idx], ['images-idx3-ubyte.gz', gzipSync(idx)]] as const) {
      const x = readPredictInput(file(name, bytes), [4]);
      expect([...x.shape]).toEqual([2, 4]);
      expect(Array.from(x.data)).toEqual(Array.from(Float32Array.from([0, 255, 51, 102, 1, 2, 3, 4], (v) => v / 255)));
    }
    expectError(() => readPredictInput(file('images2-idx3-ubyte', idx), [9]), 'BAD_SHAPE', /each sample has 4 values, but the model takes 9[\s\S]*the size the model was trained on/);
  });

  it('a missing file or a bad shape', () => {
    expectError(() => readPredictInput(join(root, 'absent.csv'), [2]), 'FILE_NOT_FOUND', /CSV file not found/);
    expectError(() => readPredictInput(join(root, 'absent'), [2]), 'FILE_NOT_FOUND', /input file not found/);
    expectError(() => readPredictInput('x.csv', []), 'BAD_OPTION', /inputShape must be a non-empty array of positive integers/);
  });
});

// ----- independent readers -----

const PYTHON = process.env.PYTHON ?? 'python3';
const hasPython = spawnSync(PYTHON, ['--version']).status === 0;
const reference = hasPython
  ? ['numpy', 'torch'].find((fw) => spawnSync(PYTHON, ['-c', `import safetensors.${fw}`]).status === 0)
  : undefined;
const torchOnly = hasPython && reference === undefined && spawnSync(PYTHON, ['-c', 'import torch']).status === 0;
const noPython = hasPython ? '' : ` [skipped: ${PYTHON} is not on PATH]`;
const noReference = !hasPython ? noPython
  : reference ? ''
    : torchOnly ? ' [skipped: torch is installed but reads safetensors only through the safetensors package, which is not]'
      : ` [skipped: neither "import safetensors.numpy" nor "import safetensors.torch" works in ${PYTHON}]`;

/** What our decoder sees, in the reader's terms: per tensor name, dtype, shape and the values summed one by one in order. */
function ourSummary(bytes: Uint8Array): { name: string; dtype: string; shape: number[]; sum: number }[] {
  const names: Record<string, string> = { float32: 'F32', float64: 'F64', int32: 'I32' };
  return Object.entries(decodeSafetensors(bytes).tensors).map(([name, t]) => {
    let sum = 0;
    for (let i = 0; i < t.data.length; i++) sum += t.data[i]!;
    return { name, dtype: names[t.dtype]!, shape: [...t.shape], sum };
  }).sort((a, b) => (a.name < b.name ? -1 : 1));
}

const byName = <T extends { name: string }>(xs: T[]): T[] => [...xs].sort((a, b) => (a.name < b.name ? -1 : 1));

describe('independent readers', () => {
  it.skipIf(!hasPython)(`a standard-library Python reader parses our files, finds the offsets tiling the buffer, and sums the same values${noPython}`, () => {
    const { spec, model } = liveMlp(8);
    const dir = freshDir();
    saveModel(dir, { spec, params: Object.fromEntries(model.parameters()), metadata: { epochs: 2 } });
    const tiny = join(root, 'tiny.safetensors');
    writeFileSync(tiny, encodeSafetensors({ f: Tensor.from([0.1, 0.2, 0.3]), d: Tensor.from([1e-3, 2], [2, 1], 'float64'), i: int32Tensor(Int32Array.from([-5, 7, 9])), e: Tensor.zeros([0]) }, { k: 'v' }));
    for (const path of [join(dir, 'model.safetensors'), tiny]) {
      const r = spawnSync(PYTHON, [join(here, 'read_safetensors.py'), path], { encoding: 'utf8', maxBuffer: 1 << 26 });
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const out = JSON.parse(r.stdout) as { header_length: number; data_start: number; metadata: Record<string, string>; tensors: { name: string; dtype: string; shape: number[]; sum: number }[] };
      const bytes = readFileSync(path);
      expect(out.data_start % 8).toBe(0);
      expect(out.metadata).toEqual(decodeSafetensors(bytes).metadata);
      expect(byName(out.tensors)).toEqual(ourSummary(bytes));
    }
    // And it refuses what we refuse: a hole in the data buffer.
    const holed = join(root, 'holed.safetensors');
    writeFileSync(holed, rawFile({ ...f32('a', [1], 0), ...f32('b', [1], 8) }, 12));
    const bad = spawnSync(PYTHON, [join(here, 'read_safetensors.py'), holed], { encoding: 'utf8' });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/do not continue at 4/);
  });

  it.skipIf(!reference)(`the reference safetensors library reads our files and writes files we read${noReference}`, () => {
    const { spec, model } = liveMlp(9);
    const dir = freshDir();
    saveModel(dir, { spec, params: Object.fromEntries(model.parameters()), metadata: { epochs: 2 } });
    const ours = join(dir, 'model.safetensors');
    const theirs = join(root, 'theirs.safetensors');
    const script = `
import json, sys
from safetensors import safe_open
from safetensors.${reference} import load_file, save_file
import numpy as np
path, out = sys.argv[1], sys.argv[2]
with safe_open(path, framework="${reference === 'torch' ? 'pt' : 'np'}") as f:
    meta = f.metadata()
rows = []
for name, t in load_file(path).items():
    a = np.asarray(t).astype(np.float64).ravel().tolist()
    s = 0.0
    for v in a:
        s += v
    rows.append({"name": name, "dtype": {"float32": "F32", "float64": "F64", "int32": "I32"}[str(t.dtype).replace("torch.", "")], "shape": list(t.shape), "sum": s})
arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3) / 7, "d": np.array([1.5, -2.25]), "i": np.array([[3, -4]], dtype=np.int32)}
${reference === 'torch' ? 'import torch\narrays = {k: torch.from_numpy(v) for k, v in arrays.items()}' : ''}
save_file(arrays, out, metadata={"who": "reference"})
print(json.dumps({"metadata": meta, "tensors": rows}))
`;
    const r = spawnSync(PYTHON, ['-c', script, ours, theirs], { encoding: 'utf8', maxBuffer: 1 << 26 });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout) as { metadata: Record<string, string>; tensors: { name: string; dtype: string; shape: number[]; sum: number }[] };
    expect(out.metadata).toEqual(decodeSafetensors(readFileSync(ours)).metadata);
    expect(byName(out.tensors)).toEqual(ourSummary(readFileSync(ours)));

    const back = decodeSafetensors(readFileSync(theirs), theirs);
    expect(back.metadata).toEqual({ who: 'reference' });
    expect(Array.from(back.tensors.w!.data)).toEqual(Array.from(Float32Array.from([0, 1, 2, 3, 4, 5], (v) => v / 7)));
    expect([...back.tensors.w!.shape]).toEqual([2, 3]);
    expect(Array.from(back.tensors.d!.data)).toEqual([1.5, -2.25]);
    expect(back.tensors.i!.dtype).toBe('int32');
    expect(Array.from(back.tensors.i!.data)).toEqual([3, -4]);
  });
});
