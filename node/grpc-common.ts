/**
 * gRPC plumbing shared by nodes (which call their neighbours) and the coordinator's gRPC
 * transport: the service loaded from proto/chainrule.proto with @grpc/proto-loader, typed by
 * the types proto-loader-gen-types generated from it, the channel options, and a unary call
 * with a deadline whose failures name the node.
 */
import { ChainruleError } from '../src/errors.js';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { ProtoGrpcType } from '../proto/generated/chainrule.js';
import type { StageServiceClient } from '../proto/generated/chainrule/StageService.js';
import type { Envelope, Envelope__Output } from '../proto/generated/chainrule/Envelope.js';
import { MAX_MESSAGE_BYTES, type Message } from '../src/wire/index.js';
import { FramePool, decodeEnvelope, deserializeEnvelope, envelopeFrame, serializeEnvelope } from './envelope.js';

export type { StageServiceClient, Envelope, Envelope__Output };

/** The package root (holding proto/), found from this file whether it runs from source or dist/. */
function protoPath(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const p = join(dir, 'proto', 'chainrule.proto');
    if (existsSync(p) && existsSync(join(dir, 'package.json'))) return p;
    const up = dirname(dir);
    if (up === dir) throw new Error('chainrule: cannot find proto/chainrule.proto above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
}

let loaded: ProtoGrpcType | null = null;

export function stageService(): ProtoGrpcType['chainrule'] {
  if (!loaded) {
    const def = protoLoader.loadSync(protoPath(), { keepCase: false, longs: String, enums: String, defaults: true, oneofs: true });
    // Envelopes are (de)serialized by node/envelope.ts: protobuf's bytes, large tensors copied once.
    const service = def['chainrule.StageService'] as protoLoader.ServiceDefinition;
    for (const method of Object.values(service)) {
      Object.assign(method, { requestSerialize: serializeEnvelope, requestDeserialize: deserializeEnvelope, responseSerialize: serializeEnvelope, responseDeserialize: deserializeEnvelope });
    }
    loaded = grpc.loadPackageDefinition(def) as unknown as ProtoGrpcType;
  }
  return loaded.chainrule;
}

// A tensor message needs up to the codec's cap plus the envelope around it; never -1.
const CAP = MAX_MESSAGE_BYTES + 1024 * 1024;

/**
 * HTTP/2's flow-control window for the large messages between nodes. With the default 64 KB,
 * a 4 MB activation or a 10 MB gradient share needs a window update every 64 KB, each waiting
 * for the receiver's event loop, which is busy computing. Measured on loopback (wide MLP, two
 * node processes, three interleaved pairs): R=2 1,523-1,666 samples/s against 1,130-1,430,
 * K=2 3,035-3,552 against 2,103-2,767. `CHAINRULE_DEFAULT_WINDOWS=1` keeps HTTP/2's defaults
 * (to measure the difference). Clients take the window as a channel option; grpc-js 1.14
 * servers do not (grpc/grpc-node#3058), so `widenServerWindows` sets it through its internals.
 */
export const FLOW_WINDOW = 32 * 1024 * 1024;
const wideWindows = () => process.env['CHAINRULE_DEFAULT_WINDOWS'] !== '1';

export const clientOptions: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': CAP,
  'grpc.max_send_message_length': CAP,
  'grpc.keepalive_time_ms': 20_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.keepalive_permit_without_calls': 1,
  // Reconnect backoff otherwise grows to 120 s.
  'grpc.max_reconnect_backoff_ms': 2_000,
  'grpc.initial_reconnect_backoff_ms': 200,
  ...(wideWindows() ? { 'grpc-node.flow_control_window': FLOW_WINDOW } : {}),
};

export const serverOptions: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': CAP,
  'grpc.max_send_message_length': CAP,
  'grpc.keepalive_time_ms': 20_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.keepalive_permit_without_calls': 1,
  // Accept the clients' keepalive pings instead of answering them with GOAWAY.
  'grpc.http2.min_ping_interval_without_data_ms': 10_000,
};

/**
 * Gives a grpc-js server's HTTP/2 sessions a FLOW_WINDOW receive window (per stream and per
 * connection), through grpc-js internals; false (nothing changed) where they are not there.
 * Call before bindAsync.
 */
export function widenServerWindows(server: grpc.Server): boolean {
  const internals = server as unknown as { commonServerOptions?: { settings?: Record<string, unknown> } };
  const common = internals.commonServerOptions;
  if (!common || !wideWindows()) return false;
  common.settings = { ...common.settings, initialWindowSize: FLOW_WINDOW };
  return true;
}

/** After bindAsync: the connection-level window of every session (the settings above give the per-stream one). */
export function widenSessionWindows(server: grpc.Server): void {
  if (!wideWindows()) return;
  const servers = (server as unknown as { http2Servers?: unknown }).http2Servers;
  if (!(servers instanceof Map)) return;
  for (const s of servers.keys() as IterableIterator<import('node:events').EventEmitter>) {
    s.on('session', (session: { setLocalWindowSize?: (n: number) => void }) => {
      try { session.setLocalWindowSize?.(FLOW_WINDOW); } catch { /* a closing session */ }
    });
  }
}

/** One client per node; `credentials` default to plaintext (see node/tls.ts for TLS). */
export function makeClient(address: string, credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure(), options: grpc.ChannelOptions = {}): StageServiceClient {
  const Service = stageService().StageService;
  return new Service(address, credentials, { ...clientOptions, ...options });
}

/** The message as an Envelope ready for grpc-js (its protobuf bytes; node/envelope.ts): tensors copied at once. */
export function envelopeOf(msg: Message & { run?: string; stage?: number; step?: number; microBatch?: number }, id = 0): Envelope {
  return envelopeFrame(msg, id) as unknown as Envelope;
}

export class GrpcError extends ChainruleError {
  constructor(code: string, message: string) {
    super(code, message);
  }
}

/**
 * A unary call with a deadline; a failure names the node, the method and the message.
 * `metadata` goes with the call (the bearer token: call credentials cannot be composed with
 * plaintext channels, per-call metadata works over both).
 */
export function unary(client: StageServiceClient, address: string, method: 'Call', msg: Message & { stage?: number }, deadlineMs: number, metadata: grpc.Metadata = new grpc.Metadata()): Promise<Message> {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + deadlineMs);
    client[method](envelopeOf(msg), metadata, { deadline }, (err: grpc.ServiceError | null, reply?: Envelope__Output) => {
      if (err) {
        const what = `gRPC node ${address}${msg.stage !== undefined ? ` (stage ${msg.stage})` : ''}: ${msg.type}`;
        if (err.code === grpc.status.UNAVAILABLE) reject(new GrpcError('NODE_UNREACHABLE', `${what}: the node is unreachable (${err.details})`));
        else if (err.code === grpc.status.DEADLINE_EXCEEDED) reject(new GrpcError('DEADLINE_EXCEEDED', `${what}: no answer within ${deadlineMs / 1000} s`));
        else if (err.code === grpc.status.UNAUTHENTICATED || err.code === grpc.status.PERMISSION_DENIED) reject(new GrpcError(grpc.status[err.code], `${what}: ${err.details}`));
        else reject(new GrpcError(`GRPC_${grpc.status[err.code]}`, `${what}: ${grpc.status[err.code]}: ${err.details}`));
        return;
      }
      try {
        resolve(decodeEnvelope(reply!, { actor: `reply from gRPC node ${address}` }));
      } catch (e) {
        reject(e);
      }
    });
  });
}

/** What a node's health service says; `unreachable` for no answer at all. */
export type HealthStatus = 'SERVING' | 'NOT_SERVING' | 'UNKNOWN' | 'unreachable';

/**
 * Asks the node's standard health service (grpc.health.v1) how it serves, on the client's own
 * channel; `unreachable` on any failure or no answer within `timeoutMs` (a hung process keeps
 * its socket open but answers nothing). A draining node answers NOT_SERVING.
 */
export function healthStatus(client: StageServiceClient, timeoutMs: number): Promise<HealthStatus> {
  return new Promise((resolve) => {
    // HealthCheckRequest { service: "" } encodes as zero bytes; the response is field 1, the
    // status enum (a varint): absent for UNKNOWN, 08 01 for SERVING, 08 02 for NOT_SERVING.
    client.makeUnaryRequest('/grpc.health.v1.Health/Check', () => Buffer.alloc(0), (b: Buffer) => b, {}, { deadline: new Date(Date.now() + timeoutMs) },
      (err: grpc.ServiceError | null, b?: Buffer) => {
        if (err) { resolve('unreachable'); return; }
        const status = b && b.length >= 2 && b[0] === 0x08 ? b[1] : 0;
        resolve(status === 1 ? 'SERVING' : status === 2 ? 'NOT_SERVING' : 'UNKNOWN');
      });
  });
}

/** Whether the node answers its health check with SERVING (false for a draining, hung or dead one). */
export async function healthy(client: StageServiceClient, timeoutMs: number): Promise<boolean> {
  return (await healthStatus(client, timeoutMs)) === 'SERVING';
}

/** Resolves when the client's channel is connected, or rejects naming the node. */
export function waitForReady(client: StageServiceClient, address: string, timeoutMs: number, stage?: number): Promise<void> {
  return new Promise((resolve, reject) => {
    client.waitForReady(new Date(Date.now() + timeoutMs), (err) => {
      if (err) reject(new GrpcError('NODE_UNREACHABLE', `gRPC node ${address}${stage !== undefined ? ` (stage ${stage})` : ''} is unreachable: no connection within ${timeoutMs / 1000} s (${err.message}); is \`chainrule node\` running there?`));
      else resolve();
    });
  });
}

/**
 * A PeerLink on one long-lived bidirectional stream to a neighbour's node: each message
 * carries an id and resolves when the neighbour acknowledges it (accepted into its inbox).
 * A message unacknowledged after the deadline fails naming the node; a broken stream fails
 * everything pending and is reopened on the next send.
 */
export class StreamLink {
  private stream: grpc.ClientDuplexStream<Envelope, Envelope__Output> | null = null;
  private pending = new Map<number, { resolve: () => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  private nextId = 1;
  private readonly frames = new FramePool();

  /** `metadata` opens every stream (the run's bearer token). */
  constructor(private readonly client: StageServiceClient, private readonly address: string, private readonly deadlineMs: number, private readonly metadata: grpc.Metadata = new grpc.Metadata()) {}

  send(msg: Message & { stage?: number }): Promise<void> {
    const s = this.open();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new GrpcError('DEADLINE_EXCEEDED', `gRPC node ${this.address}: ${msg.type} for stage ${msg.stage}: not acknowledged within ${this.deadlineMs / 1000} s`));
      }, this.deadlineMs);
      this.pending.set(id, { resolve, reject, timer });
      try {
        const framed = envelopeFrame(msg, id, this.frames);
        s.write(framed, () => this.frames.give(framed.frame));
      } catch (e) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(new GrpcError('NODE_UNREACHABLE', `gRPC node ${this.address}: cannot send the ${msg.type} for stage ${msg.stage} (${(e as Error).message})`));
      }
    });
  }

  private open(): grpc.ClientDuplexStream<Envelope, Envelope__Output> {
    if (this.stream) return this.stream;
    const s = this.client.DeliverStream(this.metadata);
    s.on('data', (env: Envelope__Output) => {
      const p = this.pending.get(env.id);
      if (!p) return;
      this.pending.delete(env.id);
      clearTimeout(p.timer);
      try {
        const reply = decodeEnvelope(env, { actor: `acknowledgement from gRPC node ${this.address}` });
        if (reply.type === 'error') p.reject(new GrpcError(reply.code, reply.message));
        else p.resolve();
      } catch (e) {
        p.reject(e as Error);
      }
    });
    const fail = (code: string, why: string) => {
      if (this.stream === s) this.stream = null;
      for (const [id, p] of this.pending) {
        clearTimeout(p.timer);
        p.reject(new GrpcError(code, `gRPC node ${this.address}: delivery stream broke (${why})`));
        this.pending.delete(id);
      }
    };
    s.on('error', (e: grpc.ServiceError) => {
      const code = e.code === grpc.status.UNAUTHENTICATED || e.code === grpc.status.PERMISSION_DENIED ? grpc.status[e.code] : 'NODE_UNREACHABLE';
      fail(code, `${grpc.status[e.code] ?? 'error'}: ${e.details ?? e.message}`);
    });
    s.on('end', () => fail('NODE_UNREACHABLE', 'the node ended it'));
    this.stream = s;
    return s;
  }

  /** Ends the stream; a send still unacknowledged fails now, its deadline timer cleared. */
  close(): void {
    this.stream?.end();
    this.stream = null;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new GrpcError('LINK_CLOSED', `gRPC node ${this.address}: the link was closed before the neighbour acknowledged a delivery`));
      this.pending.delete(id);
    }
  }
}
