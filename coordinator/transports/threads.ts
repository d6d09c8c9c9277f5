/**
 * Each stage on its own worker thread: one piscina pool per stage with exactly one
 * thread (a pool cannot pin a task to a worker, and a stage's state must stay in one),
 * neighbours linked worker to worker by MessagePorts.
 */
import { MessageChannel } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { decodeMessage, encodeMessage, type Reply, type Request } from '../../src/wire/index.js';
import { backend } from '../../src/tensor/backend.js';
import type { WorkerTask } from '../../node/worker.js';
import { TransportError, type StageHandle, type Transport } from './transport.js';

/** The worker entry: compiled JavaScript, or TypeScript through tsx when running from source (tests). */
export function workerEntry(): { filename: string; execArgv: string[] } {
  const fromSource = import.meta.url.endsWith('.ts');
  const url = new URL(`../../node/worker.${fromSource ? 'ts' : 'js'}`, import.meta.url);
  return { filename: fileURLToPath(url), execArgv: fromSource ? ['--import', 'tsx'] : [] };
}

export class ThreadsTransport implements Transport {
  readonly kind = 'threads';
  private pools: Piscina[] = [];
  private failure: Error | null = null;

  async open(stages: number): Promise<StageHandle[]> {
    const { filename, execArgv } = workerEntry();
    const channels = Array.from({ length: Math.max(0, stages - 1) }, () => new MessageChannel());
    for (let i = 0; i < stages; i++) {
      const pool = new Piscina({ filename, execArgv, minThreads: 1, maxThreads: 1, idleTimeout: Infinity, concurrentTasksPerWorker: 4 });
      pool.on('error', (e: Error) => { this.failure = e; });
      this.pools.push(pool);
    }
    // The init task doubles as a warm-up: a worker module that fails to load fails here.
    await Promise.all(this.pools.map((pool, i) => {
      const prev = i > 0 ? channels[i - 1]!.port2 : undefined;
      const next = i + 1 < stages ? channels[i]!.port1 : undefined;
      const task: WorkerTask = { kind: 'init', stage: i, prev, next, backend: backend().name };
      return pool.run(task, { transferList: [prev, next].filter((p) => p !== undefined) }).catch((e: Error) => {
        throw new TransportError('WORKER_FAILED', `stage ${i} (threads): the worker failed to start: ${e.message}`);
      });
    }));
    return this.pools.map((pool, i) => ({
      name: `stage ${i} (threads)`,
      request: async (req: Request): Promise<Reply> => {
        if (this.failure) throw new TransportError('WORKER_FAILED', `stage ${i} (threads): ${this.failure.message}`);
        const bytes = encodeMessage(req);
        const task: WorkerTask = { kind: 'request', bytes };
        let out: Uint8Array;
        try {
          out = await pool.run(task, { transferList: [bytes.buffer as ArrayBuffer] });
        } catch (e) {
          throw new TransportError('WORKER_FAILED', `stage ${i} (threads): ${req.type} failed in the worker: ${(e as Error).message}`);
        }
        return decodeMessage(out, { actor: `coordinator (reply from stage ${i})` }) as Reply;
      },
    }));
  }

  async close(): Promise<void> {
    const pools = this.pools;
    this.pools = [];
    await Promise.all(pools.map((p) => p.destroy()));
  }
}
