/**
 * The one message union every transport carries (in-process, worker threads, gRPC).
 * Every message names its run, stage and step (and micro-batch where it has one), so a
 * duplicate (a retried gRPC call, say) is recognized and applied once.
 */
import { ChainruleError } from '../errors.js';
import type { Tensor } from '../tensor/tensor.js';
import type { NonFiniteReport } from './nonfinite.js';

/**
 * Where a message belongs: the actor (stage of a replica) it is addressed to, its step, and
 * its micro-batch (-1 when the message is for the whole step). `replica` is 0 without data parallelism.
 */
export interface Header { run: string; stage: number; replica?: number; step: number; microBatch: number }

export type Targets = Int32Array | Tensor;
export type NamedTensors = Record<string, Tensor>;

export interface StageConfig {
  /** The whole model's spec (JSON); the stage builds layers [start, end). */
  model: { inputShape: number[]; layers: { type: string; [k: string]: unknown }[]; loss?: string; autoencoder?: boolean };
  start: number;
  end: number;
  seed: number;
  /** Data-parallel replicas of the pipeline: this stage reduces its gradients with its R−1 peers. */
  replicas?: number;
  /** Most micro-batches whose tapes (and inbound messages) a stage holds at once. */
  capacity: number;
  /** The kernel backend every stage must use, so that all placements compute bit-identically. */
  backend?: string;
  /** Threads each large product of this stage is split among (native backend; the bits do not change). */
  kernelThreads?: number;
  /**
   * kernelThreads is the most (absent: the node's cap, its host's cores): the first steps
   * measure whether they pay, else one (node/kernel-tuner.ts).
   */
  tuneKernelThreads?: boolean;
}

export interface OptimizerStepArgs {
  optimizer: { type: string; lr: number; [k: string]: number | string | boolean };
  lr: number;
  /** Multiplies the summed gradients before the update (1/batch size: the one scaling). */
  gradScale: number;
}

/** The most steps one runSteps may carry. */
export const MAX_STEPS_PER_REQUEST = 256;

/** What one step asks of an actor (a runStep, or one of a runSteps' steps). */
export interface StepWork { actions: string[]; inputs?: Tensor[]; targets?: Targets[]; optimize?: OptimizerStepArgs; commit?: 'whole' | 'share' }

/** A neighbour's address, for transports where stages talk to each other by address. */
export interface PeerAddress { address: string; stage: number; replica?: number }

export type Request =
  | (Header & { type: 'configure'; config: StageConfig; params?: NamedTensors })
  /** gRPC nodes only: where this actor's neighbours and replica peers (by replica index; null for itself) live. */
  /** `device`: with virtual stages, the device (of this replica) whose stages on this node take turns together. */
  | (Header & { type: 'connect'; prev?: PeerAddress; next?: PeerAddress; peers?: (PeerAddress | null)[]; device?: number })
  /**
   * `optimize`: apply this optimizer step right after the actions (saves a round trip).
   * `trace`: record this step's spans into the report (src/wire/trace.ts).
   * `commit`: first keep this actor's state as the recovery commit of this step (node/commit-store.ts):
   * all of it, or this replica's share of it (the replicas' shares together are the commit).
   */
  /**
   * `order`: with an interleaved schedule, the whole action list of the device this actor
   * shares with the other stages it hosts; each of `actions` (this stage's) waits its turn in it.
   */
  | (Header & { type: 'runStep' } & StepWork & { trace?: boolean; order?: string[] })
  /**
   * Several whole steps in one request (`steps[i]` is step `step + i`), run back to back, each
   * with its optimizer update: what the coordinator sends when nothing needs it between steps
   * (no clipping norm, no skip decision, no trace), so that short steps do not each pay a round trip.
   */
  | (Header & { type: 'runSteps'; steps: StepWork[] })
  | (Header & { type: 'forward'; x: Tensor; targets?: Targets })
  | (Header & { type: 'backward'; dy?: Tensor })
  | (Header & { type: 'gradients' })
  | (Header & { type: 'gradSquares' })
  | (Header & { type: 'getParams' })
  | (Header & { type: 'setParams'; params: NamedTensors })
  | (Header & { type: 'optimizerStep' } & OptimizerStepArgs)
  /**
   * The step is dropped on every actor (a NaN or infinity appeared somewhere, and the run skips
   * such steps): no optimizer update, and buffers (BatchNorm statistics) put back as they were before it.
   */
  | (Header & { type: 'skipStep' })
  | (Header & { type: 'getState' })
  /** The recovery commit of `step` this actor kept (a replica peer's copy, after a loss). */
  | (Header & { type: 'getCommit' })
  | (Header & { type: 'setState'; state: StageState })
  | (Header & { type: 'evaluate'; x: Tensor })
  | (Header & { type: 'shutdown' });

/** Stage to stage: an activation going forward or a gradient going back. */
export type PeerMessage =
  | (Header & { type: 'activation'; x: Tensor })
  | (Header & { type: 'gradient'; dx: Tensor })
  /**
   * Replica to replica, same stage: a share of the gradient. `scatter`: replica `from`'s
   * gradient over the receiver's chunk, to be summed; `gather`: chunk `from`, summed over every replica.
   */
  | (Header & { type: 'reduce'; phase: 'scatter' | 'gather'; from: number; g: Tensor });

export interface StageState {
  params: NamedTensors;
  buffers: NamedTensors;
  optimizer: { type: string; t: number; slots: Record<string, Record<string, Tensor>> } | null;
  lastStep: number;
}

export interface StepReport {
  /** Summed loss of each micro-batch (last stage only). */
  losses: number[];
  /** Milliseconds this stage spent computing (not waiting) in the step. */
  busyMs: number;
  /** Wall time of the step as this stage saw it. */
  wallMs: number;
  /** The kernel threads this actor runs on, when more than one (and, with tuneKernelThreads, once it has chosen). */
  kernelThreads?: number;
  /** Milliseconds the recovery commit took, when the runStep asked this actor to keep one. */
  commitMs?: number;
  /** Only when the runStep asked for a trace: [kind, microBatch, t0, t1] per span (src/wire/trace.ts). */
  trace?: number[];
  /** Only with `trace`: the actor's epoch clock when it took the request and when it replied (for clock offsets). */
  clock?: [number, number];
  /**
   * The earliest NaN or infinity this actor met in the step (src/wire/nonfinite.ts). It then
   * sent zeros in its place, so that its neighbours finish the step, and applied no update.
   */
  nonFinite?: NonFiniteReport;
}

export type Reply =
  | { type: 'ok' }
  | { type: 'configured'; parameterCount: number; inputShape: number[]; outputShape: number[] }
  | { type: 'stepDone'; report: StepReport }
  /** A runSteps' reports, one per step in order. */
  | { type: 'stepsDone'; reports: StepReport[] }
  | { type: 'activations'; y: Tensor; loss?: number }
  | { type: 'inputGradient'; dx: Tensor | null }
  | { type: 'tensors'; tensors: NamedTensors }
  | { type: 'value'; value: number }
  | { type: 'state'; state: StageState }
  | { type: 'error'; code: string; message: string };

export type Message = Request | PeerMessage | Reply;

export const requestTypes = [
  'configure', 'connect', 'runStep', 'runSteps', 'forward', 'backward', 'gradients', 'gradSquares', 'getParams', 'setParams',
  'optimizerStep', 'skipStep', 'getState', 'getCommit', 'setState', 'evaluate', 'shutdown',
] as const;
export const peerTypes = ['activation', 'gradient', 'reduce'] as const;

/** An error that crossed a transport: it keeps the remote code and names the actor. */
export class RemoteError extends ChainruleError {
  constructor(code: string, message: string, user = true) {
    super(code, message, { user });
  }
}

/** Unwraps a reply of the expected type, rethrowing a remote error. */
export function expectReply<T extends Reply['type']>(reply: Reply, type: T, where: string): Extract<Reply, { type: T }> {
  if (reply.type === 'error') throw new RemoteError(reply.code, reply.message);
  if (reply.type !== type) throw new RemoteError('BAD_REPLY', `${where}: expected a '${type}' reply, got '${reply.type}'`);
  return reply as Extract<Reply, { type: T }>;
}
