/**
 * The worker-thread entry for piscina: one stage actor per worker (its pool has exactly
 * one thread, so the state stays here), or, with an interleaved schedule, the V stage actors
 * of one device, which take turns in the device's order (one init per actor, each naming the
 * device). Requests arrive as encodeForPort values and are answered as such, each by the actor
 * it is addressed to; neighbours are reached over MessagePorts.
 */
import type { MessagePort } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { decodeFromPort, encodeForPort, type Reply, type Request } from '../src/wire/index.js';
import { selectBackend } from '../src/tensor/select.js';
import { StageActor } from './stage.js';
import { DeviceTurns } from './device-turns.js';
import { PortLink } from './port-link.js';
import { startNode, type RunningNode } from './server.js';

export type WorkerTask =
  /** `device`: this thread hosts several stages of one device (their turns are shared), named so. */
  | { kind: 'init'; stage: number; replica?: number; prev?: MessagePort; next?: MessagePort; peers?: (MessagePort | undefined)[]; sharedReduce?: SharedArrayBuffer; backend?: string; device?: string }
  /** A request as encodeForPort's value (its tensors' buffers transferred, not copied). */
  | { kind: 'request'; value: unknown }
  /** Serve stages over gRPC from this thread (a mixed placement): answers host:port. */
  | { kind: 'listen'; host?: string; backend?: string; tls?: string; tokenFile?: string };

/** The actors of this thread by `replica:stage` (one, or a device's V). */
const actors = new Map<string, StageActor>();
let turns: DeviceTurns | null = null;
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
    if (task.device !== undefined) a.turns = turns ??= new DeviceTurns(task.device);
    else actors.clear();
    actors.set(`${a.replica}:${a.index}`, a);
    return `stage ${task.stage} ready`;
  }
  let a: StageActor | undefined;
  let reply: Reply;
  if (actors.size === 0) {
    reply = { type: 'error', code: 'NOT_INITIALIZED', message: 'worker: stage actor not initialized' };
  } else {
    const only = actors.size === 1 ? actors.values().next().value! : undefined;
    try {
      const req = decodeFromPort(task.value, { actor: only?.name ?? turns?.name ?? 'worker' }) as Request;
      a = only ?? actors.get(`${req.replica ?? 0}:${req.stage}`);
      reply = a ? await a.handle(req)
        : { type: 'error', code: 'WRONG_STAGE', message: `${turns?.name ?? 'worker'}: received a ${req.type} for stage ${req.stage} of replica ${req.replica ?? 0}, which this thread does not host` };
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
