/**
 * node/envelope.ts: the Envelope's protobuf bytes written and read by hand, large tensors
 * copied once into its `tensors` field and read in place. The bytes are protobuf's (protobufjs,
 * through proto-loader, reads what we write and writes what we read), tensors arrive as
 * aligned views where grpc-js puts a message, and malformed input is refused naming what.
 */
import { describe, expect, it } from 'vitest';
import * as protoLoader from '@grpc/proto-loader';
import { join } from 'node:path';
import { FramePool, decodeEnvelope, deserializeEnvelope, envelopeFrame, serializeEnvelope } from '../node/envelope.js';
import { Tensor } from '../src/tensor/tensor.js';
import { WireError, encodeMessage, encodeSplit, type Message } from '../src/wire/index.js';

// protobufjs's own (de)serializers for Envelope, from a fresh load of the proto.
const def = protoLoader.loadSync(join(import.meta.dirname, '..', 'proto', 'chainrule.proto'), { keepCase: false, longs: String, enums: String, defaults: true, oneofs: true });
const call = (def['chainrule.StageService'] as protoLoader.ServiceDefinition)['Call']!;
const pbEncode = (o: object) => call.requestSerialize(o) as Buffer;
const pbDecode = (b: Buffer) => call.requestDeserialize(b) as Record<string, unknown>;

/** The frame as grpc-js hands it to a receiver: 5 bytes into a buffer of its own. */
function received(frame: Buffer): Buffer {
  const whole = Buffer.alloc(frame.byteLength + 5);
  frame.copy(whole, 5);
  return whole.subarray(5);
}

const gradient = (n: number, seed = 1) => {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = Math.sin(i + seed);
  return x;
};

describe('the Envelope on the wire', () => {
  it('writes the bytes protobufjs reads, and reads the bytes protobufjs writes', () => {
    const plain = { type: 'activation', run: 'r-ü', stage: 3, step: 70_000, microBatch: -1, body: Buffer.from([1, 2, 3]), id: 2 ** 31 + 5 };
    const ours = serializeEnvelope(plain);
    expect(pbDecode(ours)).toMatchObject({ ...plain, tensors: Buffer.alloc(0) });
    const theirs = pbEncode({ ...plain, tensors: Buffer.from([9, 8]) });
    expect(deserializeEnvelope(theirs)).toEqual({ ...plain, tensors: Buffer.from([9, 8]) });
    // Zero values are left out, as proto3 does: the same bytes.
    const sparse = { type: 'ok', body: Buffer.from([7]) };
    expect(serializeEnvelope(sparse).equals(pbEncode(sparse))).toBe(true);
    expect(deserializeEnvelope(pbEncode(sparse))).toMatchObject({ type: 'ok', run: '', stage: 0, step: 0, microBatch: 0, id: 0 });
  });

  it('moves a large tensor out of MessagePack into the tensors field, copied at once, and reads it in place where grpc-js puts it', () => {
    const data = gradient(100_000);
    const msg = { type: 'reduce', phase: 'scatter', from: 1, g: new Tensor(data, [100_000]), run: 'r', stage: 1, replica: 0, step: 4, microBatch: -1 } as unknown as Message;
    const framed = envelopeFrame(msg, 9);
    data[0] = 42; // the sender may reuse its buffer as soon as the frame is made
    const env = deserializeEnvelope(received(framed.frame));
    expect(env).toMatchObject({ type: 'reduce', run: 'r', stage: 1, step: 4, microBatch: -1, id: 9 });
    expect(env.body.byteLength).toBeLessThan(200);
    expect(env.tensors.byteLength).toBeGreaterThanOrEqual(400_000);
    // protobufjs sees the same envelope.
    expect((pbDecode(received(framed.frame)) as { tensors: Buffer }).tensors.equals(env.tensors)).toBe(true);
    const back = decodeEnvelope(env, { actor: 'test' }) as unknown as { g: Tensor };
    const got = back.g.data as Float32Array;
    expect(got[0]).toBe(Math.fround(Math.sin(1)));
    expect(Buffer.from(got.buffer, got.byteOffset, got.byteLength).equals(Buffer.from(gradient(100_000).buffer))).toBe(true);
    expect(got.buffer).toBe(env.tensors.buffer); // a view: no copy on arrival
    // Anywhere else it is copied into alignment, with the same values.
    const odd = Buffer.alloc(framed.frame.byteLength + 3);
    framed.frame.copy(odd, 3);
    const moved = decodeEnvelope(deserializeEnvelope(odd.subarray(3)), { actor: 'test' }) as unknown as { g: Tensor };
    expect(Array.from((moved.g.data as Float32Array).subarray(0, 5))).toEqual(Array.from(got.subarray(0, 5)));
  });

  it('keeps small tensors inside MessagePack, as before', () => {
    const msg = { type: 'gradient', dx: new Tensor(gradient(100), [10, 10]), run: 'r', stage: 0, step: 1, microBatch: 2 } as unknown as Message;
    const env = deserializeEnvelope(envelopeFrame(msg).frame);
    expect(env.tensors.byteLength).toBe(0);
    expect(Buffer.from(env.body).equals(Buffer.from(encodeMessage(msg)))).toBe(true);
  });

  it('refuses malformed envelopes naming the byte', () => {
    const good = serializeEnvelope({ type: 'ok', run: 'r', stage: 1, body: Buffer.from([1, 2, 3, 4]) });
    expect(() => deserializeEnvelope(good.subarray(0, good.length - 2))).toThrow(/malformed Envelope: a field of 4 bytes runs past the end/);
    expect(() => deserializeEnvelope(Buffer.from([0x18, 0x80]))).toThrow(/malformed Envelope: a varint runs past the end/);
    expect(() => deserializeEnvelope(Buffer.from([0x18, ...Array(11).fill(0x80)]))).toThrow(/a varint longer than 10 bytes/);
    expect(() => deserializeEnvelope(Buffer.from([0x0d, 0, 0, 0, 0]))).toThrow(/field 1 has wire type 5, expected 2/);
    expect(() => deserializeEnvelope(Buffer.from([0x0f]))).toThrow(WireError);
    // An unknown field from a newer sender is skipped.
    expect(deserializeEnvelope(Buffer.concat([Buffer.from([0x48, 0x05, 0x52, 0x01, 0x00]), good])).type).toBe('ok');
  });

  it('refuses a body whose tensor is not in the section', () => {
    const data = gradient(20_000);
    const msg = { type: 'gradient', dx: new Tensor(data, [20_000]), run: 'r', stage: 0, step: 1, microBatch: 0 } as unknown as Message;
    const split = encodeSplit(msg);
    const section = Buffer.alloc(split.sectionBytes);
    expect(() => decodeEnvelope({ body: split.body, tensors: section.subarray(0, 100) }, { actor: 'node x' }))
      .toThrow(/node x: field 'dx': 80000 bytes at offset 0 do not fit the section's 100/);
    expect(() => decodeEnvelope({ body: split.body }, { actor: 'node x' })).toThrow(/the tensor is at offset 0 of a section the message does not have/);
    // NaN in the section is refused as it is inside MessagePack.
    const nan = Buffer.from(new Float32Array(20_000).fill(Number.NaN).buffer);
    expect(() => decodeEnvelope({ body: split.body, tensors: nan }, { actor: 'node x' })).toThrow(/value NaN at index 0 is not finite/);
  });

  it('reuses a frame once its write has completed, never one it did not hand out', () => {
    const pool = new FramePool();
    const a = pool.take(100_000);
    pool.give(a);
    const b = pool.take(90_000);
    expect(b.buffer).toBe(a.buffer);
    expect(b.byteLength).toBe(90_000);
    expect(pool.take(90_000).buffer).not.toBe(a.buffer); // taken: not handed out twice
    pool.give(Buffer.alloc(100).subarray(10)); // small and shared: not kept
    expect(pool.take(200_000).byteLength).toBe(200_000);
  });
});
