/**
 * One interface for every placement of stage actors: in-process, worker threads, gRPC nodes.
 * A Transport opens a handle per stage it hosts and links neighbouring stages so that
 * activations and gradients flow between them directly, never through the coordinator.
 */
import { ChainruleError } from '../../src/errors.js';
import type { Reply, Request, StageState } from '../../src/wire/index.js';

export interface StageHandle {
  /** For messages: `stage 1 (threads)`, `stage 0 (grpc 127.0.0.1:7001)`. */
  readonly name: string;
  request(req: Request): Promise<Reply>;
}

/** R replicas of a K-stage pipeline: actor r·K + k is stage k of replica r. */
export interface ActorLayout {
  replicas: number;
  stages: number;
  /** Parameters (elements) per stage, when known: lets threads share gradient memory. */
  parameterCounts?: readonly number[];
  /**
   * Stages per device (interleaved schedules; default 1): the `stages` are then K·V chunks,
   * and device d of K (of each replica) hosts the chunks d, d+K, …, d+(V-1)K in one thread or
   * process, taking turns in the device's order (node/device-turns.ts).
   */
  virtualStages?: number;
}

/** The device (0..K-1) of stage `stage` when `stages` stages are spread over devices `virtualStages` to a device. */
export function deviceOf(stage: number, stages: number, virtualStages = 1): number {
  return stage % (stages / virtualStages);
}

/** `stage 1`, or `stage 1 of replica 0` with data parallelism: how errors name an actor. */
export function actorName(stage: number, replica: number, replicas: number): string {
  return replicas > 1 ? `stage ${stage} of replica ${replica}` : `stage ${stage}`;
}

export interface Transport {
  readonly kind: string;
  /**
   * Starts the R·K actors of this run (replica-major), each stage linked to its neighbours in
   * its replica and to the same stage of every other replica.
   */
  open(layout: ActorLayout, run: string): Promise<StageHandle[]>;
  /** Whether it can host several stages per device (`layout.virtualStages` > 1); absent: it cannot. */
  readonly hostsVirtualStages?: boolean;
  /** Stops everything this transport started (idempotent). */
  close(): Promise<void>;
  /**
   * The hosts of this run that are lost or do not answer within `timeoutMs` (a killed or hung
   * node, a crashed worker thread), by name; empty when all answer.
   */
  probe?(timeoutMs: number): Promise<string[]>;
  /**
   * Whether the actors keep the recovery commits themselves (node/commit-store.ts), so the
   * coordinator need not fetch every stage's state at each commit: 'shares' when what they
   * keep outlives a lost actor (threads: shared memory), each replica of a stage keeping its
   * share; 'copies' when every replica keeps it all and a lost actor's stage is read from a
   * surviving replica; null (or absent): the coordinator keeps them.
   */
  keepsCommits?(layout: ActorLayout): 'shares' | 'copies' | null;
  /** Each stage's commit of `step`, kept by the actors, read without the `lost` hosts. */
  keptCommit?(step: number, lost: readonly string[]): Promise<StageState[]>;
}

export class TransportError extends ChainruleError {
  constructor(code: string, message: string, hint?: string) {
    super(code, message, { hint });
  }
}
