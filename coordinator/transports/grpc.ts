/**
 * Actors on gRPC nodes (`chainrule node`): actor a (replica-major: a = r·K + k) runs on node
 * a mod N. One client per node, reused; every call has a deadline; neighbours and replica
 * peers are told each other's addresses and exchange activations, gradients and gradient
 * shares node to node.
 */
import type { StageServiceClient } from '../../node/grpc-common.js';
import { healthy, makeClient, unary, waitForReady } from '../../node/grpc-common.js';
import type { Reply, Request } from '../../src/wire/index.js';
import { TransportError, actorName, type ActorLayout, type StageHandle, type Transport } from './transport.js';

export interface GrpcTransportOptions {
  /** Deadline of each request (default 10 min: a full-batch step can be long). */
  deadlineMs?: number;
  /** How long to wait for a node to accept the connection (default 5 s). */
  connectTimeoutMs?: number;
}

const ADDRESS = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/;

export class GrpcTransport implements Transport {
  readonly kind = 'grpc';
  private clients = new Map<string, StageServiceClient>();
  private opened: { run: string; layout: ActorLayout } | null = null;

  constructor(readonly nodes: string[], private readonly opts: GrpcTransportOptions = {}) {
    if (nodes.length === 0) throw new TransportError('NO_NODES', 'the gRPC placement needs at least one node (host:port)');
    for (const k of ['deadlineMs', 'connectTimeoutMs'] as const) {
      const v = opts[k];
      if (v !== undefined && !(Number.isFinite(v) && v > 0)) throw new TransportError('BAD_OPTION', `options.${k} must be a positive number of milliseconds, got ${JSON.stringify(v)}`);
    }
    for (const n of nodes) {
      const m = ADDRESS.exec(n);
      if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) throw new TransportError('BAD_NODE', `gRPC node '${n}' is not host:port with a port in 1..65535`);
    }
  }

  private nodeOf(actor: number): string { return this.nodes[actor % this.nodes.length]!; }

  private client(address: string): StageServiceClient {
    let c = this.clients.get(address);
    if (!c) {
      c = makeClient(address);
      this.clients.set(address, c);
    }
    return c;
  }

  async open(layout: ActorLayout, run: string): Promise<StageHandle[]> {
    const { replicas, stages } = layout;
    const n = replicas * stages;
    const connect = this.opts.connectTimeoutMs ?? 5_000;
    const used = [...new Set(Array.from({ length: n }, (_, a) => this.nodeOf(a)))];
    try {
      await Promise.all(used.map((addr) => waitForReady(this.client(addr), addr, connect, Array.from({ length: n }, (_, a) => a).find((a) => this.nodeOf(a) === addr))));
    } catch (e) {
      await this.close();
      throw new TransportError('NODE_UNREACHABLE', (e as Error).message);
    }
    this.opened = { run, layout };
    const handles = Array.from({ length: n }, (_, a): StageHandle => {
      const address = this.nodeOf(a);
      return {
        name: `${actorName(a % stages, Math.floor(a / stages), replicas)} (grpc ${address})`,
        request: async (req: Request): Promise<Reply> => {
          try {
            return (await unary(this.client(address), address, 'Call', req, this.opts.deadlineMs ?? 600_000)) as Reply;
          } catch (e) {
            throw new TransportError((e as { code?: string }).code ?? 'GRPC_FAILED', (e as Error).message);
          }
        },
      };
    });
    // Tell each actor where its neighbours and peers live, so messages go node to node.
    const at = (r: number, k: number) => ({ address: this.nodeOf(r * stages + k), stage: k, replica: r });
    await Promise.all(handles.map(async (h, a) => {
      const [r, k] = [Math.floor(a / stages), a % stages];
      const reply = await h.request({
        type: 'connect', run, stage: k, replica: r, step: 0, microBatch: -1,
        prev: k > 0 ? at(r, k - 1) : undefined,
        next: k + 1 < stages ? at(r, k + 1) : undefined,
        peers: replicas > 1 ? Array.from({ length: replicas }, (_, q) => (q === r ? null : at(q, k))) : undefined,
      });
      if (reply.type === 'error') throw new TransportError(reply.code, reply.message);
    }));
    return handles;
  }

  async probe(timeoutMs: number): Promise<string[]> {
    const o = this.opened;
    if (!o) return [];
    const used = [...new Set(Array.from({ length: o.layout.replicas * o.layout.stages }, (_, a) => this.nodeOf(a)))];
    const alive = await Promise.all(used.map((a) => healthy(this.client(a), timeoutMs)));
    return used.filter((_, i) => !alive[i]);
  }

  async close(): Promise<void> {
    const o = this.opened;
    this.opened = null;
    if (o) {
      // Best effort: let the nodes drop this run's actors.
      const { replicas, stages } = o.layout;
      await Promise.allSettled(Array.from({ length: replicas * stages }, (_, a) =>
        unary(this.client(this.nodeOf(a)), this.nodeOf(a), 'Call', { type: 'shutdown', run: o.run, stage: a % stages, replica: Math.floor(a / stages), step: 0, microBatch: -1 }, 2_000)));
    }
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}
