/**
 * Surviving the loss of an actor. Every `commitEvery` steps the coordinator takes a commit
 * (every stage's parameters, buffers and optimizer slots, merged by name) and keeps the
 * inputs of the steps since. When a step fails because an actor is gone (a killed or hung
 * node, a crashed worker thread), it is noticed (a failed request, or a health probe every
 * 0.5 s while the step runs), the run is rebuilt with the lost host replaced (a spare, else
 * this process), restored from the commit, the logged steps are replayed and the failed one
 * is run again: every input of a step follows from its batch and step number, so the final
 * weights are those of an uninterrupted run.
 */
import type { StageState } from '../src/wire/index.js';
import type { MicroBatch } from '../src/data/index.js';
import { ChainruleError } from '../src/errors.js';
import type { Transport } from './transports/index.js';

export interface RecoveryReport {
  /** What failed, in the words of the error or the probe. */
  failed: string;
  /** The step that was running. */
  step: number;
  /** From the step's start to the failure being noticed. */
  detectedMs: number;
  /** From the failure noticed to the run going on (rebuild, restore, replay). */
  recoveryMs: number;
  stepsReplayed: number;
  /** Where the lost actors went: a spare's address, or 'in-process'. */
  replacement: string;
}

/** An error that means an actor is gone (not a bad input): the run can go on without it. */
export function isActorLoss(e: unknown): boolean {
  const code = (e as { code?: unknown })?.code;
  return typeof code === 'string' && ['NODE_UNREACHABLE', 'NODE_DRAINING', 'WORKER_FAILED', 'DEADLINE_EXCEEDED', 'PEER_TIMEOUT', 'ACTOR_LOST', 'NOT_INITIALIZED', 'UNKNOWN_STAGE', 'GRPC_UNAVAILABLE', 'GRPC_CANCELLED'].includes(code);
}

export interface Rebuild {
  /** Replaces the lost hosts and reopens the run (a new run id); returns the replacement's name. `commit`: where the run can go on from. */
  reopen(lost: string[], commit: { step: number; state: StageState }): Promise<string>;
  /** Restores every actor from a commit. */
  restore(state: StageState, step: number): Promise<void>;
  /** Runs one logged step again (the same inputs, the same step number). */
  replay(parts: MicroBatch[][]): Promise<void>;
}

export class Recovery {
  private commit: { step: number; state: StageState } | null = null;
  private log: MicroBatch[][][] = [];
  readonly reports: RecoveryReport[] = [];

  constructor(private readonly commitEvery: number, private readonly rebuild: Rebuild) {}

  /** Takes the commit a lost actor is rebuilt from (after the step `step` - 1). */
  async take(step: number, state: () => Promise<StageState>): Promise<void> {
    this.commit = { step, state: await state() };
    this.log = [];
  }

  /**
   * Runs one step; on the loss of an actor, recovers and runs it again. A loss while the
   * commit after the step is taken (the step applied, the node gone before it was read back)
   * is recovered the same way: the replay runs this step too, then the commit is taken.
   */
  async run(step: number, parts: MicroBatch[][], transport: () => Transport, fn: () => Promise<number>, state: () => Promise<StageState>): Promise<number> {
    if (!this.commit) await this.take(step, state);
    const t0 = performance.now();
    let loss: number;
    try {
      loss = await watch(fn(), transport());
    } catch (e) {
      await this.recover(e, step, t0, transport);
      return this.run(step, parts, transport, fn, state);
    }
    this.log.push(parts);
    if ((step + 1) % this.commitEvery === 0) {
      try {
        await this.take(step + 1, state);
      } catch (e) {
        await this.recover(e, step, t0, transport);
        await this.take(step + 1, state);
      }
    }
    return loss;
  }

  /** Rebuilds the run at the last commit and replays the logged steps; rethrows what is not the loss of an actor. */
  private async recover(e: unknown, step: number, t0: number, transport: () => Transport): Promise<void> {
    if (!isActorLoss(e) || !this.commit) throw e;
    const detected = performance.now();
    const lost = (await transport().probe?.(1_000)) ?? [];
    const failed = lost.length > 0 ? `${lost.join(', ')}: ${(e as Error).message}` : (e as Error).message;
    const replacement = await this.rebuild.reopen(lost, this.commit);
    await this.rebuild.restore(this.commit.state, this.commit.step);
    for (const logged of this.log) await this.rebuild.replay(logged);
    this.reports.push({ failed, step, detectedMs: detected - t0, recoveryMs: performance.now() - detected, stepsReplayed: this.log.length, replacement });
  }
}

/** The step, or a rejection as soon as a probe finds a host that does not answer. */
async function watch<T>(step: Promise<T>, transport: Transport): Promise<T> {
  const probe = transport.probe?.bind(transport);
  if (!probe) return step;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const lost = new Promise<never>((_, reject) => {
    const tick = async () => {
      if (stopped) return;
      const down = await probe(1_000).catch(() => []);
      if (stopped) return;
      if (down.length > 0) reject(new ChainruleError('ACTOR_LOST', `no healthy answer from ${down.join(', ')} within 1 s (down, hung or draining)`, { user: false }));
      else timer = setTimeout(tick, 500);
    };
    timer = setTimeout(tick, 500);
  });
  try {
    return await Promise.race([step, lost]);
  } finally {
    stopped = true;
    clearTimeout(timer);
    step.catch(() => {}); // a step abandoned for a lost host fails later: nobody waits for it
  }
}
