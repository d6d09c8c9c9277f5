/** The stage actor and the wire: validation on receipt, errors that name what and where, duplicates applied once. */
import { describe, expect, it } from 'vitest';
import { Packr } from 'msgpackr';
import { Tensor } from '../src/tensor/tensor.js';
import { decodeFromPort, decodeMessage, encodeForPort, encodeMessage, expectReply, MAX_TENSOR_ELEMENTS, type Request } from '../src/wire/index.js';
import { MessageChannel } from 'node:worker_threads';
import { StageActor } from '../node/stage.js';
import { Inbox } from '../node/inbox.js';
import { ThreadsTransport } from '../coordinator/transports/index.js';

const model = {
  inputShape: [4],
  layers: [{ type: 'dense', inputs: 4, units: 8 }, { type: 'relu' }, { type: 'dense', inputs: 8, units: 3 }],
  loss: 'softmaxCrossEntropy',
};
const config = { model, start: 0, end: 3, seed: 1, capacity: 2 };
const h = { run: 'r', stage: 0, step: 0, microBatch: -1 };
const x = () => Tensor.from(Array.from({ length: 8 }, (_, i) => (i % 5) / 5 - 0.3), [2, 4]);

describe('wire codec', () => {
  it('round-trips a request with tensors and labels', () => {
    const msg: Request = { ...h, type: 'runStep', actions: ['0F0', '0B0'], inputs: [x()], targets: [Int32Array.from([1, 2])] };
    const back = decodeMessage(encodeMessage(msg), { actor: 'test' }) as Extract<Request, { type: 'runStep' }>;
    expect(back.actions).toEqual(['0F0', '0B0']);
    expect(back.inputs![0]!.shape).toEqual([2, 4]);
    expect(Array.from(back.inputs![0]!.data)).toEqual(Array.from(x().data));
    expect(Array.from(back.targets![0] as Int32Array)).toEqual([1, 2]);
  });

  const raw = new Packr({ useRecords: false, mapsAsObjects: true });
  const tensor = (dtype: string, shape: unknown, bytes: Uint8Array) => ({ $tensor: dtype, shape, bytes });
  const bad = (body: Record<string, unknown>) => raw.pack({ ...h, type: 'forward', microBatch: 0, ...body });

  it.each([
    ['garbage bytes', new Uint8Array([0xc1, 0xff, 0x00]), /test: (malformed message|a message must be a map|unknown message type)/],
    ['an unknown type', raw.pack({ type: 'launch' }), /unknown message type "launch"/],
    ['a bad dtype', bad({ x: tensor('int8', [2], new Uint8Array(2)) }), /field 'x': dtype "int8" is not one of float32, float64, int32/],
    ['a shape that does not match the bytes', bad({ x: tensor('float32', [2, 4], new Uint8Array(12)) }), /field 'x': shape \[2, 4\] needs 32 bytes of float32, got 12/],
    ['a negative dimension', bad({ x: tensor('float32', [-1, 4], new Uint8Array(0)) }), /field 'x': shape \[-1,4\] must be/],
    ['an oversized tensor', bad({ x: tensor('float32', [MAX_TENSOR_ELEMENTS + 1], new Uint8Array(4)) }), /exceed the cap/],
    ['a NaN activation', bad({ x: tensor('float32', [1, 2], new Uint8Array(new Float32Array([1, NaN]).buffer)) }), /field 'x': value NaN at index 1 is not finite/],
    // Large enough for the backend's vectorized check (4096 values and up), the bad value near the end.
    ['an infinity deep in a large activation', bad({ x: tensor('float32', [8, 1024], new Uint8Array(Float32Array.from({ length: 8192 }, (_, i) => (i === 8190 ? -Infinity : 0.5)).buffer)) }), /field 'x': value -Infinity at index 8190 is not finite/],
    ['a missing step', raw.pack({ run: 'r', stage: 0, microBatch: 0, type: 'gradients' }), /field 'step' must be a non-negative integer/],
  ])('rejects %s, naming the actor and the field', (_what, bytes, message) => {
    expect(() => decodeMessage(bytes, { actor: 'test' })).toThrow(message);
  });
});

describe('stage actor', () => {
  it('answers a bad request with an error naming the actor and the message, and keeps serving', async () => {
    const a = new StageActor(0);
    const r0 = await a.handle({ ...h, type: 'gradients' });
    expect(r0).toMatchObject({ type: 'error', code: 'NOT_CONFIGURED' });
    expectReply(await a.handle({ ...h, type: 'configure', config }), 'configured', 'test');
    const bad = await a.handle({ ...h, type: 'forward', microBatch: 0, x: Tensor.zeros([2, 5]), targets: Int32Array.from([0, 1]) });
    expect(bad.type).toBe('error');
    expect((bad as { message: string }).message).toMatch(/stage 0: .*shape \[2, 5\], expected \[batch, 4\]/);
    const back = await a.handle({ ...h, type: 'backward', microBatch: 1 });
    expect((back as { message: string }).message).toMatch(/backward of micro-batch 1 \(step 0\) before its forward/);
    const ok = await a.handle({ ...h, type: 'forward', microBatch: 0, x: x(), targets: Int32Array.from([0, 1]) });
    expect(ok.type).toBe('activations');
  });

  it('a duplicate runStep and a duplicate optimizer step are applied once', async () => {
    const a = new StageActor(0);
    expectReply(await a.handle({ ...h, type: 'configure', config }), 'configured', 'test');
    const step: Request = { ...h, type: 'runStep', actions: ['0F0', '0B0'], inputs: [x()], targets: [Int32Array.from([0, 2])] };
    const r1 = expectReply(await a.handle(step), 'stepDone', 't').report;
    const g1 = expectReply(await a.handle({ ...h, type: 'gradients' }), 'tensors', 't').tensors;
    const r2 = expectReply(await a.handle(step), 'stepDone', 't').report;
    const g2 = expectReply(await a.handle({ ...h, type: 'gradients' }), 'tensors', 't').tensors;
    expect(r2).toEqual(r1);
    expect(Array.from(g2['0.weight']!.data)).toEqual(Array.from(g1['0.weight']!.data));
    const opt: Request = { ...h, type: 'optimizerStep', optimizer: { type: 'sgd', lr: 0.1 }, lr: 0.1, gradScale: 0.5 };
    expectReply(await a.handle(opt), 'ok', 't');
    const p1 = expectReply(await a.handle({ ...h, type: 'getParams' }), 'tensors', 't').tensors['0.weight']!.data.slice();
    expectReply(await a.handle(opt), 'ok', 't');
    const p2 = expectReply(await a.handle({ ...h, type: 'getParams' }), 'tensors', 't').tensors['0.weight']!.data;
    expect(Array.from(p2)).toEqual(Array.from(p1));
  });

  it('frees a micro-batch tape when its backward arrives, and bounds the tapes in flight', async () => {
    const a = new StageActor(0);
    expectReply(await a.handle({ ...h, type: 'configure', config }), 'configured', 'test');
    const f = (mb: number) => a.handle({ ...h, type: 'forward', microBatch: mb, x: x(), targets: Int32Array.from([0, 1]) });
    expect((await f(0)).type).toBe('activations');
    expect((await f(1)).type).toBe('activations');
    expect(a.inFlight).toBe(2);
    expect(await f(2)).toMatchObject({ type: 'error', code: 'TOO_MANY_IN_FLIGHT' });
    expect((await a.handle({ ...h, type: 'backward', microBatch: 0 })).type).toBe('inputGradient');
    expect(a.inFlight).toBe(1);
  });

  it('the inbox makes a sender wait when it is full (back-pressure) and drops duplicates', async () => {
    const inbox = new Inbox(() => 1, 5_000, 'stage 1');
    const t = Tensor.zeros([1]);
    await inbox.deliver('activation', 0, 0, t);
    let second = false;
    const p = inbox.deliver('activation', 0, 1, t).then(() => { second = true; });
    await new Promise((r) => setTimeout(r, 20));
    expect(second).toBe(false);
    await inbox.take('activation', 0, 0);
    await p;
    expect(second).toBe(true);
    await inbox.deliver('activation', 0, 1, t); // duplicate: acknowledged and dropped
    expect(inbox.size).toBe(1);
  });
});

describe('messages between threads (encodeForPort / decodeFromPort)', () => {
  it('round-trips through a real MessagePort, moving copies: the sender keeps its tensors', async () => {
    const input = x();
    const big = new Float32Array(64).fill(3);
    const view = new Tensor(big.subarray(8, 16), [2, 4]); // a view into a larger buffer
    const msg: Request = { ...h, type: 'runStep', actions: ['0F0', '0F1'], inputs: [input, view], targets: [Int32Array.from([1, 2]), Int32Array.from([0, 0])] };
    const { value, transfer } = encodeForPort(msg);
    const { port1, port2 } = new MessageChannel();
    const got = new Promise<unknown>((resolve) => port2.once('message', resolve));
    port1.postMessage(value, transfer);
    const back = decodeFromPort(await got, { actor: 'test' }) as Extract<Request, { type: 'runStep' }>;
    port1.close();
    expect(Array.from(back.inputs![0]!.data)).toEqual(Array.from(x().data));
    expect(back.inputs![1]!.data.length).toBe(8); // the view's 8 values, not its buffer's 64
    expect(Array.from(back.targets![1] as Int32Array)).toEqual([0, 0]);
    expect(input.data.length).toBe(8); // not detached by the transfer
    expect(big.byteLength).toBe(256);
  });

  it.each([
    ['a bad dtype', { ...h, type: 'forward', microBatch: 0, x: { $tensor: 'int8', shape: [2], bytes: new Uint8Array(2) } }, /field 'x': dtype "int8"/],
    ['a NaN activation', { ...h, type: 'forward', microBatch: 0, x: { $tensor: 'float32', shape: [1, 2], bytes: new Uint8Array(new Float32Array([1, NaN]).buffer) } }, /value NaN at index 1 is not finite/],
    ['an unknown type', { type: 'launch' }, /unknown message type "launch"/],
    ['not a map', [1, 2], /a message must be a map/],
  ])('validates %s as the wire does', (_what, value, message) => {
    expect(() => decodeFromPort(value, { actor: 'test' })).toThrow(message);
  });
});

describe('worker threads', () => {
  it('a bad message to a worker gets an error reply and the worker keeps serving', async () => {
    const t = new ThreadsTransport();
    try {
      const [stage] = await t.open({ replicas: 1, stages: 1 }, "r");
      const r = await stage!.request({ ...h, type: 'forward', microBatch: 0, x: x(), targets: Int32Array.from([0, 1]) });
      expect(r).toMatchObject({ type: 'error', code: 'NOT_CONFIGURED' });
      expectReply(await stage!.request({ ...h, type: 'configure', config }), 'configured', 'test');
      const bad = await stage!.request({ ...h, type: 'forward', microBatch: 0, x: Tensor.from([1, NaN, 0, 0, 1, 1, 1, 1], [2, 4]), targets: Int32Array.from([0, 1]) });
      expect((bad as { message: string }).message).toMatch(/stage 0: field 'x': value NaN at index 1 is not finite/);
      const ok = await stage!.request({ ...h, type: 'forward', microBatch: 0, x: x(), targets: Int32Array.from([0, 1]) });
      expect(ok.type).toBe('activations');
    } finally {
      await t.close();
    }
  });
});
