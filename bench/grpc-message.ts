/**
 * `npx tsx bench/grpc-message.ts [MB] [rounds]`: one large tensor message between two
 * processes over a grpc-js stream, as nodes send a gradient share (an Envelope from
 * node/envelope.ts, decoded and checked on arrival), against the same bytes raw through
 * grpc-js with an identity serializer (the floor grpc-js itself sets). Each message waits
 * for its answer before the next; rounds alternate the two, best per kind.
 */
import * as grpc from '@grpc/grpc-js';
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { clientOptions, envelopeOf, serverOptions, stageService, widenServerWindows, widenSessionWindows } from '../node/grpc-common.js';
import { decodeEnvelope, type WireEnvelope } from '../node/envelope.js';
import { Tensor } from '../src/tensor/tensor.js';
import type { Message } from '../src/wire/index.js';

const [mb, roundsArg] = process.argv[2] === 'server' ? [] : process.argv.slice(2);
const bytes = Number(mb ?? 10) * 1024 * 1024;
const rounds = Number(roundsArg ?? 3);
const perRound = 10;
const same = (b: Buffer) => b;
const raw: grpc.ServiceDefinition = {
  Stream: { path: '/bench.Raw/Stream', requestStream: true, responseStream: true, requestSerialize: same, requestDeserialize: same, responseSerialize: same, responseDeserialize: same },
};

if (process.argv[2] === 'server') {
  const server = new grpc.Server(serverOptions);
  widenServerWindows(server);
  const deliver = (call: grpc.ServerDuplexStream<WireEnvelope, unknown>) => {
    call.on('data', (env: WireEnvelope) => {
      decodeEnvelope(env, { actor: 'bench server' });
      call.write(envelopeOf({ type: 'ok' }));
    });
    call.on('end', () => call.end());
  };
  server.addService(stageService().StageService.service, { Call: () => {}, DeliverStream: deliver } as grpc.UntypedServiceImplementation);
  server.addService(raw, {
    Stream: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      call.on('data', (b: Buffer) => {
        // Into a tensor: at offset 5 of grpc-js's buffer, unaligned, so one copy.
        new Uint8Array(new Float32Array(b.byteLength / 4).buffer).set(b);
        call.write(Buffer.alloc(1));
      });
      call.on('end', () => call.end());
    },
  });
  server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => {
    if (err) throw err;
    widenSessionWindows(server);
    process.send!(port);
  });
} else {
  const child = fork(fileURLToPath(import.meta.url), ['server'], { execArgv: process.execArgv.length ? process.execArgv : ['--import', 'tsx'] });
  const port = await new Promise<number>((resolve) => child.once('message', (p) => resolve(p as number)));
  const address = `127.0.0.1:${port}`;
  const n = bytes / 4;
  const g = new Float32Array(n).fill(0.5);
  const share = { type: 'reduce', phase: 'scatter', from: 0, g: new Tensor(g, [n]), run: 'bench', stage: 0, replica: 1, step: 1, microBatch: -1 } as unknown as Message;
  const envelopes = new (stageService().StageService)(address, grpc.credentials.createInsecure(), clientOptions);
  const RawClient = grpc.makeGenericClientConstructor(raw, 'Raw');
  const raws = new RawClient(address, grpc.credentials.createInsecure(), clientOptions) as unknown as { Stream(): grpc.ClientDuplexStream<Buffer, Buffer> };
  const kinds = {
    envelope: () => ({ call: envelopes.DeliverStream() as unknown as grpc.ClientDuplexStream<unknown, unknown>, send: (c: grpc.ClientDuplexStream<unknown, unknown>) => c.write(envelopeOf(share)) }),
    raw: () => ({ call: raws.Stream() as grpc.ClientDuplexStream<unknown, unknown>, send: (c: grpc.ClientDuplexStream<unknown, unknown>) => c.write(Buffer.from(g.buffer, g.byteOffset, g.byteLength)) }),
  };
  const best: Record<string, number> = {};
  for (let r = 0; r < rounds; r++) {
    for (const [kind, open] of Object.entries(kinds)) {
      const { call, send } = open();
      // One message to open the stream, then the timed ones.
      let answered = 0;
      const t0 = await new Promise<number>((resolve) => {
        let start = 0;
        call.on('data', () => {
          answered++;
          if (answered === 1) start = performance.now();
          if (answered === perRound + 1) resolve(start);
          else send(call);
        });
        send(call);
      });
      const ms = (performance.now() - t0) / perRound;
      call.end();
      best[kind] = Math.min(best[kind] ?? Infinity, ms);
    }
  }
  for (const [kind, ms] of Object.entries(best)) {
    console.log(`${kind.padEnd(8)} ${ms.toFixed(1)} ms per ${bytes / 1024 / 1024} MB message (${(bytes / 1e6 / (ms / 1000)).toFixed(0)} MB/s), best of ${rounds} rounds of ${perRound}`);
  }
  child.kill();
  process.exit(0);
}
