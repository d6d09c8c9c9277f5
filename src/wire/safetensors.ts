/**
 * The safetensors format (huggingface/safetensors), written and read by our own code:
 *
 *   8 bytes   N, the header's length: a little-endian u64
 *   N bytes   a UTF-8 JSON object: each tensor's name → {dtype, shape, data_offsets: [begin, end]},
 *             offsets relative to the data buffer; an optional `__metadata__` of string values;
 *             padded with spaces so that the data buffer starts 8-byte aligned
 *   the rest  the data buffer: each tensor's raw little-endian bytes, row-major
 *
 * The offsets tile the data buffer exactly: no holes, no overlaps, nothing after the last.
 * Decoding treats the bytes as hostile: the header length is capped before anything is
 * parsed, and every field is checked before a byte of data is looked at.
 */
import { ChainruleError } from '../errors.js';
import { Tensor, fmtShape, type Shape } from '../tensor/tensor.js';

/** Headers above this are refused before parsing (the reference implementation's cap too). */
export const MAX_SAFETENSORS_HEADER_BYTES = 100_000_000;

/** An integer tensor: our Tensor holds floats only, so I32 entries decode to this. */
export interface Int32Tensor {
  readonly dtype: 'int32';
  readonly shape: Shape;
  readonly data: Int32Array;
}

/** What a safetensors file holds, in our types: F32 and F64 as Tensor, I32 as Int32Tensor. */
export type StoredTensor = Tensor | Int32Tensor;

export type SafetensorsDType = 'F32' | 'F64' | 'I32';

/** @example const steps = int32Tensor(Int32Array.from([1, 2, 3, 4]), [2, 2]); */
export function int32Tensor(data: Int32Array, shape: Shape = [data.length]): Int32Tensor {
  const t: Int32Tensor = { dtype: 'int32', shape: Object.freeze([...shape]), data };
  checkStored(t, 'int32Tensor');
  return t;
}

/** A malformed safetensors file or an unencodable tensor: the message names the file, the tensor and the field. */
export class SafetensorsError extends ChainruleError {
  constructor(message: string, hint?: string) {
    super('BAD_SAFETENSORS', message, { hint });
  }
}

const DTYPES: Record<SafetensorsDType, { ours: StoredTensor['dtype']; size: number }> = {
  F64: { ours: 'float64', size: 8 },
  F32: { ours: 'float32', size: 4 },
  I32: { ours: 'int32', size: 4 },
};
const FROM_OURS: Record<StoredTensor['dtype'], SafetensorsDType> = { float64: 'F64', float32: 'F32', int32: 'I32' };
const OTHER_DTYPES = ['BOOL', 'U8', 'I8', 'F8_E5M2', 'F8_E4M3', 'I16', 'U16', 'F16', 'BF16', 'U32', 'I64', 'U64'];
const METADATA_KEY = '__metadata__';
const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * True for names that would reach Object.prototype when used as a key (`__proto__`,
 * `constructor`, `toString`, ...): a file may not use them as tensor or metadata names.
 */
function isPrototypeName(name: string): boolean {
  return Object.prototype.hasOwnProperty.call(Object.prototype, name);
}

function checkName(name: string, what: string, where: string): void {
  if (name.length === 0) throw new SafetensorsError(`${where}: ${what} names must not be empty`);
  if (isPrototypeName(name)) {
    throw new SafetensorsError(`${where}: ${what} name ${JSON.stringify(name)} is reserved (an Object.prototype property)`, 'rename it; such names are refused to keep prototype pollution out');
  }
}

function checkStored(t: StoredTensor, where: string): void {
  const isTensor = t instanceof Tensor;
  if (!isTensor) {
    const v = t as Partial<Int32Tensor> | null;
    if (v === null || typeof v !== 'object' || v.dtype !== 'int32' || !(v.data instanceof Int32Array) || !Array.isArray(v.shape)) {
      throw new SafetensorsError(`${where}: must be a Tensor (float32 or float64) or an Int32Tensor, got ${describe(t)}`);
    }
    let n = 1;
    for (const d of v.shape) {
      if (!Number.isSafeInteger(d) || d < 0) throw new SafetensorsError(`${where}: shape ${JSON.stringify(v.shape)} must hold non-negative integers`);
      n *= d;
    }
    if (n !== v.data.length) throw new SafetensorsError(`${where}: shape ${fmtShape(v.shape)} holds ${n} elements, the data ${v.data.length}`);
  }
}

function describe(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? String(v);
  return (v as object).constructor?.name ?? 'an object';
}

function bytesOf(data: Float32Array | Float64Array | Int32Array): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

const byName = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/**
 * Encodes tensors (and string metadata) as a safetensors file. Tensors are laid out by
 * descending item size, then by name (as the reference implementation does), so that each
 * starts aligned to its item size; the header is padded with spaces to a multiple of 8.
 * @example writeFileSync('w.safetensors', encodeSafetensors({ '0.weight': w }, { format: 'pt' }));
 */
export function encodeSafetensors(tensors: Record<string, StoredTensor>, metadata?: Record<string, string>): Uint8Array {
  const where = 'encodeSafetensors';
  if (!littleEndian) throw new SafetensorsError(`${where}: big-endian hosts are not supported: safetensors data is little-endian`);
  if (tensors === null || typeof tensors !== 'object') throw new SafetensorsError(`${where}: tensors must be an object of name → tensor, got ${describe(tensors)}`);
  const entries = Object.entries(tensors);
  for (const [name, t] of entries) {
    if (name === METADATA_KEY) throw new SafetensorsError(`${where}: a tensor cannot be named ${METADATA_KEY} (the key of the metadata)`);
    checkName(name, 'tensor', where);
    checkStored(t, `${where}: tensor ${JSON.stringify(name)}`);
  }
  const meta: [string, string][] = [];
  if (metadata !== undefined) {
    if (metadata === null || typeof metadata !== 'object' || Array.isArray(metadata)) {
      throw new SafetensorsError(`${where}: metadata must be an object of string values, got ${describe(metadata)}`);
    }
    for (const [k, v] of Object.entries(metadata)) {
      checkName(k, 'metadata', where);
      if (typeof v !== 'string') throw new SafetensorsError(`${where}: metadata ${JSON.stringify(k)} must be a string, got ${describe(v)}`, 'safetensors metadata holds strings only: JSON.stringify other values');
      meta.push([k, v]);
    }
  }

  const size = (t: StoredTensor): number => DTYPES[FROM_OURS[t.dtype]].size;
  entries.sort(([an, a], [bn, b]) => size(b) - size(a) || byName(an, bn));
  const parts: string[] = [];
  if (meta.length > 0) parts.push(`${JSON.stringify(METADATA_KEY)}:{${meta.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',')}}`);
  let offset = 0;
  for (const [name, t] of entries) {
    const end = offset + t.data.byteLength;
    parts.push(`${JSON.stringify(name)}:${JSON.stringify({ dtype: FROM_OURS[t.dtype], shape: [...t.shape], data_offsets: [offset, end] })}`);
    offset = end;
  }
  let header = new TextEncoder().encode(`{${parts.join(',')}}`);
  const pad = (8 - (header.length % 8)) % 8;
  if (pad > 0) {
    const padded = new Uint8Array(header.length + pad).fill(0x20);
    padded.set(header);
    header = padded;
  }
  if (header.length > MAX_SAFETENSORS_HEADER_BYTES) {
    throw new SafetensorsError(`${where}: the header would be ${header.length} bytes, over the cap of ${MAX_SAFETENSORS_HEADER_BYTES} readers accept`);
  }

  const out = new Uint8Array(8 + header.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(header.length), true);
  out.set(header, 8);
  let at = 8 + header.length;
  for (const [, t] of entries) {
    out.set(bytesOf(t.data), at);
    at += t.data.byteLength;
  }
  return out;
}

/**
 * Finds a key that occurs twice in the header object or in one of its entries (JSON.parse
 * keeps the last silently). The text must already be valid JSON. Iterative, so hostile
 * nesting cannot overflow the stack; objects nested deeper fail validation anyway.
 * Returns the key and the top-level key it sits under ('' for a top-level key).
 */
function duplicateKey(text: string): { key: string; parent: string } | null {
  interface Frame { keys: Set<string> | null; expectKey: boolean }
  const stack: Frame[] = [];
  let topKey = '';
  let i = 0;
  while (i < text.length) {
    const c = text.charCodeAt(i);
    const top = stack[stack.length - 1];
    if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      // Keys are tracked in the header (depth 1) and in its entries (depth 2).
      const tracked = c === 0x7b && stack.length < 2;
      stack.push({ keys: tracked ? new Set() : null, expectKey: tracked });
      i++;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop();
      i++;
    } else if (c === 0x2c /* , */) {
      if (top?.keys) top.expectKey = true;
      i++;
    } else if (c === 0x3a /* : */) {
      if (top) top.expectKey = false;
      i++;
    } else if (c === 0x22 /* " */) {
      let j = i + 1;
      while (j < text.length && text.charCodeAt(j) !== 0x22) j += text.charCodeAt(j) === 0x5c /* \ */ ? 2 : 1;
      if (top?.keys && top.expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (top.keys.has(key)) return { key, parent: stack.length === 1 ? '' : topKey };
        top.keys.add(key);
        if (stack.length === 1) topKey = key;
      }
      i = j + 1;
    } else {
      i++; // whitespace, digits, true/false/null
    }
  }
  return null;
}

interface Entry { name: string; dtype: SafetensorsDType; shape: number[]; begin: number; end: number }

/**
 * Decodes a safetensors file, validating all of it; throws a SafetensorsError naming
 * `where` (the file), the tensor and the field. F32/F64 tensors come back as Tensor, I32 as
 * Int32Tensor. NOTE: tensors are views into `bytes` where their offset is aligned to their
 * item size (no copy), and copies where it is not.
 * @example const { tensors, metadata } = decodeSafetensors(readFileSync(path), path);
 */
export function decodeSafetensors(bytes: Uint8Array, where = 'safetensors'): { tensors: Record<string, StoredTensor>; metadata: Record<string, string> } {
  if (!(bytes instanceof Uint8Array)) throw new SafetensorsError(`${where}: expected bytes (a Uint8Array), got ${describe(bytes)}`);
  if (!littleEndian) throw new SafetensorsError(`${where}: big-endian hosts are not supported: safetensors data is little-endian`);
  const notSafetensors = 'is it a .safetensors file, complete (not truncated by a failed download or a full disk)?';
  if (bytes.length < 8) throw new SafetensorsError(`${where}: ${bytes.length} bytes is too short for a safetensors file (the header length alone takes 8)`, notSafetensors);
  const n64 = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (n64 > BigInt(MAX_SAFETENSORS_HEADER_BYTES)) {
    throw new SafetensorsError(`${where}: header length ${n64} exceeds the cap of ${MAX_SAFETENSORS_HEADER_BYTES} bytes`, notSafetensors);
  }
  const n = Number(n64);
  if (n > bytes.length - 8) throw new SafetensorsError(`${where}: header length ${n} runs past the end of the file (${bytes.length - 8} bytes follow the length)`, notSafetensors);
  if (n < 2) throw new SafetensorsError(`${where}: header length ${n} is too short for a JSON object`, notSafetensors);

  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes.subarray(8, 8 + n));
  } catch {
    throw new SafetensorsError(`${where}: the header is not valid UTF-8`, notSafetensors);
  }
  if (!text.startsWith('{')) throw new SafetensorsError(`${where}: the header must be a JSON object starting with '{', found ${JSON.stringify(text.slice(0, 16))}`, notSafetensors);
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    throw new SafetensorsError(`${where}: the header is not valid JSON (${(e as Error).message})`, notSafetensors);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) {
    throw new SafetensorsError(`${where}: the header must be a JSON object`, notSafetensors);
  }
  const dup = duplicateKey(text);
  if (dup) {
    const what = dup.parent === '' ? `tensor name ${JSON.stringify(dup.key)} occurs twice`
      : dup.parent === METADATA_KEY ? `metadata key ${JSON.stringify(dup.key)} occurs twice`
        : `tensor ${JSON.stringify(dup.parent)}: field ${JSON.stringify(dup.key)} occurs twice`;
    throw new SafetensorsError(`${where}: ${what} in the header`);
  }

  const metadata: Record<string, string> = {};
  const entries: Entry[] = [];
  const dataStart = 8 + n;
  const dataLength = bytes.length - dataStart;
  for (const [name, info] of Object.entries(header as Record<string, unknown>)) {
    if (name === METADATA_KEY) {
      if (info === null || typeof info !== 'object' || Array.isArray(info)) {
        throw new SafetensorsError(`${where}: ${METADATA_KEY} must be an object of string values, got ${describe(info)}`);
      }
      for (const [k, v] of Object.entries(info as Record<string, unknown>)) {
        checkName(k, 'metadata', where);
        if (typeof v !== 'string') throw new SafetensorsError(`${where}: ${METADATA_KEY} ${JSON.stringify(k)} must be a string, got ${describe(v)}`);
        metadata[k] = v;
      }
      continue;
    }
    checkName(name, 'tensor', where);
    entries.push(parseEntry(name, info, dataLength, `${where}: tensor ${JSON.stringify(name)}`));
  }

  // The offsets must tile [0, dataLength): sorted by begin, each starts where the previous ended.
  const order = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  let previous: Entry | null = null;
  for (const e of order) {
    if (e.begin < cursor) {
      throw new SafetensorsError(`${where}: tensor ${JSON.stringify(e.name)}: field 'data_offsets' [${e.begin}, ${e.end}] overlaps tensor ${JSON.stringify(previous!.name)} [${previous!.begin}, ${previous!.end}]`);
    }
    if (e.begin > cursor) {
      throw new SafetensorsError(`${where}: tensor ${JSON.stringify(e.name)}: field 'data_offsets' [${e.begin}, ${e.end}] leaves a hole: bytes [${cursor}, ${e.begin}) of the data buffer belong to no tensor`);
    }
    cursor = e.end;
    previous = e;
  }
  if (cursor !== dataLength) {
    throw new SafetensorsError(`${where}: the tensors' data_offsets end at byte ${cursor} of the data buffer, but it holds ${dataLength} bytes: bytes [${cursor}, ${dataLength}) belong to no tensor`, notSafetensors);
  }

  const tensors: Record<string, StoredTensor> = {};
  for (const e of order) tensors[e.name] = view(bytes, dataStart, e);
  return { tensors, metadata };
}

function parseEntry(name: string, info: unknown, dataLength: number, where: string): Entry {
  if (info === null || typeof info !== 'object' || Array.isArray(info)) {
    throw new SafetensorsError(`${where}: must be an object with dtype, shape and data_offsets, got ${describe(info)}`);
  }
  const o = info as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (k !== 'dtype' && k !== 'shape' && k !== 'data_offsets') throw new SafetensorsError(`${where}: unknown field ${JSON.stringify(k)} (the fields are dtype, shape, data_offsets)`);
  }
  const { dtype, shape, data_offsets: offsets } = o;
  if (typeof dtype !== 'string' || !Object.prototype.hasOwnProperty.call(DTYPES, dtype)) {
    const known = typeof dtype === 'string' && OTHER_DTYPES.includes(dtype);
    throw new SafetensorsError(`${where}: field 'dtype': ${describe(dtype)} is ${known ? 'not supported' : 'not a safetensors dtype'}; supported dtypes are ${Object.keys(DTYPES).join(', ')}`,
      known ? 'convert the tensor to float32 before saving it' : undefined);
  }
  if (!Array.isArray(shape)) throw new SafetensorsError(`${where}: field 'shape' must be an array of non-negative integers, got ${describe(shape)}`);
  let count = 1;
  let zero = false;
  for (const [i, d] of shape.entries()) {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
      throw new SafetensorsError(`${where}: field 'shape'[${i}] must be a non-negative integer, got ${describe(d)}`);
    }
    if (d === 0) zero = true;
    else if (!zero) {
      count *= d;
      if (count > Number.MAX_SAFE_INTEGER) throw new SafetensorsError(`${where}: field 'shape' ${JSON.stringify(shape)} holds more elements than can be counted`);
    }
  }
  if (zero) count = 0;
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((v) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0)) {
    throw new SafetensorsError(`${where}: field 'data_offsets' must be [begin, end], two non-negative integers, got ${JSON.stringify(offsets)}`);
  }
  const [begin, end] = offsets as [number, number];
  if (end < begin) throw new SafetensorsError(`${where}: field 'data_offsets' [${begin}, ${end}] ends before it begins`);
  if (end > dataLength) {
    throw new SafetensorsError(`${where}: field 'data_offsets' [${begin}, ${end}] is out of range: the data buffer holds ${dataLength} bytes`, 'the file may be truncated');
  }
  const size = DTYPES[dtype as SafetensorsDType].size;
  if (end - begin !== count * size) {
    throw new SafetensorsError(`${where}: field 'data_offsets' [${begin}, ${end}] spans ${end - begin} bytes, but shape ${fmtShape(shape as number[])} of ${dtype} needs ${count} × ${size} = ${count * size}`);
  }
  return { name, dtype: dtype as SafetensorsDType, shape: shape as number[], begin, end };
}

function view(bytes: Uint8Array, dataStart: number, e: Entry): StoredTensor {
  const { size, ours } = DTYPES[e.dtype];
  const count = (e.end - e.begin) / size;
  let buffer = bytes.buffer;
  let at = bytes.byteOffset + dataStart + e.begin;
  if (at % size !== 0) {
    // A typed array must start at a multiple of its item size: copy into a fresh buffer.
    // (new Uint8Array(view) copies; Buffer#slice would not.)
    const copy = new Uint8Array(bytes.subarray(dataStart + e.begin, dataStart + e.end));
    buffer = copy.buffer;
    at = 0;
  }
  if (ours === 'int32') return { dtype: 'int32', shape: Object.freeze([...e.shape]), data: new Int32Array(buffer, at, count) };
  const data = ours === 'float64' ? new Float64Array(buffer, at, count) : new Float32Array(buffer, at, count);
  return new Tensor(data, e.shape);
}
