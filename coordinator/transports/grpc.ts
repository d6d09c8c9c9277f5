/**
 * Actors on gRPC nodes (`chainrule node`): actor a (replica-major: a = r·K + k) runs on node
 * a mod N; with virtual stages (K·V stages, V per device) device r·K + d runs there instead,
 * all of its V stages on one node, which has them take turns (the connect request's `device`). One client per node, reused; every call has a deadline; neighbours and replica
 * peers are told each other's addresses and exchange activations, gradients and gradient
 * shares node to node. With `tls` every channel is mutual TLS; with a token every call
 * carries `authorization: Bearer ...` (per-call metadata: call credentials do not compose
 * with plaintext channels, and the token must work over both).
 *
 * @example
 * new GrpcTransport(['hostA:7001', 'hostB:7001'], { tls: 'certs', tokenFile: 'certs/token' })
 */
import * as grpc from '@grpc/grpc-js';
import type { StageServiceClient } from '../../node/grpc-common.js';
import { healthy, makeClient, unary } from '../../node/grpc-common.js';
import { clientCredentials, diagnoseTls, loadTls, readToken, tokenMetadata, type TlsMaterial } from '../../node/tls.js';
import type { Reply, Request, StageState } from '../../src/wire/index.js';
import { TransportError, actorName, deviceOf, type ActorLayout, type StageHandle, type Transport } from './transport.js';

export interface GrpcTransportOptions {
  /** Deadline of each request (default 10 min: a full-batch step can be long). */
  deadlineMs?: number;
  /** How long to wait for a node to accept the connection (default 5 s). */
  connectTimeoutMs?: number;
  /** Mutual TLS with the files of this `chainrule certs` directory (ca.pem, coordinator.pem, coordinator-key.pem), or loaded ones. */
  tls?: string | TlsMaterial;
  /** The bearer token sent with every call, read from this file (one line). */
  tokenFile?: string;
  /** The bearer token itself (instead of tokenFile). */
  token?: string;
}

const ADDRESS = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/;

export class GrpcTransport implements Transport {
  readonly kind = 'grpc';
  readonly hostsVirtualStages = true;
  /** The layout being opened or open: where each actor goes. */
  private layout: ActorLayout | null = null;
  private clients = new Map<string, StageServiceClient>();
  private opened: { run: string; layout: ActorLayout } | null = null;
  private readonly tls: TlsMaterial | null;
  private readonly token: string | null;

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
    if (opts.token !== undefined && opts.tokenFile !== undefined) throw new TransportError('BAD_OPTION', 'options.token and options.tokenFile: give one');
    this.tls = typeof opts.tls === 'string' ? loadTls(opts.tls, 'coordinator') : opts.tls ?? null;
    this.token = opts.tokenFile !== undefined ? readToken(opts.tokenFile) : opts.token ?? null;
  }

  /** Names why a node could not be reached when TLS is the reason: "TLS handshake with node H:P failed: ...". */
  private async explain(e: unknown, address: string, stage?: number): Promise<TransportError> {
    const code = (e as { code?: string }).code ?? 'GRPC_FAILED';
    if (code === 'NODE_UNREACHABLE') {
      const why = await diagnoseTls(address, this.tls);
      if (why) return new TransportError('TLS_HANDSHAKE', `TLS handshake with node ${address}${stage !== undefined ? ` (stage ${stage})` : ''} failed: ${why}`);
    }
    return e instanceof TransportError ? e : new TransportError(code, (e as Error).message);
  }

  /**
   * Waits for the node's channel, but gives up at once, naming the cause, when a failed
   * connection attempt turns out to be a TLS problem (grpc-js would retry it until the
   * timeout). Watches in short slices rather than with grpc-js's waitForReady, whose deadline
   * timer outlives a closed channel and keeps the process alive after a refusal.
   */
  private ready(address: string, timeoutMs: number, stage: number): Promise<void> {
    const channel = this.client(address).getChannel();
    const deadline = Date.now() + timeoutMs;
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const fail = (e: TransportError) => { if (!settled) { settled = true; reject(e); } };
      const gone = () => fail(new TransportError('NODE_UNREACHABLE', `gRPC node ${address} (stage ${stage}): the connection was closed before it was ready`));
      const wait = (state: grpc.connectivityState) => {
        try {
          channel.watchConnectivityState(state, Math.min(deadline, Date.now() + 250), () => check());
        } catch {
          gone();
        }
      };
      const check = () => {
        if (settled) return;
        let state: grpc.connectivityState;
        try { state = channel.getConnectivityState(true); } catch { gone(); return; }
        if (state === grpc.connectivityState.READY) { settled = true; resolve(); return; }
        if (state === grpc.connectivityState.SHUTDOWN) { gone(); return; }
        if (Date.now() >= deadline) {
          const e = new TransportError('NODE_UNREACHABLE', `gRPC node ${address} (stage ${stage}) is unreachable: no connection within ${timeoutMs / 1000} s; is \`chainrule node\` running there?`);
          void this.explain(e, address, stage).then(fail);
          return;
        }
        if (state === grpc.connectivityState.TRANSIENT_FAILURE) {
          void diagnoseTls(address, this.tls).then((why) => {
            if (why) fail(new TransportError('TLS_HANDSHAKE', `TLS handshake with node ${address} (stage ${stage}) failed: ${why}`));
            else wait(state);
          });
          return;
        }
        wait(state);
      };
      check();
    });
  }

  private nodeOf(actor: number): string { return this.nodes[this.slotOf(actor) % this.nodes.length]!; }

  /** The actor's own index, or with virtual stages its device's (replica-major): the stages of a device share a node. */
  private slotOf(actor: number): number {
    const { stages, virtualStages = 1 } = this.layout ?? { stages: 1 };
    if (virtualStages === 1) return actor;
    return Math.floor(actor / stages) * (stages / virtualStages) + deviceOf(actor % stages, stages, virtualStages);
  }

  private client(address: string): StageServiceClient {
    let c = this.clients.get(address);
    if (!c) {
      c = makeClient(address, clientCredentials(this.tls));
      this.clients.set(address, c);
    }
    return c;
  }

  async open(layout: ActorLayout, run: string): Promise<StageHandle[]> {
    const { replicas, stages, virtualStages = 1 } = layout;
    this.layout = layout;
    const n = replicas * stages;
    const connect = this.opts.connectTimeoutMs ?? 5_000;
    const used = [...new Set(Array.from({ length: n }, (_, a) => this.nodeOf(a)))];
    const firstStage = (addr: string) => Array.from({ length: n }, (_, a) => a).find((a) => this.nodeOf(a) === addr)! % stages;
    const failures = (await Promise.allSettled(used.map((addr) => this.ready(addr, connect, firstStage(addr)))))
      .filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failures.length > 0) {
      await this.close();
      const e = failures[0]!.reason as TransportError;
      throw new TransportError(e.code === 'TLS_HANDSHAKE' ? e.code : 'NODE_UNREACHABLE', e.message);
    }
    this.opened = { run, layout };
    const handles = Array.from({ length: n }, (_, a): StageHandle => {
      const address = this.nodeOf(a);
      return {
        name: `${actorName(a % stages, Math.floor(a / stages), replicas)} (grpc ${address})`,
        request: async (req: Request): Promise<Reply> => {
          try {
            return (await unary(this.client(address), address, 'Call', req, this.opts.deadlineMs ?? 600_000, tokenMetadata(this.token))) as Reply;
          } catch (e) {
            throw await this.explain(e, address, req.stage);
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
        ...(virtualStages > 1 ? { device: deviceOf(k, stages, virtualStages) } : {}),
      });
      if (reply.type === 'error') throw new TransportError(reply.code, reply.message);
    }));
    return handles;
  }

  /** With replicas spread over several nodes, each keeps its commits and a lost one's stage is read from a surviving peer. */
  keepsCommits({ replicas, stages }: ActorLayout): 'copies' | null {
    if (replicas < 2) return null;
    for (let k = 0; k < stages; k++) {
      if (new Set(Array.from({ length: replicas }, (_, r) => this.nodeOf(r * stages + k))).size < 2) return null;
    }
    return 'copies';
  }

  async keptCommit(step: number, lost: readonly string[]): Promise<StageState[]> {
    const o = this.opened;
    if (!o) throw new TransportError('NOT_OPEN', 'the gRPC transport is not open');
    const { replicas, stages } = o.layout;
    return Promise.all(Array.from({ length: stages }, async (_, k) => {
      const tried: string[] = [];
      for (let r = 0; r < replicas; r++) {
        const address = this.nodeOf(r * stages + k);
        if (lost.includes(address)) continue;
        try {
          const reply = (await unary(this.client(address), address, 'Call', { type: 'getCommit', run: o.run, stage: k, replica: r, step, microBatch: -1 }, 5_000, tokenMetadata(this.token))) as Reply;
          if (reply.type === 'state') return reply.state;
          tried.push(`${address}: ${reply.type === 'error' ? reply.message : reply.type}`);
        } catch (e) {
          tried.push(`${address}: ${(e as Error).message}`);
        }
      }
      throw new TransportError('COMMIT_MISSING', `no surviving replica of stage ${k} holds the commit of step ${step}` +
        (tried.length > 0 ? ` (${tried.join('; ')})` : ` (every replica was on a lost node: ${lost.join(', ')})`));
    }));
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
        unary(this.client(this.nodeOf(a)), this.nodeOf(a), 'Call', { type: 'shutdown', run: o.run, stage: a % stages, replica: Math.floor(a / stages), step: 0, microBatch: -1 }, 2_000, tokenMetadata(this.token))));
    }
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}
