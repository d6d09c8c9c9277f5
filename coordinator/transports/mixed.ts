/**
 * A mixed placement: each stage where you choose, in this process, on a worker thread, or on
 * a gRPC node. Stages that are not on a remote node serve gRPC themselves (from this process
 * or from their worker thread, on a loopback port), so every neighbour reaches every other by
 * address, and the run goes through the gRPC transport.
 *
 * @example
 * new Coordinator({ stages: 3, placement: new MixedTransport(['threads', 'threads', 'grpc:hostB:7001']) })
 */
import { Piscina } from 'piscina';
import { startNode, type RunningNode } from '../../node/server.js';
import type { WorkerTask } from '../../node/worker.js';
import { backend } from '../../src/tensor/backend.js';
import { GrpcTransport } from './grpc.js';
import { workerEntry } from './threads.js';
import { TransportError, type ActorLayout, type StageHandle, type Transport } from './transport.js';

/** 'local', 'threads', or 'grpc:host:port'. */
export type StagePlace = string;

export class MixedTransport implements Transport {
  readonly kind = 'mixed';
  private pools: Piscina[] = [];
  private nodes: RunningNode[] = [];
  private grpc: GrpcTransport | null = null;

  constructor(readonly places: StagePlace[]) {
    for (const [i, p] of places.entries()) {
      if (p !== 'local' && p !== 'threads' && !p.startsWith('grpc:')) {
        throw new TransportError('BAD_PLACEMENT', `stage ${i}: place '${p}' must be local, threads or grpc:host:port`);
      }
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
        const n = await startNode({ port: 0 });
        this.nodes.push(n);
        return n.address;
      }
      // The worker must keep its event loop turning between tasks to serve gRPC: no Atomics.wait.
      const pool = new Piscina({ filename, execArgv, minThreads: 1, maxThreads: 1, idleTimeout: Infinity, atomics: 'disabled' });
      this.pools.push(pool);
      const task: WorkerTask = { kind: 'listen', backend: backend().name };
      return (await pool.run(task)) as string;
    }));
    this.grpc = new GrpcTransport(addresses);
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
