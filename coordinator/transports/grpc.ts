/**
 * Stages on gRPC nodes (`chainrule node`): stage i runs on node i mod N. One client per
 * node, reused; every call has a deadline; neighbours are told each other's addresses and
 * exchange activations and gradients node to node.
 */
import type { StageServiceClient } from '../../node/grpc-common.js';
import { makeClient, unary, waitForReady } from '../../node/grpc-common.js';
import type { Reply, Request } from '../../src/wire/index.js';
import { TransportError, type StageHandle, type Transport } from './transport.js';

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
  private opened: { run: string; stages: number } | null = null;

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

  private nodeOf(stage: number): string { return this.nodes[stage % this.nodes.length]!; }

  private client(address: string): StageServiceClient {
    let c = this.clients.get(address);
    if (!c) {
      c = makeClient(address);
      this.clients.set(address, c);
    }
    return c;
  }

  async open(stages: number, run: string): Promise<StageHandle[]> {
    const connect = this.opts.connectTimeoutMs ?? 5_000;
    const used = [...new Set(Array.from({ length: stages }, (_, i) => this.nodeOf(i)))];
    try {
      await Promise.all(used.map((a) => waitForReady(this.client(a), a, connect, Array.from({ length: stages }, (_, i) => i).find((i) => this.nodeOf(i) === a))));
    } catch (e) {
      await this.close();
      throw new TransportError('NODE_UNREACHABLE', (e as Error).message);
    }
    this.opened = { run, stages };
    const handles = Array.from({ length: stages }, (_, i): StageHandle => {
      const address = this.nodeOf(i);
      return {
        name: `stage ${i} (grpc ${address})`,
        request: async (req: Request): Promise<Reply> => {
          try {
            return (await unary(this.client(address), address, 'Call', req, this.opts.deadlineMs ?? 600_000)) as Reply;
          } catch (e) {
            throw new TransportError((e as { code?: string }).code ?? 'GRPC_FAILED', (e as Error).message);
          }
        },
      };
    });
    // Tell each stage where its neighbours live, so activations go node to node.
    await Promise.all(handles.map(async (h, i) => {
      const reply = await h.request({
        type: 'connect', run, stage: i, step: 0, microBatch: -1,
        prev: i > 0 ? { address: this.nodeOf(i - 1), stage: i - 1 } : undefined,
        next: i + 1 < stages ? { address: this.nodeOf(i + 1), stage: i + 1 } : undefined,
      });
      if (reply.type === 'error') throw new TransportError(reply.code, reply.message);
    }));
    return handles;
  }

  async close(): Promise<void> {
    const o = this.opened;
    this.opened = null;
    if (o) {
      // Best effort: let the nodes drop this run's actors.
      await Promise.allSettled(Array.from({ length: o.stages }, (_, i) =>
        unary(this.client(this.nodeOf(i)), this.nodeOf(i), 'Call', { type: 'shutdown', run: o.run, stage: i, step: 0, microBatch: -1 }, 2_000)));
    }
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}
