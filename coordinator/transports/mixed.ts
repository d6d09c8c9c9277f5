/**
 * A mixed placement: each stage where you choose, in this process, on a worker thread, or on
 * a gRPC node. Stages that are not on a remote node serve gRPC themselves (from this process
 * or from their worker thread), so every neighbour reaches every other by address, and the
 * run goes through the gRPC transport. They listen on loopback unless `advertise` names the
 * address by which nodes on other hosts reach this one (see own-stages.ts).
 *
 * @example
 * new Coordinator({ stages: 3, placement: new MixedTransport(['threads', 'threads', 'grpc:127.0.0.1:7001']) })
 * new MixedTransport(['threads', 'grpc:hostB:7001'], { advertise: 'hostA', tls: 'certs', tokenFile: 'certs/token' })
 */
import { Piscina } from 'piscina';
import type { RunningNode } from '../../node/server.js';
import type { WorkerTask } from '../../node/worker.js';
import { backend } from '../../src/tensor/backend.js';
import { GrpcTransport } from './grpc.js';
import { workerEntry } from './threads.js';
import { TransportError, type ActorLayout, type StageHandle, type Transport } from './transport.js';
import { advertised, hostOf, ownStages, startOwnNode, unreachableFrom, type OwnStages, type OwnStagesOptions } from './own-stages.js';

/** 'local', 'threads', or 'grpc:host:port'. */
export type StagePlace = string;

/**
 * `advertise`: this host's name or IP as the nodes reach it (needed when a node is on another
 * host); `tls`: a `chainrule certs` directory, whose coordinator files call the nodes and whose
 * node files serve this process's stages; `tokenFile`: the run's bearer token.
 */
export type MixedTransportOptions = OwnStagesOptions;

export class MixedTransport implements Transport {
  readonly kind = 'mixed';
  private pools: Piscina[] = [];
  private nodes: RunningNode[] = [];
  private grpc: GrpcTransport | null = null;
  private readonly own: OwnStages;

  /** @throws TransportError before anything starts: a bad place, or a node on another host without `advertise`. */
  constructor(readonly places: StagePlace[], opts: MixedTransportOptions = {}) {
    for (const [i, p] of places.entries()) {
      if (p !== 'local' && p !== 'threads' && !p.startsWith('grpc:')) {
        throw new TransportError('BAD_PLACEMENT', `stage ${i}: place '${p}' must be local, threads or grpc:host:port`);
      }
    }
    this.own = ownStages(opts, 'the mixed placement', places.some((p) => !p.startsWith('grpc:')));
    const remote = places.filter((p) => p.startsWith('grpc:')).map((p) => p.slice(5));
    const far = places.some((p) => !p.startsWith('grpc:')) ? unreachableFrom(this.own, remote) : undefined;
    if (far !== undefined) {
      throw new TransportError('NO_ADVERTISE', `the mixed placement: node ${far} is on another host, and this process's stages listen on 127.0.0.1, which it cannot reach`
        + `; pass advertise (--advertise HOST): the name or IP by which ${hostOf(far)} reaches this host, with tls (a \`chainrule certs\` directory naming HOST) and tokenFile`);
    }
  }

  /** `places` names each stage (repeated for every replica) or each actor (replica-major). */
  async open(layout: ActorLayout, run: string): Promise<StageHandle[]> {
    const { replicas, stages } = layout;
    if (this.places.length !== stages && this.places.length !== replicas * stages) {
      throw new TransportError('BAD_PLACEMENT', `the mixed placement names ${this.places.length} places; the run has ${stages} stages${replicas > 1 ? ` × ${replicas} replicas` : ''}`);
    }
    const { filename, execArgv } = workerEntry();
    const perActor = Array.from({ length: replicas * stages }, (_, a) => this.places[a % this.places.length]!);
    const addresses = await Promise.all(perActor.map(async (p) => {
      if (p.startsWith('grpc:')) return p.slice(5);
      if (p === 'local') {
        const { node, address } = await startOwnNode(this.own);
        this.nodes.push(node);
        return address;
      }
      // The worker must keep its event loop turning between tasks to serve gRPC: no Atomics.wait.
      const pool = new Piscina({ filename, execArgv, minThreads: 1, maxThreads: 1, idleTimeout: Infinity, atomics: 'disabled' });
      this.pools.push(pool);
      const task: WorkerTask = { kind: 'listen', backend: backend().name, host: this.own.host, tls: this.own.tls, tokenFile: this.own.tokenFile };
      return advertised(this.own, (await pool.run(task)) as string);
    }));
    this.grpc = new GrpcTransport(addresses, { tls: this.own.tls, tokenFile: this.own.tokenFile });
    return this.grpc.open(layout, run);
  }

  async close(): Promise<void> {
    await this.grpc?.close();
    this.grpc = null;
    await Promise.all(this.nodes.map((n) => n.close()));
    this.nodes = [];
    const pools = this.pools;
    this.pools = [];
    await Promise.all(pools.map((p) => p.destroy()));
  }
}
