/**
 * Every decoder of outside input, with a generator of hostile inputs and a check of what it
 * accepts. Shared by `npm run fuzz` (scripts/fuzz.ts) and the short run in test/fuzz.test.ts.
 */
import fc from 'fast-check';
import { gzipSync } from 'node:zlib';
import { Tensor, sizeOf } from '../../src/tensor/tensor.js';
import { MAX_TENSOR_ELEMENTS, decodeMessage, decodeValue, encodeMessage, encodeValue } from '../../src/wire/codec.js';
import { peerTypes, requestTypes } from '../../src/wire/messages.js';
import { validateModelSpec } from '../../src/nn/index.js'; // the index registers every layer
import { losses } from '../../src/nn/losses.js';
import { parseCsv, parseCsvInputs } from '../../src/data/csv.js';
import { hasTargets } from '../../src/data/dataset.js';
import { decodeSafetensors, encodeSafetensors, int32Tensor } from '../../src/wire/safetensors.js';
import { decodeIdx } from '../../src/data/idx.js';
import {
  cycleArb, dagArb, hostileValueArb, keyArb, mutated, ownObject, packAny, packerIndexArb, prototypeNames, rawMsgpackArb, wireTensorArb,
} from './arbitraries.js';

export interface FuzzTarget<T = unknown> {
  /** `module.function`, as printed in the report. */
  name: string;
  arbitrary: fc.Arbitrary<T>;
  /** Decodes one input; returns what the decoder returned (for `validate`), or throws what it threw. */
  run(input: T): unknown;
  /** A problem with an accepted result (it let something through), or null. */
  validate(result: unknown, input: T): string | null;
  /** Every error must name where it happened: this must occur in the message. */
  where: RegExp;
  /** Bytes (or characters) of the input, to size the memory budget. */
  size(input: T): number;
  /** Run after every input, accepted or not: a problem left behind (decoder state poisoned), or null. */
  after?(): string | null;
}

const ACTOR = 'fuzz-actor';
const forbidden = new Set<string>(['__proto__', '__proto_', 'constructor', 'prototype']);

/** What a decoded message or value may hold: plain maps and arrays (no sharing), bytes, checked tensors, primitives. */
function checkDecoded(v: unknown, requireFinite: boolean, depth = 0, seen = new Set<object>()): string | null {
  if (depth > 17) return 'nests deeper than 16 levels';
  if (typeof v === 'bigint' || typeof v === 'symbol' || typeof v === 'function') return `a ${typeof v} got through`;
  if (v === null || typeof v !== 'object') return null;
  if (v instanceof Uint8Array) return null;
  if (seen.has(v)) return 'a shared or cyclic reference got through';
  seen.add(v);
  if (v instanceof Tensor) {
    if (!v.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) return `tensor shape [${v.shape.join(', ')}]`;
    if (v.size !== sizeOf(v.shape) || v.size > MAX_TENSOR_ELEMENTS) return `tensor of ${v.size} elements for shape [${v.shape.join(', ')}]`;
    if (requireFinite && !v.data.every(Number.isFinite)) return 'a non-finite value in a tensor that must be finite';
    return null;
  }
  if (v instanceof Int32Array) return v.length > MAX_TENSOR_ELEMENTS ? `int32 tensor of ${v.length} elements` : null;
  if (Array.isArray(v)) {
    for (const x of v) {
      const p = checkDecoded(x, requireFinite, depth + 1, seen);
      if (p) return p;
    }
    return null;
  }
  if (Object.getPrototypeOf(v) !== Object.prototype) return `a ${Object.prototype.toString.call(v)} got through`;
  for (const [k, x] of Object.entries(v)) {
    if (forbidden.has(k)) return `the key ${JSON.stringify(k)} got through`;
    if (k === '$tensor') return 'an undecoded $tensor map got through';
    const p = checkDecoded(x, requireFinite, depth + 1, seen);
    if (p) return p;
  }
  return null;
}

const messageTypeArb = fc.oneof(
  { arbitrary: fc.constantFrom<unknown>(...requestTypes, ...peerTypes, 'ok', 'stepDone', 'activations', 'tensors', 'state', 'error'), weight: 8 },
  { arbitrary: fc.constantFrom<unknown>('launch', '', 'toString', '__proto__', 'constructor', 7, null, ['forward'], 2n ** 65n), weight: 2 },
);
const headerValueArb = fc.oneof(
  { arbitrary: fc.integer({ min: -2, max: 5 }), weight: 6 },
  { arbitrary: fc.constantFrom<unknown>(-1.5, 0.5, 2 ** 53, 2 ** 60, NaN, Infinity, '0', null, true, 2n ** 70n, [0], { n: 0 }), weight: 2 },
);
const runArb = fc.oneof({ arbitrary: fc.string({ maxLength: 8 }), weight: 6 }, { arbitrary: fc.constantFrom<unknown>('r'.repeat(201), 5, null, 2n ** 64n), weight: 1 });

/** A message map: a type, header fields that are usually right, and hostile payload fields. */
const messageValueArb: fc.Arbitrary<unknown> = fc.tuple(
  messageTypeArb, runArb, headerValueArb, headerValueArb, headerValueArb, fc.option(headerValueArb, { nil: undefined }),
  fc.array(fc.tuple(keyArb, fc.oneof(wireTensorArb, hostileValueArb)), { maxLength: 3 }),
).map(([type, run, stage, step, microBatch, replica, payload]) => ownObject([
  ['type', type], ['run', run], ['stage', stage], ['step', step], ['microBatch', microBatch], ...(replica === undefined ? [] : [['replica', replica] as const]), ...payload,
]));

const tensorArb = fc.tuple(fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }), fc.boolean(), fc.double()).map(([shape, f64, v]) => {
  const t = Tensor.zeros(shape, f64 ? 'float64' : 'float32');
  t.data.fill(v);
  return t;
});

/** Messages our own encoder writes (valid), to be corrupted byte by byte. */
const validMessageBytesArb = fc.tuple(fc.constantFrom('forward', 'activation', 'gradient', 'setParams', 'evaluate', 'tensors'), tensorArb, fc.integer({ min: -1, max: 3 }))
  .map(([type, x, mb]) => {
    const h = { run: 'r', stage: 0, step: 1, microBatch: mb };
    const msg = type === 'setParams' ? { ...h, type, params: { '0.weight': x, '0.bias': x.clone() } }
      : type === 'tensors' ? { type, tensors: { a: x } }
      : type === 'gradient' ? { ...h, type, dx: x }
      : { ...h, type, x, targets: Int32Array.from([0, 1]) };
    return encodeMessage(msg as Parameters<typeof encodeMessage>[0]);
  });

/** Bytes for the wire decoders: random, hand-built, corrupted valid encodings, and hostile values packed every way. */
function wireBytesArb(valueArb: fc.Arbitrary<unknown>, validArb: fc.Arbitrary<Uint8Array>): fc.Arbitrary<Uint8Array> {
  return fc.oneof(
    { arbitrary: fc.uint8Array({ maxLength: 256 }), weight: 3 },
    { arbitrary: rawMsgpackArb, weight: 2 },
    { arbitrary: mutated(validArb), weight: 3 },
    { arbitrary: fc.tuple(valueArb, packerIndexArb).map(([v, i]) => packAny(v, i)), weight: 6 },
    { arbitrary: mutated(fc.tuple(valueArb, packerIndexArb).map(([v, i]) => packAny(v, i))), weight: 2 },
    // Shared references and cycles need msgpackr's structured-clone encoder (index 2).
    { arbitrary: fc.oneof(dagArb, cycleArb).map((v) => packAny({ type: 'tensors', run: 'r', stage: 0, step: 0, microBatch: -1, tensors: v }, 2)), weight: 1 },
    { arbitrary: trailing(fc.oneof(validArb, dagArb.map((v) => packAny({ type: 'tensors', tensors: v }, 2)))), weight: 1 },
    // An oversized byte string: what the transport's size cap lets through, claimed to be a small tensor.
    { arbitrary: fc.integer({ min: 1, max: 1 << 20 }).map((n) => packAny({ type: 'forward', run: 'r', stage: 0, step: 0, microBatch: 0, x: { $tensor: 'float32', shape: [2, 2], bytes: new Uint8Array(n) } }, 0)), weight: 1 },
  );
}

// msgpackr keeps module-level state (records, references, the source); a hostile input must not leak into the next message.
const canary = encodeMessage({ run: 'r', stage: 1, step: 2, microBatch: 64, type: 'forward', x: Tensor.from([1, 2, 3, 4], [2, 2]) });
function canaryProblem(): string | null {
  const m = decodeMessage(canary, { actor: 'canary' }) as { microBatch: unknown; x: unknown };
  const x = m.x as Tensor;
  return m.microBatch === 64 && x instanceof Tensor && x.data.join() === '1,2,3,4' ? null : 'the next valid message decoded differently (decoder state poisoned)';
}

/** Any of these with a few bytes appended: msgpackr's own trailing-data error once stringified the whole value. */
const trailing = (base: fc.Arbitrary<Uint8Array>): fc.Arbitrary<Uint8Array> =>
  fc.tuple(base, fc.uint8Array({ minLength: 1, maxLength: 3 })).map(([b, t]) => Uint8Array.from([...b, ...t]));

const wireMessage: FuzzTarget<Uint8Array> = {
  name: 'wire.decodeMessage',
  arbitrary: wireBytesArb(messageValueArb, validMessageBytesArb),
  run: (bytes) => decodeMessage(bytes, { actor: ACTOR }),
  validate(msg) {
    const type = (msg as { type?: unknown }).type;
    if (typeof type !== 'string') return 'a message without a string type got through';
    const finite = ['activation', 'gradient', 'reduce', 'forward', 'backward', 'runStep'].includes(type);
    return checkDecoded(msg, finite);
  },
  where: new RegExp(ACTOR),
  size: (bytes) => bytes.length,
  after: canaryProblem,
};

/** Checkpoint-like payloads: named tensors, optimizer slots, counters, as `encodeValue` writes them. */
const checkpointValueArb: fc.Arbitrary<unknown> = fc.tuple(
  fc.array(fc.tuple(keyArb, fc.oneof(wireTensorArb, hostileValueArb)), { maxLength: 4 }), hostileValueArb, fc.oneof(fc.integer(), hostileValueArb),
).map(([params, optimizer, step]) => ownObject([['version', 1], ['params', ownObject(params)], ['optimizer', optimizer], ['step', step]]));

const validCheckpointBytesArb = fc.tuple(tensorArb, tensorArb, fc.nat()).map(([a, b, t]) =>
  encodeValue({ version: 1, params: { '0.weight': a, '0.bias': b }, optimizer: { type: 'adam', t, slots: { '0.weight': { m: a.clone(), v: a.clone() } } }, epoch: 2 }));

const wireValue: FuzzTarget<{ bytes: Uint8Array; requireFinite: boolean }> = {
  name: 'wire.decodeValue',
  arbitrary: fc.record({ bytes: wireBytesArb(fc.oneof(checkpointValueArb, hostileValueArb), validCheckpointBytesArb), requireFinite: fc.boolean() }),
  run: ({ bytes, requireFinite }) => decodeValue(bytes, { actor: ACTOR, requireFinite }),
  validate: (v, { requireFinite }) => checkDecoded(v, requireFinite),
  where: new RegExp(ACTOR),
  size: ({ bytes }) => bytes.length,
  after: canaryProblem,
};

/** JSON values with BigInt and prototype keys mixed in, as a hand-edited or hostile model spec could hold. */
const specValueArb: fc.Arbitrary<unknown> = fc.oneof(fc.jsonValue({ maxDepth: 3 }), hostileValueArb);
const layerArb = fc.oneof(
  fc.record({ type: fc.constantFrom<unknown>('dense', 'relu', 'conv2d', 'toString', '__proto__', 5, null), units: fc.oneof(fc.integer({ min: 1, max: 64 }), specValueArb), inputs: fc.oneof(fc.integer({ min: 1, max: 64 }), specValueArb) }, { requiredKeys: ['type'] }),
  // Fields a layer knows only: unknown ones are refused, so some specs must have none.
  fc.constantFrom<unknown>({ type: 'relu' }, { type: 'tanh' }),
  specValueArb,
);
const modelSpecArb: fc.Arbitrary<unknown> = fc.oneof(
  { arbitrary: specValueArb, weight: 2 },
  {
    arbitrary: fc.record({
      inputShape: fc.oneof(fc.array(fc.integer({ min: 1, max: 784 }), { minLength: 1, maxLength: 3 }), fc.array(fc.oneof(fc.integer(), fc.double(), fc.bigInt(), fc.string()), { maxLength: 4 }), specValueArb),
      layers: fc.oneof(fc.array(layerArb, { maxLength: 4 }), fc.constant([{ type: 'dense', inputs: 4, units: 3 }, { type: 'relu' }]), specValueArb),
      loss: fc.oneof(fc.constantFrom<unknown>(...Object.keys(losses), ...prototypeNames, 'hinge'), specValueArb),
      autoencoder: fc.oneof(fc.boolean(), specValueArb),
    }, { requiredKeys: [] }).chain((r) => fc.oneof(fc.constant([]), fc.array(fc.tuple(keyArb, specValueArb), { maxLength: 2 })).map((extra) => ownObject([...Object.entries(r), ...extra]))),
    weight: 6,
  },
);

const modelSpec: FuzzTarget<unknown> = {
  name: 'nn.validateModelSpec',
  arbitrary: modelSpecArb,
  run: (spec) => validateModelSpec(spec),
  validate(result) {
    const s = result as { inputShape: unknown; layers: unknown; loss?: unknown };
    if (!Array.isArray(s.inputShape) || !s.inputShape.every((d) => Number.isSafeInteger(d) && d > 0)) return 'a bad inputShape got through';
    if (!Array.isArray(s.layers) || s.layers.length === 0) return 'bad layers got through';
    if (s.loss !== undefined && !(typeof s.loss === 'string' && Object.hasOwn(losses, s.loss))) return `the loss ${String(s.loss)} got through`;
    return null;
  },
  where: /model spec/,
  size: () => 0,
};

const numberCellArb = fc.oneof(
  { arbitrary: fc.integer({ min: -3, max: 9 }).map(String), weight: 4 },
  { arbitrary: fc.double({ min: -1e6, max: 1e6, noNaN: true }).map(String), weight: 2 },
  { arbitrary: fc.constantFrom(' 1', '1 ', '+2', '-0', '.5', '5.', '1e3', '1E-3', '2147483647'), weight: 1 },
);
const hostileCellArb = fc.oneof(
  { arbitrary: fc.constantFrom('', ' ', '"a"', '"x,y"', 'NaN', 'Infinity', '0x1f', '1e', '.', '-', '1e999', '2147483648', '-1', '__proto__', 'toString', '\uFEFF1', '1\r', '"', '""""'), weight: 4 },
  { arbitrary: fc.string({ maxLength: 6 }), weight: 2 },
  // Long runs of digits (with a non-digit at the end): a backtracking number pattern spends seconds on these.
  { arbitrary: fc.tuple(fc.integer({ min: 1000, max: 100_000 }), fc.constantFrom('x', '.', 'e', '', '.5x', 'e+')).map(([n, end]) => '1'.repeat(n) + end), weight: 1 },
);
/** A table of `width` columns, label last; some cells and rows spoiled, a header sometimes. */
const csvTableArb = fc.integer({ min: 1, max: 6 }).chain((width) => fc.tuple(
  fc.option(fc.array(fc.oneof(keyArb, fc.string({ maxLength: 5 })), { minLength: width, maxLength: width }), { nil: undefined }),
  fc.array(fc.tuple(
    fc.array(numberCellArb, { minLength: width - 1, maxLength: width - 1 }), fc.integer({ min: 0, max: 4 }),
    fc.oneof({ arbitrary: fc.constant(undefined), weight: 12 }, { arbitrary: fc.tuple(fc.nat(width), hostileCellArb), weight: 1 }), fc.integer({ min: 0, max: 60 }),
  ).map(([cells, label, spoil, ragged]) => {
    const row = [...cells, String(label)];
    if (spoil) row[spoil[0] % width] = spoil[1];
    return ragged === 0 ? row.slice(1) : ragged === 1 ? [...row, '0'] : row;
  }), { minLength: 1, maxLength: 12 }),
  fc.constantFrom('\n', '\r\n', '\r', '\n\n'), fc.boolean(), fc.boolean(),
).map(([header, rows, eol, bom, trailing]) => (bom ? '\uFEFF' : '') + [...(header ? [header] : []), ...rows].map((r) => r.join(',')).join(eol) + (trailing ? eol : '')));
const csvTextArb: fc.Arbitrary<string> = fc.oneof(
  { arbitrary: fc.string({ maxLength: 200 }), weight: 1 },
  { arbitrary: csvTableArb, weight: 8 },
);
const csvOptionsArb = fc.record({
  labelColumn: fc.oneof({ arbitrary: fc.constant(undefined), weight: 4 }, { arbitrary: fc.nat(6), weight: 2 }, { arbitrary: keyArb, weight: 1 }, { arbitrary: fc.constantFrom<unknown>(-1, 1.5, NaN, null, 2n ** 64n), weight: 1 }),
  header: fc.oneof({ arbitrary: fc.constantFrom<unknown>('auto', true, false), weight: 8 }, { arbitrary: fc.constantFrom<unknown>('yes', 1, null), weight: 1 }),
  testFraction: fc.oneof({ arbitrary: fc.double({ min: 0, max: 0.99, noNaN: true }), weight: 4 }, { arbitrary: fc.constantFrom<unknown>(0, 1, -0.1, NaN, '0.2'), weight: 1 }),
  seed: fc.oneof({ arbitrary: fc.integer(), weight: 4 }, { arbitrary: fc.constantFrom<unknown>(NaN, Infinity, 2n ** 64n), weight: 1 }),
}, { requiredKeys: [] }).chain((o) => fc.option(fc.constant(o), { freq: 2, nil: {} }));

const csv: FuzzTarget<{ text: string; options: unknown }> = {
  name: 'data.parseCsv',
  arbitrary: fc.record({ text: csvTextArb, options: csvOptionsArb }),
  run: ({ text, options }) => parseCsv(text, 'fuzz.csv', options as Parameters<typeof parseCsv>[2]),
  validate(result) {
    const { train, test } = result as ReturnType<typeof parseCsv>;
    for (const ds of [train, test]) {
      if (!ds.inputs.every(Number.isFinite)) return 'a non-finite input got through';
      if (hasTargets(ds)) {
        if (!ds.targets.every(Number.isFinite)) return 'a non-finite target got through';
      } else if (!ds.labels.every((l) => l >= 0 && l < ds.numClasses)) return 'a label outside [0, numClasses) got through';
    }
    return null;
  },
  where: /fuzz\.csv|loadCsv: options/,
  size: ({ text }) => text.length,
};

const idxTypeArb = fc.constantFrom(0x08, 0x09, 0x0b, 0x0c, 0x0d, 0x0e);
const idxWidth: Record<number, number> = { 0x08: 1, 0x09: 1, 0x0b: 2, 0x0c: 4, 0x0d: 4, 0x0e: 8 };

/** A well-formed IDX file of a few small dimensions. */
const validIdxArb = fc.tuple(idxTypeArb, fc.array(fc.integer({ min: 0, max: 12 }), { minLength: 1, maxLength: 4 }), fc.integer({ min: 0, max: 255 })).map(([type, dims, fill]) => {
  const header = 4 + 4 * dims.length;
  const b = new Uint8Array(header + dims.reduce((a, d) => a * d, 1) * idxWidth[type]!).fill(fill);
  b.set([0, 0, type, dims.length]);
  const view = new DataView(b.buffer);
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d, false));
  return b;
});

/** A header claiming far more than follows: huge dims, up to 255 of them. */
const hugeIdxArb = fc.tuple(idxTypeArb, fc.array(fc.constantFrom(0, 1, 60000, 65536, 2 ** 31, 2 ** 32 - 1), { minLength: 1, maxLength: 255 }), fc.uint8Array({ maxLength: 64 }))
  .map(([type, dims, tail]) => {
    const b = new Uint8Array(4 + 4 * dims.length + tail.length);
    b.set([0, 0, type, dims.length]);
    const view = new DataView(b.buffer);
    dims.forEach((d, i) => view.setUint32(4 + 4 * i, d, false));
    b.set(tail, 4 + 4 * dims.length);
    return b;
  });

/**
 * Gzip bombs: a valid header for 4 bytes (or claiming a gigabyte), then gzip members of 16 MiB
 * of zeros each (gunzip inflates concatenated members), up to 1.25 GiB from 1.3 MB. Built once
 * (gzipping takes a while), then picked from at random.
 */
let bombs: Uint8Array[] | undefined;
const bombIdxArb = fc.integer({ min: 0, max: 5 }).map((i) => {
  bombs ??= (() => {
    const zeros = gzipSync(new Uint8Array(1 << 24), { level: 9 });
    const header = (n: number): Buffer => {
      const b = Buffer.alloc(8 + Math.min(n, 4));
      b.set([0, 0, 0x08, 1]);
      b.writeUInt32BE(n, 4);
      return gzipSync(b);
    };
    const bomb = (n: number, members: number): Uint8Array => new Uint8Array(Buffer.concat([header(n), ...Array<Buffer>(members).fill(zeros)]));
    return [bomb(4, 1), bomb(4, 16), bomb(4, 80), bomb(2 ** 30, 80), bomb(2 ** 32 - 1, 2), bomb(4, 0)];
  })();
  return bombs[i]!;
});

const idxPlainArb = fc.oneof(
  { arbitrary: fc.uint8Array({ maxLength: 64 }), weight: 2 },
  { arbitrary: validIdxArb, weight: 3 },
  { arbitrary: mutated(validIdxArb), weight: 3 },
  { arbitrary: hugeIdxArb, weight: 2 },
);
// Gzip is applied when the input is generated, so decoding (the measured part) does only the inflating.
const gz = (b: Uint8Array): Uint8Array => new Uint8Array(gzipSync(b, { level: 1 }));
const idxBytesArb = fc.oneof(
  { arbitrary: idxPlainArb, weight: 6 },
  { arbitrary: idxPlainArb.map(gz), weight: 3 },
  { arbitrary: mutated(idxPlainArb.map(gz)), weight: 2 },
  { arbitrary: fc.uint8Array({ maxLength: 64 }).map((b) => Uint8Array.of(0x1f, 0x8b, ...b)), weight: 1 },
  { arbitrary: bombIdxArb, weight: 1 },
);

const idx: FuzzTarget<Uint8Array> = {
  name: 'data.decodeIdx',
  arbitrary: idxBytesArb,
  run: (bytes) => decodeIdx(bytes, 'fuzz.idx'),
  validate(result) {
    const { dims, data } = result as ReturnType<typeof decodeIdx>;
    return data.length === dims.reduce((a, d) => a * d, 1) ? null : `${data.length} values for dims [${dims.join(', ')}]`;
  },
  where: /fuzz\.idx/,
  size: (bytes) => bytes.length,
};

const csvInputs: FuzzTarget<{ text: string; header: unknown }> = {
  name: 'data.parseCsvInputs',
  arbitrary: fc.record({ text: csvTextArb, header: fc.oneof({ arbitrary: fc.constantFrom<unknown>('auto', true, false), weight: 8 }, { arbitrary: fc.constantFrom<unknown>('yes', 1, null), weight: 1 }) }),
  run: ({ text, header }) => parseCsvInputs(text, 'fuzz.csv', { header } as Parameters<typeof parseCsvInputs>[2]),
  validate(result) {
    const { inputs, rows, columns } = result as ReturnType<typeof parseCsvInputs>;
    if (inputs.length !== rows * columns) return `${inputs.length} inputs for ${rows} × ${columns}`;
    return inputs.every(Number.isFinite) ? null : 'a non-finite input got through';
  },
  where: /fuzz\.csv|readCsvInputs: options/,
  size: ({ text }) => text.length,
};

const safeNameArb = fc.oneof(fc.constantFrom('0.weight', '0.bias', 'a', 'step'), fc.string({ minLength: 1, maxLength: 8 })).filter((n) => n !== '__metadata__' && !Object.hasOwn(Object.prototype, n));
/** Files our own encoder writes: float32, float64 and int32 tensors, sometimes metadata. */
const validSafetensorsArb = fc.tuple(
  fc.uniqueArray(fc.tuple(safeNameArb, fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }), fc.constantFrom('float32', 'float64', 'int32')), { selector: ([n]) => n, maxLength: 4 }),
  fc.option(fc.dictionary(safeNameArb, fc.string({ maxLength: 8 }), { maxKeys: 2 }), { nil: undefined }),
).map(([specs, metadata]) => encodeSafetensors(Object.fromEntries(specs.map(([name, shape, dtype]) => {
  const n = shape.reduce((a, d) => a * d, 1);
  return [name, dtype === 'int32' ? int32Tensor(new Int32Array(n), shape) : Tensor.zeros(shape, dtype)];
})), metadata));

/** Header JSON written by hand: every field of every entry can be wrong, names can be prototype names. */
const headerEntryArb = fc.record({
  dtype: fc.oneof(fc.constantFrom<unknown>('F32', 'F64', 'I32'), fc.constantFrom<unknown>('BF16', 'f32', 'toString', '__proto__', 3, null, ['F32'])),
  shape: fc.oneof(fc.array(fc.oneof(fc.integer({ min: 0, max: 6 }), fc.constantFrom<unknown>(-1, 1.5, 2 ** 53, 1e300, '2', null)), { maxLength: 4 }), fc.constantFrom<unknown>([2 ** 26, 2 ** 26], Array(64).fill(2 ** 20), 'x', null)),
  data_offsets: fc.oneof(fc.tuple(fc.nat(64), fc.nat(64)), fc.constantFrom<unknown>([0, 2 ** 53], [-1, 0], [0], [0, 1, 2], [1.5, 2], null, '0,4')),
  extra: fc.jsonValue({ maxDepth: 2 }),
}, { requiredKeys: [] });
const headerArb: fc.Arbitrary<string> = fc.oneof(
  fc.array(fc.tuple(fc.oneof(safeNameArb, fc.constantFrom('__metadata__', '__proto__', 'constructor', 'toString', '')), fc.oneof(headerEntryArb, fc.jsonValue({ maxDepth: 2 }))), { maxLength: 4 })
    .map((entries) => `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',')}}`),
  fc.string({ maxLength: 40 }).map((t) => `{${t}}`),
  // Deep nesting, for the iterative duplicate-key scan and JSON.parse's recursion.
  fc.integer({ min: 100, max: 100_000 }).map((d) => `{"a":${'['.repeat(d)}${']'.repeat(d)}}`),
  // The same key twice, at the top, in the metadata, in an entry.
  fc.constantFrom('{"a":{},"a":{}}', '{"__metadata__":{"k":"1","k":"2"}}', '{"w":{"dtype":"F32","dtype":"F32","shape":[],"data_offsets":[0,4]}}'),
);
const craftedSafetensorsArb = fc.tuple(headerArb, fc.integer({ min: 0, max: 3 }), fc.uint8Array({ maxLength: 64 })).map(([header, lengthKind, data]) => {
  const h = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + h.length + data.length);
  const claimed = lengthKind === 0 ? BigInt(h.length + 1) : lengthKind === 1 ? 2n ** 64n - 1n : BigInt(h.length);
  new DataView(out.buffer).setBigUint64(0, claimed, true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
});

const safetensors: FuzzTarget<Uint8Array> = {
  name: 'wire.decodeSafetensors',
  arbitrary: fc.oneof(
    { arbitrary: fc.uint8Array({ maxLength: 128 }), weight: 1 },
    { arbitrary: validSafetensorsArb, weight: 2 },
    { arbitrary: mutated(validSafetensorsArb), weight: 3 },
    { arbitrary: craftedSafetensorsArb, weight: 4 },
  ),
  run: (bytes) => decodeSafetensors(bytes, 'fuzz.safetensors'),
  validate(result) {
    const { tensors, metadata } = result as ReturnType<typeof decodeSafetensors>;
    for (const o of [tensors, metadata]) if (Object.getPrototypeOf(o) !== Object.prototype) return 'a result object with another prototype';
    for (const [name, t] of Object.entries(tensors)) {
      if (forbidden.has(name) || Object.hasOwn(Object.prototype, name)) return `the tensor name ${JSON.stringify(name)} got through`;
      if (t.data.length !== sizeOf(t.shape)) return `tensor ${name}: ${t.data.length} values for shape [${t.shape.join(', ')}]`;
    }
    return Object.values(metadata).every((v) => typeof v === 'string') ? null : 'a non-string metadata value got through';
  },
  where: /fuzz\.safetensors/,
  size: (bytes) => bytes.length,
};

/** The decoders, in report order. */
export const fuzzTargets: readonly FuzzTarget<any>[] = [wireMessage, wireValue, modelSpec, csv, csvInputs, idx, safetensors];
