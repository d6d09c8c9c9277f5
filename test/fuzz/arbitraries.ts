/**
 * Generators of hostile input for the decoders: random bytes, mutated valid encodings, and
 * values that are well-formed MessagePack but wrong in every way a peer could make them wrong.
 */
import fc from 'fast-check';
import { Packr } from 'msgpackr';

/** Property names that reach the prototype machinery, and names a decoder might special-case. */
export const prototypeNames = ['__proto__', 'constructor', 'prototype', 'toString', 'valueOf', 'hasOwnProperty', '__defineGetter__'] as const;

/** Keys: ordinary, ours (`$tensor`, `type`), prototype names, odd strings. */
export const keyArb: fc.Arbitrary<string> = fc.oneof(
  { arbitrary: fc.constantFrom('x', 'dx', 'dy', 'params', 'state', 'shape', 'bytes', '$tensor', 'type', 'run', 'stage', 'step', 'microBatch', '0.weight'), weight: 4 },
  { arbitrary: fc.constantFrom(...prototypeNames, '__proto_'), weight: 2 },
  { arbitrary: fc.string({ maxLength: 12 }), weight: 2 },
);

/**
 * Applies a few random edits (flip, insert, delete, truncate, duplicate) to bytes, the way a
 * corrupted or hand-crafted message differs from a valid one.
 */
export function mutated(base: fc.Arbitrary<Uint8Array>): fc.Arbitrary<Uint8Array> {
  const edit = fc.record({ op: fc.integer({ min: 0, max: 4 }), at: fc.nat(), len: fc.integer({ min: 1, max: 16 }), byte: fc.integer({ min: 0, max: 255 }) });
  return fc.tuple(base, fc.array(edit, { minLength: 1, maxLength: 4 })).map(([bytes, edits]) => {
    let b: Uint8Array = Uint8Array.from(bytes);
    for (const { op, at, len, byte } of edits) {
      const i = b.length === 0 ? 0 : at % b.length;
      if (op === 0 && b.length > 0) b[i] = byte;
      else if (op === 1) b = concat(b.subarray(0, i), Uint8Array.of(byte), b.subarray(i));
      else if (op === 2) b = concat(b.subarray(0, i), b.subarray(i + len));
      else if (op === 3) b = b.slice(0, i);
      else b = concat(b.subarray(0, i + len), b.subarray(i));
    }
    return b;
  });
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Raw MessagePack built by hand: depth bombs and headers that claim far more than follows. */
export const rawMsgpackArb: fc.Arbitrary<Uint8Array> = fc.oneof(
  // Nested arrays or maps, 17 to 200,000 deep: our limit is 16, msgpackr's own is the stack.
  fc.tuple(fc.integer({ min: 17, max: 200_000 }), fc.boolean()).map(([depth, maps]) => {
    const unit = maps ? [0x81, 0xa1, 0x61] : [0x91];
    const b = new Uint8Array(depth * unit.length + 1);
    for (let i = 0; i < depth; i++) b.set(unit, i * unit.length);
    b[b.length - 1] = 0x01;
    return b;
  }),
  // array16/32, map16/32, bin8/16/32, str8/16/32, ext8/16/32 with the largest length, then a few bytes.
  fc.tuple(fc.constantFrom(0xdc, 0xdd, 0xde, 0xdf, 0xc4, 0xc5, 0xc6, 0xd9, 0xda, 0xdb, 0xc7, 0xc8, 0xc9), fc.uint8Array({ maxLength: 12 })).map(([code, tail]) => {
    const width = [0xdc, 0xde, 0xc5, 0xda, 0xc8].includes(code) ? 2 : [0xdd, 0xdf, 0xc6, 0xdb, 0xc9].includes(code) ? 4 : 1;
    return concat(Uint8Array.of(code), new Uint8Array(width).fill(0xff), tail);
  }),
  // Extension values of any type with any payload (timestamps, records, typed arrays, pointers...).
  fc.tuple(fc.constantFrom(0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xc7), fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 40 })).map(([code, type, payload]) => {
    const sizes: Record<number, number> = { 0xd4: 1, 0xd5: 2, 0xd6: 4, 0xd7: 8, 0xd8: 16 };
    const n = sizes[code];
    const body = n === undefined ? payload : concat(payload, new Uint8Array(16)).subarray(0, n);
    return concat(n === undefined ? Uint8Array.of(code, body.length, type) : Uint8Array.of(code, type), body);
  }),
);

const dtypeArb = fc.oneof(
  { arbitrary: fc.constantFrom('float32', 'float64', 'int32'), weight: 6 },
  { arbitrary: fc.constantFrom<unknown>('int8', 'float16', 'toString', '__proto__', 'constructor', 'hasOwnProperty', '', 4, null, true, 2n ** 70n, ['float32'], { float32: 1 }), weight: 3 },
);

const dimArb: fc.Arbitrary<unknown> = fc.oneof(
  { arbitrary: fc.integer({ min: 0, max: 6 }), weight: 10 },
  { arbitrary: fc.constantFrom<unknown>(-1, -0, 1e9, 2 ** 31, 2 ** 32 - 1, 2 ** 53, 2 ** 53 + 2, 1e308, NaN, Infinity, -Infinity, 0.5, '3', null, 2n ** 64n, [2]), weight: 3 },
);

/** A shape: usually a few small dims, sometimes huge, negative, non-numeric, or more than 8 of them. */
const shapeArb: fc.Arbitrary<unknown> = fc.oneof(
  { arbitrary: fc.array(dimArb, { maxLength: 4 }), weight: 8 },
  { arbitrary: fc.constantFrom<unknown>([1e9, 1e9], [2 ** 26, 2 ** 26], [65536, 65536, 65536], [0, 1e300], Array(9).fill(1), Array(1000).fill(0), 'shape', 7, null), weight: 2 },
);

function sizeOfDims(shape: unknown): number {
  if (!Array.isArray(shape)) return 0;
  let n = 1;
  for (const d of shape) n *= typeof d === 'number' ? d : 0;
  return n;
}

/** A `$tensor` map: dtype, shape and bytes that usually agree, and often do not. */
export const wireTensorArb: fc.Arbitrary<unknown> = fc.tuple(dtypeArb, shapeArb, fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 64 }), fc.integer({ min: 0, max: 255 }))
  .map(([dtype, shape, agree, extra, fill]) => {
    const width = dtype === 'float64' ? 8 : 4;
    const n = sizeOfDims(shape);
    // NOTE: byte lengths come from the shape only when that is small: the decoder must refuse huge claims by itself.
    const len = agree > 0 && Number.isSafeInteger(n) && n >= 0 && n * width <= 4096 ? n * width : extra;
    const bytes = new Uint8Array(len).fill(fill);
    return agree === 3 ? { $tensor: dtype, shape } : { $tensor: dtype, shape, bytes };
  });

const regexpArb = fc.string({ maxLength: 10 }).map((src) => {
  try {
    return new RegExp(src);
  } catch {
    return /(a+)+$/;
  }
});

/** Any value a hostile peer can get through msgpackr: primitives, extension types, tensors, nesting. */
export const hostileValueArb: fc.Arbitrary<unknown> = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    { arbitrary: fc.oneof(fc.integer(), fc.double(), fc.string({ maxLength: 20 }), fc.boolean(), fc.constant(null), fc.constant(undefined)), weight: 6 },
    { arbitrary: fc.bigInt({ min: -(2n ** 80n), max: 2n ** 80n }), weight: 1 },
    { arbitrary: fc.oneof(fc.date({ noInvalidDate: false }), regexpArb, fc.constant(new Error('boom')), fc.uint8Array({ maxLength: 32 }).map((b) => new Float32Array(b.buffer, 0, b.length >> 2))), weight: 1 },
    { arbitrary: fc.array(tie('value'), { maxLength: 3 }).map((xs) => new Set(xs)), weight: 1 },
    { arbitrary: fc.array(fc.tuple(fc.oneof(keyArb, fc.integer(), tie('value')), tie('value')), { maxLength: 3 }).map((kv) => new Map(kv)), weight: 1 },
    { arbitrary: fc.uint8Array({ maxLength: 64 }), weight: 2 },
    { arbitrary: wireTensorArb, weight: 4 },
    { arbitrary: fc.array(tie('value'), { maxLength: 4 }), weight: 3 },
    { arbitrary: fc.array(fc.tuple(keyArb, tie('value')), { maxLength: 4 }).map(ownObject), weight: 4 },
  ),
})).value;

/** An object with exactly these own enumerable keys, `__proto__` included (an object literal would set the prototype). */
export function ownObject(entries: readonly (readonly [string, unknown])[]): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  for (const [k, v] of entries) Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
  return o;
}

/** Shared substructure: a DAG of `depth` levels, each node referencing the level below `width` times. */
export const dagArb: fc.Arbitrary<unknown> = fc.tuple(fc.integer({ min: 2, max: 14 }), fc.integer({ min: 2, max: 12 }), fc.boolean()).map(([depth, width, maps]) => {
  let node: unknown = maps ? { x: 1 } : [1];
  for (let i = 0; i < depth; i++) {
    const below = node;
    node = maps ? ownObject(Array.from({ length: width }, (_, k) => [`k${k}`, below] as const)) : Array.from({ length: width }, () => below);
  }
  return node;
});

export const cycleArb: fc.Arbitrary<unknown> = fc.boolean().map((viaArray) => {
  if (viaArray) {
    const a: unknown[] = [1];
    a.push(a);
    return a;
  }
  const o: Record<string, unknown> = { x: 1 };
  o['self'] = o;
  return o;
});

// Encoders with every msgpackr option a peer could use: records, shared references, typed arrays, bundled strings.
const packers = [
  new Packr({ useRecords: false, mapsAsObjects: true }),
  new Packr({ useRecords: true }),
  new Packr({ structuredClone: true, moreTypes: true }),
  new Packr({ moreTypes: true, useRecords: false, variableMapSize: true }),
  new Packr({ bundleStrings: true, useRecords: false }),
  new Packr({ largeBigIntToFloat: false, useBigIntExtension: true, useRecords: false }),
];

/** Packs with one of the permissive encoders; values msgpackr itself cannot pack become random bytes. */
export function packAny(value: unknown, which: number): Uint8Array {
  try {
    return Uint8Array.from(packers[which % packers.length]!.pack(value));
  } catch {
    return Uint8Array.of(0xc1, which & 0xff);
  }
}

export const packerIndexArb = fc.integer({ min: 0, max: packers.length - 1 });
