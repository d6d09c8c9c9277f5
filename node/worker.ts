/**
 * The worker-thread entry for piscina: one stage actor per worker (its pool has exactly
 * one thread, so the state stays here). Requests arrive as msgpackr bytes and are
 * answered as bytes; neighbours are reached over MessagePorts.
 */
import type { MessagePort } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { decodeFromPort, encodeForPort, type Reply, type Request } from '../src/wire/index.js';
import { selectBackend } from '../src/tensor/select.js';
import { StageActor } from './stage.js';
import { PortLink } from './port-link.js';
import { startNode, type RunningNode } from './server.js';

export type WorkerTask =
  | { kind: 'init'; stage: number; replica?: number; prev?: MessagePort; next?: MessagePort; peers?: (MessagePort | undefined)[]; sharedReduce?: SharedArrayBuffer; backend?: string }
  /** A request as encodeForPort's value (its tensors' buffers transferred, not copied). */
  | { kind: 'request'; value: unknown }
  /** Serve stages over gRPC from this thread (a mixed placement): answers host:port. */
  | { kind: 'listen'; host?: string; backend?: string; tls?: string; tokenFile?: string };

let actor: StageActor | null = null;
let node: RunningNode | null = null;

/**
 * A reply as encodeForPort's value, with the actor's commit buffers when they were
 * (re)allocated: the coordinator keeps the references (they outlive this thread).
 */
export type WorkerReply = { value: unknown; commits?: SharedArrayBuffer[] };

export default async function handle(task: WorkerTask): Promise<WorkerReply | string | object> {
  if (task.kind === 'listen') {
    selectBackend(task.backend);
    node ??= await startNode({ host: task.host ?? '127.0.0.1', port: 0, tls: task.tls, tokenFile: task.tokenFile });
    return node.address;
  }
  if (task.kind === 'init') {
    selectBackend(task.backend);
    const a = new StageActor(task.stage, task.replica ?? 0);
    if (task.prev) a.prev = new PortLink(task.prev, a);
    if (task.next) a.next = new PortLink(task.next, a);
    a.peers = (task.peers ?? []).map((p) => (p ? new PortLink(p, a) : null));
    a.sharedReduceBuffer = task.sharedReduce ?? null;
    actor = a;
    return `stage ${task.stage} ready`;
  }
  const a = actor;
  let reply: Reply;
  if (!a) {
    reply = { type: 'error', code: 'NOT_INITIALIZED', message: 'worker: stage actor not initialized' };
  } else {
    try {
      reply = await a.handle(decodeFromPort(task.value, { actor: a.name }) as Request);
    } catch (e) {
      // A bad message is answered with an error, and the actor keeps serving.
      reply = { type: 'error', code: (e as { code?: string }).code ?? 'BAD_MESSAGE', message: (e as Error).message };
    }
  }
  const { value, transfer } = encodeForPort(reply);
  const commits = a?.commits.takeNewBuffers();
  const out: WorkerReply = commits ? { value, commits } : { value };
  // Moved to the coordinator, not copied (piscina transfers what transferableSymbol lists).
  const movable = { [Piscina.transferableSymbol]: transfer, [Piscina.valueSymbol]: out };
  return Piscina.move(movable as unknown as Parameters<typeof Piscina.move>[0]) as object;
}
