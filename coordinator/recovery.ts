/**
 * Surviving the loss of an actor. Every `commitEvery` steps a commit is taken (every stage's
 * parameters, buffers and optimizer slots: kept by the actors where their copies survive a
 * loss, else fetched by the coordinator) and the inputs of the steps since are kept. When a step fails because an actor is gone (a killed or hung
 * node, a crashed worker thread), it is noticed (a failed request, or a health probe every
 * 0.5 s while the step runs), the run is rebuilt with the lost host replaced (a spare, else
 * this process), restored from the commit, the logged steps are replayed and the failed one
 * is run again: every input of a step follows from its batch and step number, so the final
 * weights are those of an uninterrupted run.
 */
import type { StageState } from '../src/wire/index.js';
import type { MicroBatch, Targets } from '../src/data/index.js';
import { Tensor } from '../src/tensor/tensor.js';
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

/**
 * Where commits are kept. 'coordinator': every stage's state is fetched at each commit.
 * 'actors': the step's own runStep asks the actors to copy their state where they live
 * (node/commit-store.ts), and only after a loss is it read (`read`), from memory that
 * outlived the lost actor or from a surviving replica.
 */
export type CommitKeeping =
  | { where: 'coordinator'; state: () => Promise<StageState> }
  /** `how`: each actor keeps it whole, or its replica's share. */
  | { where: 'actors'; how: 'whole' | 'share'; state: () => Promise<StageState>; read: (step: number, lost: string[]) => Promise<StageState> };

/** With `commitEvery: 'auto'`, a fetched commit costs at most this share of the training time... */
export const AUTO_COMMIT_SHARE = 0.05;
/** ...and is taken at least this often (the most steps a recovery replays). */
export const AUTO_COMMIT_MAX_STEPS = 64;
/** Where the actors keep them (a copy in memory, no transfer): every this many steps (with several steps to a request, at the first request's start after them). */
export const AUTO_ACTOR_COMMIT_MAX_STEPS = 8;

export class Recovery {
  /** `state` null: kept by the actors, read after a loss. */
  private commit: { step: number; state: StageState | null } | null = null;
  /** The inputs of the steps since the commit. */
  private readonly log = new InputLog();
  /** How long the last fetched commit took, and the steps since it. */
  private lastTakeMs = 0;
  private stepMsSince = 0;
  readonly reports: RecoveryReport[] = [];

  /** `commitEvery`: steps between commits, or 'auto': as often as a commit costs AUTO_COMMIT_SHARE of the time. */
  constructor(private readonly commitEvery: number | 'auto', private readonly rebuild: Rebuild) {}

  /**
   * Runs the steps from `step` on (`steps`: each one's shards; `fn(commit)` runs them all, in one
   * request or one step at a time: with `commit`, the first step's request asks the actors to
   * keep a commit first, whole or each replica its share); on the loss of an actor, recovers and
   * runs them again. A loss while the commit after the steps is taken (the steps applied, the node gone before it was read back) is recovered
   * the same way: the replay runs these steps too, then the commit is taken. No commit falls
   * inside the steps: {@link maxSteps} says how many may go together.
   */
  async run<T>(step: number, steps: MicroBatch[][][], transport: () => Transport, fn: (commit?: 'whole' | 'share') => Promise<T>, keeping: () => CommitKeeping): Promise<T> {
    const keep = keeping();
    // The first commit comes from the coordinator in any case: no step has run to carry it.
    if (!this.commit) await this.take(step, keep.state);
    // The actors keep a commit at the start of its step; the coordinator takes one right
    // after the step before (below), so that nothing happening between steps can lose it.
    const byActors = keep.where === 'actors' && this.dueAt(step, 'actors') ? keep.how : undefined;
    const t0 = performance.now();
    let out: T;
    try {
      out = await watch(fn(byActors), transport());
    } catch (e) {
      await this.recover(e, step, t0, transport, keep);
      return this.run(step, steps, transport, fn, keeping);
    }
    if (byActors !== undefined) { this.commit = { step, state: null }; this.log.clear(); this.stepMsSince = 0; }
    this.log.push(...steps);
    this.stepMsSince += performance.now() - t0;
    const next = step + steps.length;
    if (keep.where === 'coordinator' && this.dueAt(next, 'coordinator')) {
      try {
        await this.take(next, keep.state);
      } catch (e) {
        await this.recover(e, step, t0, transport, keep);
        await this.take(next, keep.state);
      }
    }
    return out;
  }

  /**
   * How many steps from `step` on may go to the actors together: up to the next commit, which
   * must start a request (the actors keep it as their first step begins) or follow one (the
   * coordinator fetches it between requests). At least 1.
   */
  maxSteps(step: number, where: CommitKeeping['where']): number {
    if (this.commitEvery !== 'auto') return this.commitEvery - (step % this.commitEvery);
    const since = this.commit ? step - this.commit.step : 0;
    if (where === 'coordinator') return Math.max(1, AUTO_COMMIT_MAX_STEPS - since);
    // Where the actors keep them, a commit due now starts this request, however long (the
    // replay after a loss is then at most one request); otherwise the next falls due after the cap.
    return this.commit && this.dueAt(step, where) ? Infinity : Math.max(1, AUTO_ACTOR_COMMIT_MAX_STEPS - since);
  }

  /** Whether the commit before step `step` is due. */
  private dueAt(step: number, where: CommitKeeping['where']): boolean {
    const since = step - this.commit!.step;
    if (since <= 0) return false;
    if (this.commitEvery !== 'auto') return step % this.commitEvery === 0;
    // The actors' copy: every AUTO_ACTOR_COMMIT_MAX_STEPS steps. Taken as often as its timed
    // cost allowed (5%), it cost the wide MLP's thread replicas 5-10% (the copy's memory traffic
    // slows the replica beside it, which its own timing does not see): 6,638-7,390 samples/s
    // against 7,329-7,836 every 8 steps and 7,710-8,047 without commits.
    if (where === 'actors') return since >= AUTO_ACTOR_COMMIT_MAX_STEPS;
    // Fetched through the coordinator: once the steps since have run long enough that the last
    // commit's cost is at most its share of the time, and at least every AUTO_COMMIT_MAX_STEPS.
    return since >= AUTO_COMMIT_MAX_STEPS || this.lastTakeMs <= AUTO_COMMIT_SHARE * this.stepMsSince;
  }

  /**
   * Takes the commit a lost actor is rebuilt from (the state before step `step`), here; also
   * after a state is set between steps (early stopping's restore), which no earlier commit holds.
   */
  async take(step: number, state: () => Promise<StageState>): Promise<void> {
    const t0 = performance.now();
    this.commit = { step, state: await state() };
    this.log.clear();
    this.lastTakeMs = performance.now() - t0;
    this.stepMsSince = 0;
  }

  /** Rebuilds the run at the last commit and replays the logged steps; rethrows what is not the loss of an actor. */
  private async recover(e: unknown, step: number, t0: number, transport: () => Transport, keep: CommitKeeping): Promise<void> {
    if (!isActorLoss(e) || !this.commit) throw e;
    const detected = performance.now();
    const lost = (await transport().probe?.(1_000)) ?? [];
    const failed = lost.length > 0 ? `${lost.join(', ')}: ${(e as Error).message}` : (e as Error).message;
    if (this.commit.state === null) {
      if (keep.where !== 'actors') throw e;
      this.commit.state = await keep.read(this.commit.step, lost);
    }
    const commit = { step: this.commit.step, state: this.commit.state };
    const replacement = await this.rebuild.reopen(lost, commit);
    await this.rebuild.restore(commit.state, commit.step);
    for (const logged of this.log) await this.rebuild.replay(logged);
    this.reports.push({ failed, step, detectedMs: detected - t0, recoveryMs: performance.now() - detected, stepsReplayed: this.log.length, replacement });
  }
}

/**
 * The inputs of the steps since the last commit, as copies: the shards are views of the
 * caller's minibatch (pipeline.ts shardMinibatch), whose memory the caller may refill as soon
 * as step() returns, and a replay must see what the step saw. A commit clears the log and its
 * buffers hold the next steps' copies, so the log costs a copy per step, not memory for the
 * garbage collector to free.
 */
class InputLog {
  private steps: MicroBatch[][][] = [];
  /** Buffers of cleared copies, by type and length. */
  private readonly free = new Map<string, (Float32Array | Float64Array | Int32Array)[]>();

  get length(): number { return this.steps.length; }

  [Symbol.iterator](): Iterator<MicroBatch[][]> { return this.steps[Symbol.iterator](); }

  push(...steps: MicroBatch[][][]): void {
    for (const shards of steps) this.steps.push(shards.map((parts) => parts.map((p) => ({ x: this.copyTensor(p.x), y: this.copyTargets(p.y) }))));
  }

  clear(): void {
    for (const p of this.steps.flat(2)) {
      this.give(p.x.data);
      this.give(p.y instanceof Tensor ? p.y.data : p.y);
    }
    this.steps = [];
  }

  private copyTensor(t: Tensor): Tensor { return new Tensor(this.copy(t.data), [...t.shape]); }

  private copyTargets(y: Targets): Targets { return y instanceof Tensor ? this.copyTensor(y) : this.copy(y); }

  private copy<A extends Float32Array | Float64Array | Int32Array>(a: A): A {
    const out = (this.free.get(keyOf(a))?.pop() as A | undefined) ?? (new (a.constructor as new (n: number) => A)(a.length));
    out.set(a);
    return out;
  }

  private give(a: Float32Array | Float64Array | Int32Array): void {
    const k = keyOf(a);
    let list = this.free.get(k);
    if (!list) this.free.set(k, list = []);
    list.push(a);
  }
}

const keyOf = (a: Float32Array | Float64Array | Int32Array) => `${a.constructor.name}:${a.length}`;

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
