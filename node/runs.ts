/**
 * The runs a node hosts. A run is opened by its coordinator's first `configure` or `connect`,
 * bound to the bearer token that opened it, and holds that run's stage actors and their links.
 * A node hosts at most `maxRuns` runs at a time (another coordinator is told the node is busy,
 * with which run and since when), and frees a run's actors when the run ends (`shutdown` of its
 * last actor) or when its coordinator has made no call for `timeoutMs`.
 *
 * @example
 * const runs = new RunTable({ maxRuns: 1, timeoutMs: 600_000 }, log, () => '127.0.0.1:7001');
 * const run = runs.open('run-3f…', tokenId, '10.0.0.9:51234');   // or throws NODE_BUSY
 */
import type { DeviceTurns } from './device-turns.js';
import { ChainruleError } from '../src/errors.js';
import type { NodeLog } from './log.js';
import type { PeerLink, StageActor } from './stage.js';
import { sameToken, type TokenId } from './tls.js';

export interface RunLimits {
  /** Runs hosted at once (default 1 from the CLI). */
  maxRuns: number;
  /** A run whose coordinator has made no call for this long is closed (default 10 min). */
  timeoutMs: number;
}

/** Run ids are printable and bounded: they appear in log lines and in every envelope. */
const RUN_ID = /^[\x21-\x7e]{1,128}$/;

export class Run {
  /** By `replica/stage`. */
  readonly actors = new Map<string, StageActor>();
  readonly since = Date.now();
  lastSeen = Date.now();
  /** Coordinator calls being served: a run is never timed out in the middle of one. */
  inFlight = 0;
  /** Actors this run has had here (for the log). */
  hosted = 0;
  /** With virtual stages: the turns of each device (`replica/device`) whose stages this node hosts. */
  readonly devices = new Map<string, DeviceTurns>();

  constructor(
    readonly id: string,
    /** The token's id when the node checks tokens (every later call must present the same). */
    readonly token: TokenId | null,
    /** The token as presented, passed on to neighbours (who may check it). */
    readonly bearer: string | null,
    readonly opener: string,
  ) {}
}

/** `run-3f9a1c2e…`: enough to tell runs apart in a message, not enough to address one. */
export const shortRun = (id: string) => (id.length > 12 ? `${id.slice(0, 12)}…` : id);

const ago = (ms: number) => (ms < 120_000 ? `${Math.round(ms / 1000)} s` : `${Math.round(ms / 60_000)} min`);

/** Closes an actor's links and frees what it holds; never throws. */
export async function releaseActor(actor: StageActor): Promise<void> {
  const links: (PeerLink | null)[] = [actor.prev, actor.next, ...actor.peers];
  actor.prev = null;
  actor.next = null;
  actor.peers = [];
  for (const l of links) {
    try { await l?.close?.(); } catch { /* already broken */ }
  }
  try { actor.release(); } catch { /* nothing more to free */ }
}

export class RunTable {
  private runs = new Map<string, Run>();
  /** Why recently closed runs ended, so that a late call is told (bounded). */
  private ended = new Map<string, string>();
  private timer: NodeJS.Timeout | null;

  constructor(readonly limits: RunLimits, private readonly log: NodeLog, private readonly where: () => string) {
    const every = Math.max(50, Math.min(limits.timeoutMs / 4, 30_000));
    this.timer = setInterval(() => this.sweep(), every);
    this.timer.unref();
  }

  get size(): number { return this.runs.size; }
  get(id: string): Run | undefined { return this.runs.get(id); }

  /**
   * The run, opened now if it is new.
   * @throws ChainruleError BAD_MESSAGE for a malformed run id, NODE_BUSY past `maxRuns`.
   */
  open(id: string, token: TokenId | null, bearer: string | null, peer: string): Run {
    const have = this.runs.get(id);
    if (have) return have;
    if (typeof id !== 'string' || !RUN_ID.test(id)) {
      throw new ChainruleError('BAD_MESSAGE', `node ${this.where()}: a run id must be 1 to 128 printable characters, got ${JSON.stringify(String(id).slice(0, 40))}`);
    }
    if (this.runs.size >= this.limits.maxRuns) {
      const now = Date.now();
      const others = [...this.runs.values()].map((r) => `run ${shortRun(r.id)} since ${new Date(r.since).toISOString()} (last call ${ago(now - r.lastSeen)} ago)`);
      const msg = `node ${this.where()} is busy: it hosts ${others.join(', ')} and takes at most ${this.limits.maxRuns} run${this.limits.maxRuns === 1 ? '' : 's'} at a time (--max-runs)`;
      this.log.line('refused', `${peer}: run ${shortRun(id)}: busy with ${others.join(', ')}`);
      throw new ChainruleError('NODE_BUSY', msg, { hint: `wait for that run to end (or for its coordinator to be silent past --run-timeout, ${ago(this.limits.timeoutMs)}), or start the node with a larger --max-runs` });
    }
    const run = new Run(id, token, bearer, peer);
    this.runs.set(id, run);
    this.ended.delete(id);
    this.log.line('run', `${shortRun(id)} opened by ${peer} (${this.runs.size} of ${this.limits.maxRuns === Infinity ? 'any number' : `at most ${this.limits.maxRuns}`})`);
    return run;
  }

  /** Every actor of every open run. */
  *actors(): IterableIterator<StageActor> {
    for (const r of this.runs.values()) yield* r.actors.values();
  }

  /** Whether an open run was opened with this token. */
  heldBy(token: TokenId): boolean {
    for (const r of this.runs.values()) if (r.token !== null && sameToken(r.token, token)) return true;
    return false;
  }

  /** Why a run that is not here any more went away, if it was here recently. */
  whyGone(id: string): string | undefined { return this.ended.get(id); }

  /** Ends a run: frees every actor it holds. */
  async end(run: Run, why: string): Promise<void> {
    if (this.runs.get(run.id) !== run) return;
    this.runs.delete(run.id);
    this.ended.set(run.id, why);
    if (this.ended.size > 256) this.ended.delete(this.ended.keys().next().value!);
    const actors = [...run.actors.values()];
    run.actors.clear();
    await Promise.all(actors.map(releaseActor));
    this.log.line('run', `${shortRun(run.id)} ${why}; it hosted ${run.hosted} actor${run.hosted === 1 ? '' : 's'} for ${ago(Date.now() - run.since)}`);
  }

  private sweep(): void {
    const now = Date.now();
    for (const run of [...this.runs.values()]) {
      if (run.inFlight === 0 && now - run.lastSeen > this.limits.timeoutMs) {
        void this.end(run, `closed: no call from its coordinator for ${ago(now - run.lastSeen)} (--run-timeout ${ago(this.limits.timeoutMs)})`);
      }
    }
  }

  /** Ends every run and stops the sweep. */
  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await Promise.all([...this.runs.values()].map((r) => this.end(r, 'closed: the node is shutting down')));
  }
}
