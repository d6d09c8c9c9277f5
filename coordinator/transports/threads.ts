/**
 * Each actor on its own worker thread: one piscina pool per actor with exactly one thread
 * (a pool cannot pin a task to a worker, and an actor's state must stay in one), neighbours
 * and replica peers linked worker to worker by MessagePorts. With virtual stages (an
 * interleaved schedule) one thread per device instead, hosting its V chunks, which take
 * turns in the device's order; their links are per actor as ever.
 */
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createRequire } from 'node:module';
import { Piscina } from 'piscina';
import { decodeFromPort, encodeForPort, type Reply, type Request, type StageState } from '../../src/wire/index.js';
import { backend } from '../../src/tensor/backend.js';
import type { WorkerReply, WorkerTask } from '../../node/worker.js';
import { CommitStore } from '../../node/commit-store.js';
import { sharedReduceBuffer } from '../../node/shared-reduce.js';
import { TransportError, actorName, deviceOf, type ActorLayout, type StageHandle, type Transport } from './transport.js';

/** The worker entry: compiled JavaScript, or TypeScript through tsx when running from source (tests). */
export function workerEntry(): { filename: string; execArgv: string[] } {
  const fromSource = import.meta.url.endsWith('.ts');
  const url = new URL(`../../node/worker.${fromSource ? 'ts' : 'js'}`, import.meta.url);
  // tsx from this package, not from the working directory (which may be anywhere).
  return { filename: fileURLToPath(url), execArgv: fromSource ? ['--import', pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href] : [] };
}

export class ThreadsTransport implements Transport {
  readonly kind = 'threads';
  readonly hostsVirtualStages = true;
  /** One per device: per actor, or per V actors with virtual stages (replica-major). */
  private pools: Piscina[] = [];
  private failure: Error | null = null;
  /** Each actor's commit buffers (shared memory: readable after its thread is gone). */
  private commits: SharedArrayBuffer[][] = [];
  private layout: ActorLayout | null = null;

  async open({ replicas, stages, parameterCounts, virtualStages = 1 }: ActorLayout, _run?: string): Promise<StageHandle[]> {
    const { filename, execArgv } = workerEntry();
    this.failure = null;
    this.commits = [];
    this.layout = { replicas, stages, virtualStages };
    const n = replicas * stages;
    const devices = stages / virtualStages;
    // Actor a's pool: its own, or its device's (replica-major, devices 0..K-1 per replica).
    const poolOf = (a: number) => Math.floor(a / stages) * devices + deviceOf(a % stages, stages, virtualStages);
    const ports: { prev?: MessagePort; next?: MessagePort; peers: (MessagePort | undefined)[] }[] = Array.from({ length: n }, () => ({ peers: Array<MessagePort | undefined>(replicas).fill(undefined) }));
    for (let r = 0; r < replicas; r++) {
      for (let k = 0; k + 1 < stages; k++) {
        const c = new MessageChannel();
        ports[r * stages + k]!.next = c.port1;
        ports[r * stages + k + 1]!.prev = c.port2;
      }
    }
    for (let k = 0; k < stages; k++) {
      for (let r = 0; r < replicas; r++) {
        for (let q = r + 1; q < replicas; q++) {
          const c = new MessageChannel();
          ports[r * stages + k]!.peers[q] = c.port1;
          ports[q * stages + k]!.peers[r] = c.port2;
        }
      }
    }
    // Replicas of a stage reduce their gradients in one shared buffer (messages when the sizes are unknown).
    const shared = replicas > 1 && parameterCounts ? parameterCounts.map((count) => sharedReduceBuffer(replicas, count)) : null;
    for (let p = 0; p < replicas * devices; p++) {
      // A device's V actors each run a step at once (and may be asked more meanwhile).
      const pool = new Piscina({ filename, execArgv, minThreads: 1, maxThreads: 1, idleTimeout: Infinity, concurrentTasksPerWorker: 4 * virtualStages });
      pool.on('error', (e: Error) => { this.failure = e; });
      this.pools.push(pool);
    }
    const name = (a: number) => `${actorName(a % stages, Math.floor(a / stages), replicas)} (threads)`;
    const deviceName = (p: number) => `device ${p % devices}${replicas > 1 ? ` of replica ${Math.floor(p / devices)}` : ''} (threads)`;
    // The init task doubles as a warm-up: a worker module that fails to load fails here.
    await Promise.all(Array.from({ length: n }, (_, a) => {
      const { prev, next, peers } = ports[a]!;
      const task: WorkerTask = { kind: 'init', stage: a % stages, replica: Math.floor(a / stages), prev, next, peers, sharedReduce: shared?.[a % stages], backend: backend().name,
        ...(virtualStages > 1 ? { device: deviceName(poolOf(a)) } : {}) };
      return this.pools[poolOf(a)]!.run(task, { transferList: [prev, next, ...peers].filter((p) => p !== undefined) }).catch((e: Error) => {
        throw new TransportError('WORKER_FAILED', `${name(a)}: the worker failed to start: ${e.message}`);
      });
    }));
    // A worker that exits after its init took the actors' state with it; piscina would put a blank one in its place.
    for (const [p, pool] of this.pools.entries()) {
      pool.on('workerDestroy', () => { this.failure ??= new Error(`the worker thread of ${virtualStages > 1 ? deviceName(p) : name(p)} exited`); });
    }
    return Array.from({ length: n }, (_, a) => this.pools[poolOf(a)]!).map((pool, a) => ({
      name: name(a),
      request: async (req: Request): Promise<Reply> => {
        if (this.failure) throw new TransportError('WORKER_FAILED', `${name(a)}: ${this.failure.message}`);
        const { value, transfer } = encodeForPort(req);
        const task: WorkerTask = { kind: 'request', value };
        let out: unknown;
        try {
          const reply = (await pool.run(task, { transferList: transfer })) as WorkerReply;
          out = reply.value;
          if (reply.commits) this.commits[a] = reply.commits;
        } catch (e) {
          throw new TransportError('WORKER_FAILED', `${name(a)}: ${req.type} failed in the worker: ${(e as Error).message}`);
        }
        return decodeFromPort(out, { actor: `coordinator (reply from ${name(a)})` }) as Reply;
      },
    }));
  }

  /** The worker threads, one per actor (per device with virtual stages; replica-major): for diagnostics and fault tests. */
  get threads(): readonly (import('node:worker_threads').Worker | undefined)[] {
    return this.pools.map((p) => p.threads[0]);
  }

  async probe(): Promise<string[]> {
    if (this.failure) return [`a worker thread (${this.failure.message})`];
    return this.pools.flatMap((p, a) => (p.threads.length === 0 ? [`the worker thread of ${(this.layout?.virtualStages ?? 1) > 1 ? 'device' : 'actor'} ${a}`] : []));
  }

  /** Commits go to shared memory, which survives a thread; the replicas of a stage hold the same state, so each copies its share. */
  keepsCommits(): 'shares' { return 'shares'; }

  async keptCommit(step: number): Promise<StageState[]> {
    const { stages, replicas } = this.layout ?? { stages: 0, replicas: 1 };
    return Array.from({ length: stages }, (_, k) => CommitStore.read(Array.from({ length: replicas }, (_, r) => this.commits[r * stages + k] ?? []), step, `stage ${k} (threads)`));
  }

  async close(): Promise<void> {
    const pools = this.pools;
    this.pools = [];
    await Promise.all(pools.map((p) => p.destroy()));
  }
}
