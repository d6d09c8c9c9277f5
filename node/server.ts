/**
 * A gRPC node: hosts stage actors for remote coordinators (`chainrule node --port P`).
 * `Call` carries a request for one stage; `Deliver` carries an activation or gradient from a
 * neighbouring stage, which may live on another node. A message that fails validation is
 * answered with an error naming the node, the stage and the field; the node keeps serving.
 */
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { decodeMessage, encodeMessage, requestTypes, type Message, type PeerAddress, type Reply, type Request } from '../src/wire/index.js';
import { StageActor, type PeerLink } from './stage.js';
import { StreamLink, clientOptions, serverOptions, stageService, type Envelope, type Envelope__Output, type StageServiceClient } from './grpc-common.js';

export interface NodeOptions {
  host?: string;
  port?: number;
  /** Deadline of a Deliver to a neighbour (default 120 s). */
  deliverDeadlineMs?: number;
  /**
   * Receive and send cap of this node's server and of its clients to neighbours, in bytes
   * (default: the codec's MAX_MESSAGE_BYTES plus room for the envelope). A larger message is
   * refused by gRPC before it is decoded (RESOURCE_EXHAUSTED).
   */
  maxMessageBytes?: number;
}

function checkOptions(opts: NodeOptions): void {
  const { port, deliverDeadlineMs, maxMessageBytes } = opts;
  if (port !== undefined && !(Number.isInteger(port) && port >= 0 && port <= 65535)) {
    throw new RangeError(`options.port must be an integer in 0..65535, got ${JSON.stringify(port)}`);
  }
  if (deliverDeadlineMs !== undefined && !(Number.isFinite(deliverDeadlineMs) && deliverDeadlineMs > 0)) {
    throw new RangeError(`options.deliverDeadlineMs must be a positive number, got ${JSON.stringify(deliverDeadlineMs)}`);
  }
  // NOTE: gRPC reads the caps as int32, and -1 means "unlimited": both ruled out here.
  if (maxMessageBytes !== undefined && !(Number.isInteger(maxMessageBytes) && maxMessageBytes >= 1024 && maxMessageBytes <= 0x7fffffff)) {
    throw new RangeError(`options.maxMessageBytes must be an integer in 1024..2147483647, got ${JSON.stringify(maxMessageBytes)}`);
  }
}

const knownRequests: ReadonlySet<string> = new Set(requestTypes);

export interface RunningNode {
  /** host:port as bound (the port is the real one when 0 was asked for). */
  address: string;
  port: number;
  close(): Promise<void>;
}

export async function startNode(opts: NodeOptions = {}): Promise<RunningNode> {
  checkOptions(opts);
  const caps: grpc.ChannelOptions = opts.maxMessageBytes === undefined ? {} : {
    'grpc.max_receive_message_length': opts.maxMessageBytes,
    'grpc.max_send_message_length': opts.maxMessageBytes,
  };
  const host = opts.host ?? '127.0.0.1';
  const deliverDeadline = opts.deliverDeadlineMs ?? 120_000;
  const actors = new Map<string, StageActor>();
  const clients = new Map<string, StageServiceClient>();
  let address = `${host}:${opts.port ?? 0}`;
  const key = (run: string, stage: number, replica = 0) => `${run}/${replica}/${stage}`;

  // One client per neighbouring node, reused.
  const linkTo = (peer: PeerAddress): PeerLink => {
    let client = clients.get(peer.address);
    if (!client) {
      const Service = stageService().StageService;
      client = new Service(peer.address, grpc.credentials.createInsecure(), { ...clientOptions, ...caps });
      clients.set(peer.address, client);
    }
    return new StreamLink(client, peer.address, deliverDeadline);
  };

  const answer = (cb: grpc.sendUnaryData<Envelope>, reply: Reply) => {
    cb(null, { type: reply.type, body: encodeMessage(reply) });
  };

  const decode = (env: Envelope__Output): Message => decodeMessage(env.body, { actor: `node ${address} stage ${env.stage}` });

  const handleCall = async (env: Envelope__Output): Promise<Reply> => {
    const msg = decode(env);
    if (!knownRequests.has(msg.type)) {
      return { type: 'error', code: 'BAD_MESSAGE', message: `node ${address} stage ${env.stage}: Call carries requests, not '${msg.type}'` };
    }
    const req = msg as Request;
    const k = key(req.run, req.stage, req.replica);
    let actor = actors.get(k);
    if (!actor) {
      if (req.type !== 'configure' && req.type !== 'connect') {
        return { type: 'error', code: 'UNKNOWN_STAGE', message: `node ${address}: no stage ${req.stage} of run ${req.run} here; send 'configure' first` };
      }
      actor = new StageActor(req.stage, req.replica ?? 0);
      actor.flushAfterSend = true;
      actors.set(k, actor);
    }
    if (req.type === 'connect') {
      actor.prev = req.prev ? linkTo(req.prev) : null;
      actor.next = req.next ? linkTo(req.next) : null;
      actor.peers = (req.peers ?? []).map((p) => (p ? linkTo(p) : null));
      return { type: 'ok' };
    }
    if (req.type === 'shutdown') {
      actors.delete(k);
      await actor.prev?.close?.();
      await actor.next?.close?.();
      for (const p of actor.peers) await p?.close?.();
      return actor.handle(req);
    }
    return actor.handle(req);
  };

  const handleDeliver = async (env: Envelope__Output): Promise<Reply> => {
    const msg = decode(env);
    if (msg.type !== 'activation' && msg.type !== 'gradient' && msg.type !== 'reduce') {
      return { type: 'error', code: 'BAD_MESSAGE', message: `node ${address}: Deliver carries activations, gradients and gradient shares, not '${msg.type}'` };
    }
    const actor = actors.get(key(msg.run, msg.stage, msg.replica));
    if (!actor) return { type: 'error', code: 'UNKNOWN_STAGE', message: `node ${address}: no stage ${msg.stage} of run ${msg.run} to deliver a ${msg.type} to` };
    await actor.deliver(msg);
    return { type: 'ok' };
  };

  const wrap = (f: (env: Envelope__Output) => Promise<Reply>): grpc.handleUnaryCall<Envelope__Output, Envelope> => (call, cb) => {
    f(call.request).then(
      (reply) => answer(cb, reply),
      (e: Error & { code?: unknown }) => answer(cb, { type: 'error', code: typeof e.code === 'string' ? e.code : 'BAD_MESSAGE', message: e.message }),
    );
  };

  const server = new grpc.Server({ ...serverOptions, ...caps });
  // The streamed form of Deliver: every envelope is answered with its id once accepted.
  const deliverStream: grpc.handleBidiStreamingCall<Envelope__Output, Envelope> = (call) => {
    call.on('data', (env: Envelope__Output) => {
      handleDeliver(env).catch((e: Error & { code?: unknown }): Reply => ({ type: 'error', code: typeof e.code === 'string' ? e.code : 'BAD_MESSAGE', message: e.message }))
        .then((reply) => { if (!call.writableEnded) call.write({ id: env.id, type: reply.type, body: encodeMessage(reply) }); });
    });
    call.on('end', () => call.end());
    call.on('error', () => { /* the peer went away; its link fails its own pending sends */ });
  };
  // The standard gRPC health service, so load balancers and orchestrators can probe a node.
  new HealthImplementation({ '': 'SERVING', 'chainrule.StageService': 'SERVING' }).addToServer(server);
  server.addService(stageService().StageService.service, { Call: wrap(handleCall), DeliverStream: deliverStream });
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${host}:${opts.port ?? 0}`, grpc.ServerCredentials.createInsecure(), (err, p) => {
      if (err) reject(new Error(`chainrule node: cannot listen on ${host}:${opts.port ?? 0}: ${err.message}`));
      else resolve(p);
    });
  });
  address = `${host.includes(':') ? `[${host}]` : host}:${port}`;

  let closed = false;
  return {
    address,
    port,
    close: async () => {
      if (closed) return;
      closed = true;
      for (const c of clients.values()) c.close();
      // tryShutdown can wait forever on a stuck call: back it with forceShutdown.
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => { server.forceShutdown(); resolve(); }, 2_000);
        server.tryShutdown(() => { clearTimeout(timer); resolve(); });
      });
    },
  };
}
