/**
 * One interface for every placement of stage actors: in-process, worker threads, gRPC nodes.
 * A Transport opens a handle per stage it hosts and links neighbouring stages so that
 * activations and gradients flow between them directly, never through the coordinator.
 */
import { ChainruleError } from '../../src/errors.js';
import type { Reply, Request } from '../../src/wire/index.js';

export interface StageHandle {
  /** For messages: `stage 1 (threads)`, `stage 0 (grpc 127.0.0.1:7001)`. */
  readonly name: string;
  request(req: Request): Promise<Reply>;
}

export interface Transport {
  readonly kind: string;
  /** Starts the actors for stages [0, stages) of this run, linked in a chain. */
  open(stages: number, run: string): Promise<StageHandle[]>;
  /** Stops everything this transport started (idempotent). */
  close(): Promise<void>;
}

export class TransportError extends ChainruleError {
  constructor(code: string, message: string) {
    super(code, message);
  }
}
