/**
 * Bytes ⇄ messages. Tensors travel as dtype, shape and raw little-endian bytes inside
 * msgpackr; decoding validates everything that came from outside before anyone uses it:
 * the message type and header fields, each tensor's dtype (allow-list), its shape (safe
 * non-negative integers whose product matches the byte length), a size cap, and finite
 * values for activations and gradients.
 */
import { ChainruleError, describeValue, lookup } from '../errors.js';
import { Packr } from 'msgpackr';
import { Tensor, sizeOf } from '../tensor/tensor.js';
import { allFinite, firstNonFinite } from '../tensor/finite.js';
import { peerTypes, requestTypes, type Message } from './messages.js';

/** The largest message a transport accepts (also the gRPC receive cap). */
export const MAX_MESSAGE_BYTES = 256 * 1024 * 1024;
/** The largest tensor, in elements. */
export const MAX_TENSOR_ELEMENTS = 32 * 1024 * 1024;

export class WireError extends ChainruleError {
  constructor(message: string) {
    super('BAD_MESSAGE', message);
  }
}

const TENSOR_TAG = '$tensor';
const dtypes = { float32: 4, float64: 8, int32: 4 } as const;
type WireDType = keyof typeof dtypes;

/** A tensor on the wire: its bytes inside the msgpack value, or (`at`) at that offset of the section that follows it (encodeSplit). */
interface WireTensor { [TENSOR_TAG]: WireDType; shape: number[]; bytes?: Uint8Array; at?: number }

// NOTE: msgpackr decodes permissively (records, Dates, RegExps...): plain maps and
// arrays only, and every value is checked below.
const packr = new Packr({ useRecords: false, moreTypes: false, int64AsType: 'number', mapsAsObjects: true });

const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** The wire form of a value: its tensors as WireTensors (`tensor` may replace each, e.g. with a copy). */
function toWire(v: unknown, tensor: (w: WireTensor) => WireTensor = (w) => w): unknown {
  if (v instanceof Tensor) return tensor(tensorToWire(v.dtype, v.shape, v.data));
  if (v instanceof Int32Array) return tensor(tensorToWire('int32', [v.length], v));
  if (Array.isArray(v)) return v.map((x) => toWire(x, tensor));
  if (v !== null && typeof v === 'object' && !(v instanceof Uint8Array)) {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) if (x !== undefined) out[k] = toWire(x, tensor);
    return out;
  }
  return v;
}

function tensorToWire(dtype: WireDType, shape: readonly number[], data: ArrayBufferView): WireTensor {
  if (!littleEndian) throw new WireError('big-endian hosts are not supported: tensors travel little-endian');
  return { [TENSOR_TAG]: dtype, shape: [...shape], bytes: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

/** Encodes a message into a fresh buffer of its own (msgpackr reuses its internal one). */
export function encodeMessage(msg: Message): Uint8Array {
  return new Uint8Array(packr.pack(toWire(msg)));
}

/** Encodes any plain value holding tensors (a checkpoint, say) the way messages are encoded. */
export function encodeValue(v: unknown): Uint8Array {
  return new Uint8Array(packr.pack(toWire(v)));
}

/**
 * Context for errors: which actor decoded which message. `section`: the bytes that travel
 * after a split message's body, where its large tensors are (encodeSplit).
 */
export interface DecodeContext { actor: string; requireFinite?: boolean; section?: Uint8Array }

/** Tensors from this size on travel outside a split message's body. */
export const SPLIT_MIN_BYTES = 64 * 1024;

/** A message as encodeSplit lays it out: a small msgpack body, then `sectionBytes` bytes holding `parts` at `offsets`. */
export interface SplitMessage {
  body: Uint8Array;
  /** Views of the sender's tensors (not copies): copy them before the sender may change them. */
  parts: Uint8Array[];
  offsets: number[];
  sectionBytes: number;
}

/**
 * Encodes a message for the network without copying its large tensors into MessagePack:
 * each tensor of at least `minBytes` is named in the body by the offset of its bytes in a
 * section that travels after the body, at `base` plus a multiple of 8 (so a receiver whose
 * section starts `base` bytes before an 8-aligned address reads every tensor in place). The
 * caller writes body and section into one buffer: each tensor is copied once, there.
 * {@link decodeMessage} with `ctx.section` decodes it.
 */
export function encodeSplit(msg: Message, base = 0, minBytes = SPLIT_MIN_BYTES): SplitMessage {
  const parts: Uint8Array[] = [];
  const offsets: number[] = [];
  let end = base;
  const out = (w: WireTensor): WireTensor => {
    if (w.bytes!.byteLength < minBytes) return w;
    const at = end;
    parts.push(w.bytes!);
    offsets.push(at);
    end = at + Math.ceil(w.bytes!.byteLength / 8) * 8;
    return { [TENSOR_TAG]: w[TENSOR_TAG], shape: w.shape, at };
  };
  const body = new Uint8Array(packr.pack(toWire(msg, out)));
  return { body, parts, offsets, sectionBytes: parts.length > 0 ? end : 0 };
}

// Keys that would reach an object's prototype machinery; msgpackr already renames `__proto__`
// to `__proto_`, which no message of ours uses either.
const forbiddenKeys = new Set(['__proto__', '__proto_', 'constructor', 'prototype']);

/**
 * Validates and rebuilds what msgpackr decoded. `seen` holds every map and array met so far:
 * our encoder never shares one, and msgpackr's reference extension would otherwise let a
 * few hundred bytes name a DAG whose tree is billions of nodes (or a cycle).
 */
function fromWire(v: unknown, path: string, ctx: DecodeContext, depth: number, seen: Set<object>): unknown {
  if (depth > 16) throw new WireError(`${ctx.actor}: message nests deeper than 16 levels at ${path}`);
  if (typeof v === 'bigint') throw new WireError(`${ctx.actor}: unexpected bigint ${describeValue(v)} at ${path || 'the top level'}`);
  if (v instanceof Uint8Array) return v;
  if (v === null || typeof v !== 'object') return v;
  if (seen.has(v)) throw new WireError(`${ctx.actor}: a map or array is referenced twice (shared or cyclic) at ${path || 'the top level'}`);
  seen.add(v);
  if (Array.isArray(v)) return v.map((x, i) => fromWire(x, `${path}[${i}]`, ctx, depth + 1, seen));
  if (Object.getPrototypeOf(v) !== Object.prototype) {
    throw new WireError(`${ctx.actor}: unexpected ${Object.prototype.toString.call(v).slice(8, -1)} at ${path || 'the top level'}`);
  }
  if (Object.hasOwn(v, TENSOR_TAG)) return decodeTensor(v as WireTensor, path, ctx);
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) {
    const at = path ? `${path}.${k}` : k;
    if (forbiddenKeys.has(k)) throw new WireError(`${ctx.actor}: forbidden key ${JSON.stringify(k)} at ${at}`);
    out[k] = fromWire(x, at, ctx, depth + 1, seen);
  }
  return out;
}

function decodeTensor(w: WireTensor, path: string, ctx: DecodeContext): Tensor | Int32Array {
  const where = `${ctx.actor}: field '${path}'`;
  const dtype = w[TENSOR_TAG];
  const width = lookup(dtypes, dtype);
  if (width === undefined) throw new WireError(`${where}: dtype ${describeValue(dtype)} is not one of ${Object.keys(dtypes).join(', ')}`);
  const { shape, bytes } = w;
  if (!Array.isArray(shape) || shape.length > 8 || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new WireError(`${where}: shape ${describeValue(shape)} must be at most 8 non-negative safe integers`);
  }
  // Checked before anything is allocated: the product is exact up to the cap, Infinity beyond.
  const n = sizeOf(shape);
  if (n > MAX_TENSOR_ELEMENTS) throw new WireError(`${where}: ${n} elements exceed the cap of ${MAX_TENSOR_ELEMENTS}`);
  if (w.at !== undefined) {
    // In the section after the body (encodeSplit): a view of it, bounds checked.
    const section = ctx.section;
    if (bytes !== undefined) throw new WireError(`${where}: a tensor has bytes and a section offset`);
    if (!section) throw new WireError(`${where}: the tensor is at offset ${describeValue(w.at)} of a section the message does not have`);
    if (!Number.isSafeInteger(w.at) || w.at < 0 || w.at + n * width > section.byteLength) {
      throw new WireError(`${where}: ${n * width} bytes at offset ${describeValue(w.at)} do not fit the section's ${section.byteLength}`);
    }
    return decodeTensor({ [TENSOR_TAG]: dtype, shape, bytes: section.subarray(w.at, w.at + n * width) }, path, { ...ctx, section: undefined });
  }
  if (!(bytes instanceof Uint8Array)) throw new WireError(`${where}: tensor bytes are missing`);
  if (bytes.byteLength !== n * width) {
    throw new WireError(`${where}: shape [${shape.join(', ')}] needs ${n * width} bytes of ${dtype}, got ${bytes.byteLength}`);
  }
  // A view when aligned (no copy); otherwise one copy into an aligned buffer.
  const aligned = bytes.byteOffset % width === 0 ? bytes : new Uint8Array(bytes); // (Buffer.slice would be a view)
  const buf = aligned.buffer;
  const off = aligned.byteOffset;
  if (dtype === 'int32') return new Int32Array(buf, off, n);
  const data = dtype === 'float64' ? new Float64Array(buf, off, n) : new Float32Array(buf, off, n);
  // One vectorized pass (native) says whether all are finite; only then is the first bad one sought.
  if (ctx.requireFinite && !allFinite(data)) {
    const i = firstNonFinite(data);
    throw new WireError(`${where}: value ${data[i]} at index ${i} is not finite`);
  }
  return new Tensor(data, shape);
}

/** The one MessagePack value `bytes` must hold, exactly. */
function unpackOne(bytes: Uint8Array, what: string, ctx: DecodeContext): unknown {
  let value: unknown;
  let end = 0;
  try {
    // NOTE: not packr.unpack: on trailing bytes it JSON-stringifies the whole decoded value for its
    // message, seconds for a large tensor and forever for a few hundred bytes of shared references.
    packr.unpackMultiple(bytes, (v: unknown, _start?: number, e?: number) => {
      value = v;
      end = e ?? bytes.byteLength;
      return false;
    });
  } catch (e) {
    throw new WireError(`${ctx.actor}: malformed ${what} (${e instanceof Error ? e.message : describeValue(e, 80)})`);
  }
  const extra = bytes.byteLength - end;
  if (extra !== 0) throw new WireError(`${ctx.actor}: malformed ${what} (${extra} byte${extra === 1 ? '' : 's'} after its end)`);
  return value;
}

const knownTypes = new Set<string>([...requestTypes, ...peerTypes, 'ok', 'configured', 'stepDone', 'stepsDone', 'activations', 'inputGradient', 'tensors', 'value', 'state', 'error']);

/**
 * Decodes and validates a message. Throws a WireError naming the actor and the field;
 * callers answer it with an error reply and keep serving.
 */
export function decodeMessage(bytes: Uint8Array, ctx: DecodeContext): Message {
  if (!(bytes instanceof Uint8Array)) throw new WireError(`${ctx.actor}: a message must be bytes`);
  const total = bytes.byteLength + (ctx.section?.byteLength ?? 0);
  if (total > MAX_MESSAGE_BYTES) throw new WireError(`${ctx.actor}: message of ${total} bytes exceeds the cap of ${MAX_MESSAGE_BYTES}`);
  return checkMessage(unpackOne(bytes, 'message', ctx), ctx);
}

/** The validation of a decoded value, wherever it came from (msgpack bytes, a MessagePort). */
function checkMessage(raw: unknown, ctx: DecodeContext): Message {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new WireError(`${ctx.actor}: a message must be a map, got ${typeof raw}`);
  const type = (raw as { type?: unknown }).type;
  if (typeof type !== 'string' || !knownTypes.has(type)) throw new WireError(`${ctx.actor}: unknown message type ${describeValue(type)}`);
  const finite = type === 'activation' || type === 'gradient' || type === 'reduce' || type === 'forward' || type === 'backward' || type === 'runStep' || type === 'runSteps';
  const msg = fromWire(raw, '', { ...ctx, requireFinite: ctx.requireFinite ?? finite }, 0, new Set()) as Message;
  validateHeader(msg, ctx.actor);
  return msg;
}

/**
 * A message for a MessagePort between threads of this process, as a structured-clone value:
 * the wire form without MessagePack (which would copy every tensor twice on the way in and
 * once more, to align it, on the way out). Each tensor's bytes are copied once into a buffer
 * of their own, listed in `transfer` so that posting moves rather than copies them (the
 * sender's tensors stay its own). {@link decodeFromPort} validates it as decodeMessage does.
 * @example const { value, transfer } = encodeForPort(msg); port.postMessage(value, transfer);
 */
export function encodeForPort(msg: Message): { value: unknown; transfer: ArrayBuffer[] } {
  const transfer: ArrayBuffer[] = [];
  const own = (w: WireTensor): WireTensor => {
    const bytes = new Uint8Array(w.bytes!.byteLength);
    bytes.set(w.bytes!);
    transfer.push(bytes.buffer);
    return { ...w, bytes };
  };
  return { value: toWire(msg, own), transfer };
}

/** Validates and rebuilds what {@link encodeForPort} produced, after the port delivered it. */
export function decodeFromPort(value: unknown, ctx: DecodeContext): Message {
  return checkMessage(value, ctx);
}

/** Decodes what encodeValue wrote, validating every tensor in it (no header checks). */
export function decodeValue(bytes: Uint8Array, ctx: DecodeContext): unknown {
  if (!(bytes instanceof Uint8Array)) throw new WireError(`${ctx.actor}: data to decode must be bytes, got ${describeValue(bytes)}`);
  if (bytes.byteLength > MAX_MESSAGE_BYTES * 4) throw new WireError(`${ctx.actor}: ${bytes.byteLength} bytes exceed the cap of ${MAX_MESSAGE_BYTES * 4}`);
  const raw = unpackOne(bytes, 'data', ctx);
  return fromWire(raw, '', ctx, 0, new Set());
}

/** Checks the header fields every request and peer message carries. */
export function validateHeader(msg: Message, actor: string): void {
  if (!(requestTypes as readonly string[]).includes(msg.type) && !(peerTypes as readonly string[]).includes(msg.type)) return;
  const m = msg as unknown as Record<string, unknown>;
  const where = `${actor}: ${msg.type} message`;
  if (typeof m.run !== 'string' || m.run.length > 200) throw new WireError(`${where}: field 'run' must be a string of at most 200 characters, got ${describeValue(m.run, 40)}`);
  for (const f of ['stage', 'step'] as const) {
    if (!Number.isSafeInteger(m[f]) || (m[f] as number) < 0) throw new WireError(`${where}: field '${f}' must be a non-negative integer, got ${describeValue(m[f])}`);
  }
  if (m.replica !== undefined && (!Number.isSafeInteger(m.replica) || (m.replica as number) < 0)) {
    throw new WireError(`${where}: field 'replica' must be a non-negative integer, got ${describeValue(m.replica)}`);
  }
  if (!Number.isSafeInteger(m.microBatch) || (m.microBatch as number) < -1) {
    throw new WireError(`${where}: field 'microBatch' must be an integer >= -1, got ${describeValue(m.microBatch)}`);
  }
}
