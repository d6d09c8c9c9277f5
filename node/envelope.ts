/**
 * The Envelope of proto/chainrule.proto on the wire, written and read by hand instead of by
 * protobufjs: the same protobuf bytes, but a message's large tensors are copied once, into
 * the envelope's `tensors` field (src/wire/codec.ts encodeSplit), and read where they arrive.
 *
 * Through protobufjs and MessagePack a 10 MB gradient share was copied four times on its way
 * out (into MessagePack, out of msgpackr's shared buffer, into the protobuf envelope, into
 * grpc-js's frame) and once more on its way in (to align it), each copy a fresh 10 MB
 * allocation that also drives V8's garbage collector. Now: once into the envelope (plus
 * grpc-js's frame), and on arrival a view, aligned by padding the sender chooses: grpc-js
 * hands a message over 5 bytes into a buffer of its own (its frame header), so the sender
 * pads the tensors to start 8-aligned from there. Elsewhere the decoder copies, as before.
 *
 * @example
 * const frame = envelopeFrame({ type: 'gradient', run, stage: 1, step: 3, microBatch: 0, dx });
 * const env = deserializeEnvelope(frame);       // what the receiving node sees
 * decodeEnvelope(env, { actor: 'node a' }).type // 'gradient'
 */
import { encodeSplit, decodeMessage, type DecodeContext, type Message, WireError } from '../src/wire/index.js';

/** An Envelope as grpc-js hands it over and takes it (proto-loader's field names and defaults). */
export interface WireEnvelope {
  type: string;
  run: string;
  stage: number;
  step: number;
  microBatch: number;
  body: Uint8Array;
  id: number;
  /** The section after the body holding its large tensors (empty when there is none). */
  tensors: Uint8Array;
}

/** An envelope already laid out as its protobuf bytes (envelopeFrame). */
export interface FramedEnvelope { readonly frame: Buffer; readonly type: string; readonly stage: number; readonly id: number }

type Header = { type: string; run?: string; stage?: number; step?: number; microBatch?: number };

const enum Tag { type = 0x0a, run = 0x12, stage = 0x18, step = 0x20, microBatch = 0x28, body = 0x32, id = 0x38, tensors = 0x42 }

/** Where grpc-js puts a received message in the buffer it allocates for it (after its 5-byte frame header). */
const RECEIVED_AT = 5;

function varintLength(v: number): number {
  if (v < 0) return 10; // a negative int32 is sign-extended to 64 bits
  let n = 1;
  while (v >= 0x80) { v = Math.floor(v / 128); n++; }
  return n;
}

function writeVarint(buf: Buffer, pos: number, v: number): number {
  if (v < 0) {
    // Two's complement over 64 bits: the low 32 bits, then all ones.
    let lo = v >>> 0;
    for (let i = 0; i < 4; i++) { buf[pos++] = (lo & 0x7f) | 0x80; lo >>>= 7; }
    buf[pos++] = (lo & 0x0f) | 0x70 | 0x80;
    for (let i = 0; i < 4; i++) buf[pos++] = 0xff;
    buf[pos++] = 0x01;
    return pos;
  }
  while (v >= 0x80) { buf[pos++] = (v % 128) | 0x80; v = Math.floor(v / 128); }
  buf[pos++] = v;
  return pos;
}

/** The header fields (proto3: zero values are left out) and the body, as [tag, value] in field order. */
function headerFields(h: Header, id: number): [Tag, string | number][] {
  const out: [Tag, string | number][] = [];
  if (h.type) out.push([Tag.type, h.type]);
  if (h.run) out.push([Tag.run, h.run]);
  if (h.stage) out.push([Tag.stage, h.stage]);
  if (h.step) out.push([Tag.step, h.step]);
  const mb = h.microBatch ?? -1;
  if (mb) out.push([Tag.microBatch, mb]);
  if (id) out.push([Tag.id, id]);
  return out;
}

function fieldsLength(fields: [Tag, string | number][]): number {
  let n = 0;
  for (const [, v] of fields) n += 1 + (typeof v === 'string' ? varintLength(Buffer.byteLength(v)) + Buffer.byteLength(v) : varintLength(v));
  return n;
}

function writeFields(buf: Buffer, pos: number, fields: [Tag, string | number][]): number {
  for (const [tag, v] of fields) {
    buf[pos++] = tag;
    if (typeof v === 'string') {
      const len = Buffer.byteLength(v);
      pos = writeVarint(buf, pos, len);
      pos += buf.write(v, pos, 'utf8');
    } else {
      pos = writeVarint(buf, pos, v);
    }
  }
  return pos;
}

/**
 * The message as the protobuf bytes of an Envelope, its large tensors copied once into the
 * `tensors` field (so the sender may change them as soon as this returns).
 */
export function envelopeFrame(msg: Message & Header, id = 0, pool?: FramePool): FramedEnvelope {
  const fields = headerFields(msg, id);
  const head = fieldsLength(fields);
  let split = encodeSplit(msg);
  const layout = (bodyBytes: number, sectionBytes: number) => head + 1 + varintLength(bodyBytes) + bodyBytes + (sectionBytes > 0 ? 1 + varintLength(sectionBytes) : 0);
  if (split.parts.length > 0) {
    // Pad so that the section's offset 0 lands 8-aligned in the receiver's buffer. (The
    // padding changes neither the body's length nor the section's length field's: encodeSplit
    // offsets grow in steps of 8, and so do MessagePack's and varints' size classes.)
    const start = layout(split.body.byteLength, split.sectionBytes);
    const pad = (8 - ((RECEIVED_AT + start) % 8)) % 8;
    if (pad > 0) split = encodeSplit(msg, pad);
  }
  const start = layout(split.body.byteLength, split.sectionBytes);
  const frame = pool ? pool.take(start + split.sectionBytes) : Buffer.allocUnsafe(start + split.sectionBytes);
  let pos = writeFields(frame, 0, fields);
  frame[pos++] = Tag.body;
  pos = writeVarint(frame, pos, split.body.byteLength);
  frame.set(split.body, pos);
  pos += split.body.byteLength;
  if (split.sectionBytes > 0) {
    frame[pos++] = Tag.tensors;
    pos = writeVarint(frame, pos, split.sectionBytes);
    if (pos !== start) throw new Error(`envelopeFrame: laid out ${start} header bytes, wrote ${pos}`);
    // Every byte is written: the tensors, and zeros between them (allocUnsafe's memory is not ours to send).
    let at = 0;
    for (let i = 0; i < split.parts.length; i++) {
      const off = split.offsets[i]!;
      frame.fill(0, start + at, start + off);
      frame.set(split.parts[i]!, start + off);
      at = off + split.parts[i]!.byteLength;
    }
    frame.fill(0, start + at, start + split.sectionBytes);
  }
  return { frame, type: msg.type, stage: msg.stage ?? 0, id };
}

/**
 * Frames of large messages kept for the next ones on one stream: grpc-js copies a message
 * into a frame of its own before its write completes, so a frame may be reused once its
 * write's callback has run (`give`). Without this, each 10 MB gradient share is a fresh
 * allocation, and those drive V8's mark-compacts (every 30-50 ms during an R=2 reduce).
 */
export class FramePool {
  private readonly free: Buffer[] = [];
  /** Frames below this are left to Buffer's own pool. */
  static readonly MIN_BYTES = 64 * 1024;
  constructor(private readonly keep = 4) {}

  take(n: number): Buffer {
    if (n >= FramePool.MIN_BYTES) {
      // The smallest free frame that fits and is not more than twice as large.
      let best = -1;
      for (let i = 0; i < this.free.length; i++) {
        const len = this.free[i]!.byteLength;
        if (len >= n && len <= 2 * n && (best < 0 || len < this.free[best]!.byteLength)) best = i;
      }
      if (best >= 0) return this.free.splice(best, 1)[0]!.subarray(0, n);
    }
    return Buffer.allocUnsafe(n);
  }

  /** A frame taken from this pool whose write has completed. */
  give(frame: Buffer): void {
    // (Large frames own their memory from offset 0; anything else is not ours to keep.)
    if (frame.byteLength < FramePool.MIN_BYTES || frame.byteOffset !== 0) return;
    const whole = Buffer.from(frame.buffer, 0, frame.buffer.byteLength);
    if (this.free.length >= this.keep) this.free.shift();
    this.free.push(whole);
  }
}

/** grpc-js's serializer for Envelopes: a framed one as it is, a plain object (tests, other tools) as protobuf. */
export function serializeEnvelope(env: FramedEnvelope | Partial<WireEnvelope>): Buffer {
  if ('frame' in env && Buffer.isBuffer(env.frame)) return env.frame;
  const e = env as Partial<WireEnvelope>;
  const fields = headerFields({ type: e.type ?? '', run: e.run, stage: e.stage, step: e.step, microBatch: e.microBatch ?? 0 }, e.id ?? 0);
  const body = e.body ?? new Uint8Array(0);
  const tensors = e.tensors ?? new Uint8Array(0);
  const n = fieldsLength(fields) + (body.byteLength ? 1 + varintLength(body.byteLength) + body.byteLength : 0) + (tensors.byteLength ? 1 + varintLength(tensors.byteLength) + tensors.byteLength : 0);
  const buf = Buffer.allocUnsafe(n);
  let pos = writeFields(buf, 0, fields);
  for (const [tag, bytes] of [[Tag.body, body], [Tag.tensors, tensors]] as const) {
    if (!bytes.byteLength) continue;
    buf[pos++] = tag;
    pos = writeVarint(buf, pos, bytes.byteLength);
    buf.set(bytes, pos);
    pos += bytes.byteLength;
  }
  return buf;
}

/** grpc-js's deserializer for Envelopes: protobuf's rules (any field order, unknown fields skipped), every length checked. */
export function deserializeEnvelope(buf: Buffer): WireEnvelope {
  const env: WireEnvelope = { type: '', run: '', stage: 0, step: 0, microBatch: 0, body: buf.subarray(0, 0), id: 0, tensors: buf.subarray(0, 0) };
  let pos = 0;
  const bad = (why: string): never => { throw new WireError(`a malformed Envelope: ${why} at byte ${pos} of ${buf.length}`); };
  // A varint as a number (exact up to 2^53), and its low 32 bits as a signed int32.
  const varint = (): { value: number; int32: number } => {
    let value = 0;
    let low = 0;
    for (let i = 0; i < 10; i++) {
      if (pos >= buf.length) bad('a varint runs past the end');
      const b = buf[pos++]!;
      if (i < 5) low |= (b & 0x7f) << (7 * i);
      value += (b & 0x7f) * 2 ** (7 * i);
      if ((b & 0x80) === 0) return { value, int32: low | 0 };
    }
    return bad('a varint longer than 10 bytes');
  };
  const bytes = (): Buffer => {
    const len = varint().value;
    if (len > buf.length - pos) bad(`a field of ${len} bytes runs past the end`);
    const out = buf.subarray(pos, pos + len);
    pos += len;
    return out;
  };
  while (pos < buf.length) {
    const key = varint().value;
    const field = Math.floor(key / 8);
    const wire = key % 8;
    const expect = (w: number) => { if (wire !== w) bad(`field ${field} has wire type ${wire}, expected ${w}`); };
    switch (field) {
      case 1: expect(2); env.type = bytes().toString('utf8'); break;
      case 2: expect(2); env.run = bytes().toString('utf8'); break;
      case 3: expect(0); env.stage = varint().value >>> 0; break;
      case 4: expect(0); env.step = varint().value >>> 0; break;
      case 5: expect(0); env.microBatch = varint().int32; break;
      case 6: expect(2); env.body = bytes(); break;
      case 7: expect(0); env.id = varint().value >>> 0; break;
      case 8: expect(2); env.tensors = bytes(); break;
      default:
        // An unknown field (a newer sender): skipped by its wire type.
        if (wire === 0) varint();
        else if (wire === 2) bytes();
        else if (wire === 1 || wire === 5) { const w = wire === 1 ? 8 : 4; if (w > buf.length - pos) bad('a fixed field runs past the end'); pos += w; }
        else bad(`wire type ${wire}`);
    }
  }
  return env;
}

/** The message an envelope carries, its large tensors read from the `tensors` field (views where aligned). */
export function decodeEnvelope(env: { body: Uint8Array; tensors?: Uint8Array }, ctx: DecodeContext): Message {
  return decodeMessage(env.body, env.tensors && env.tensors.byteLength > 0 ? { ...ctx, section: env.tensors } : ctx);
}
