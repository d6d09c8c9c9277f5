/**
 * A discrete-event simulator of threads that compute and message each other, for
 * `chainrule plan`: each program (an actor, the coordinator) runs as a generator of commands
 * on a thread; threads live on hosts and share the hosts' cores (processor sharing: n busy
 * threads on c cores each run at min(1, c/n) of full speed); messages cost CPU at both ends
 * and a delay between (with a host's outgoing bandwidth shared in FIFO order).
 *
 * It knows nothing of pipelines: plan.ts writes the programs.
 */
import { ChainruleError } from '../src/errors.js';

/** What a message costs: CPU at the sender (encoding), delay on the way, CPU at the receiver (decoding). */
export interface MessageCost {
  /** Milliseconds of the sender's CPU before the message leaves. */
  senderMs: number;
  /** Milliseconds between leaving and arriving (latency, and bytes over bandwidth when no egress is given). */
  delayMs: number;
  /** Milliseconds of the receiver's CPU (in its event loop) before the message is delivered. */
  receiverMs: number;
  /** When the message crosses a network link: the sending host's outgoing queue and its time on it. */
  egress?: { host: number; ms: number };
  /** Delay of the acknowledgement back to the sender (default: delayMs without the egress time). */
  ackDelayMs?: number;
}

export type Command =
  /** Compute for `ms` at full speed on this program's thread. */
  | { work: number }
  /** Block until every signal named is set. */
  | { wait: string[] }
  /** Set a signal now (shared memory: no message). */
  | { signal: string }
  /** Send a message: the sender's CPU first, then on its way; `signal` is set when the receiver has decoded it; `ack` back at the sender after. */
  | { send: { to: string; signal: string; cost: MessageCost; ack?: string } }
  /** Let this thread's event loop run what has arrived before going on (a setImmediate). */
  | { yieldIo: true }
  /** Record the time under `name` (read back in `marks`). */
  | { mark: string };

export interface ProgramSpec {
  name: string;
  thread: string;
  body: Generator<Command, void, void>;
}

export interface ThreadSpec { name: string; host: number }

export interface SimulationInput {
  /** Cores per host, by host index. */
  cores: number[];
  /**
   * Memory contention: each further thread computing at once on a host slows every one by this
   * fraction (0.1: two busy threads each run at 1/1.1 of their speed alone). Default 0.
   */
  contention?: number;
  threads: ThreadSpec[];
  programs: ProgramSpec[];
}

export interface ProgramResult {
  /** Time each mark was recorded, in order, by name. */
  marks: Record<string, number[]>;
  /** When the program returned. */
  endMs: number;
}

export interface DesResult {
  /** When the last program returned. */
  makespanMs: number;
  programs: Record<string, ProgramResult>;
  /** CPU milliseconds each thread ran (at full-speed equivalents). */
  threadWorkMs: Record<string, number>;
}

export class SimulationError extends ChainruleError {
  constructor(message: string) {
    super('PLAN_SIMULATION', message, { user: false });
  }
}

interface Job { remaining: number; done: () => void }

interface Program {
  name: string;
  thread: Thread;
  body: Generator<Command, void, void>;
  waiting: string[] | null;
  /** Waits for the io jobs queued before it yielded. */
  yieldedAt: number | null;
  finished: boolean;
  result: ProgramResult;
}

interface Thread {
  name: string;
  host: number;
  programs: Program[];
  io: { job: Job; seq: number }[];
  running: Job | null;
  work: number;
  /** Round-robin position among this thread's programs. */
  turn: number;
}

const EPS = 1e-9;

/**
 * Runs the programs to completion and returns when each mark happened.
 * @example
 * simulate({ cores: [1], threads: [{ name: 't', host: 0 }],
 *   programs: [{ name: 'p', thread: 't', body: (function* () { yield { work: 2 }; })() }] }).makespanMs // 2
 * @throws SimulationError when programs wait for signals nobody sets (a deadlock).
 */
export function simulate(input: SimulationInput): DesResult {
  const threads = new Map<string, Thread>();
  for (const t of input.threads) {
    if (!(t.host >= 0 && t.host < input.cores.length)) throw new SimulationError(`thread ${t.name}: host ${t.host} has no core count`);
    threads.set(t.name, { name: t.name, host: t.host, programs: [], io: [], running: null, work: 0, turn: 0 });
  }
  const programs = new Map<string, Program>();
  for (const p of input.programs) {
    const thread = threads.get(p.thread);
    if (!thread) throw new SimulationError(`program ${p.name}: no thread ${p.thread}`);
    const prog: Program = { name: p.name, thread, body: p.body, waiting: null, yieldedAt: null, finished: false, result: { marks: {}, endMs: NaN } };
    thread.programs.push(prog);
    programs.set(p.name, prog);
  }
  const signals = new Set<string>();
  /** Timed events (message arrivals, acknowledgements), kept sorted by time then insertion. */
  const events: { at: number; seq: number; fire: () => void }[] = [];
  const egressFree = new Map<number, number>();
  let seq = 0;
  let now = 0;
  /** Set whenever a program consumes a command: a signal it set may let another go on. */
  let progressed = false;

  const at = (time: number, fire: () => void) => {
    const e = { at: time, seq: seq++, fire };
    let i = events.length;
    while (i > 0 && (events[i - 1]!.at > e.at || (events[i - 1]!.at === e.at && events[i - 1]!.seq > e.seq))) i--;
    events.splice(i, 0, e);
  };
  const set = (name: string) => { signals.add(name); };

  const send = (from: Program, msg: { to: string; signal: string; cost: MessageCost; ack?: string }) => {
    const target = programs.get(msg.to);
    if (!target) throw new SimulationError(`${from.name} sends to ${msg.to}, which is no program`);
    const { cost } = msg;
    let leaves = now;
    if (cost.egress) {
      const start = Math.max(now, egressFree.get(cost.egress.host) ?? 0);
      leaves = start + cost.egress.ms;
      egressFree.set(cost.egress.host, leaves);
    }
    at(leaves + cost.delayMs, () => {
      const deliver = () => {
        set(msg.signal);
        if (msg.ack) { const ack = msg.ack; at(now + (cost.ackDelayMs ?? cost.delayMs), () => set(ack)); }
      };
      if (cost.receiverMs <= EPS) deliver();
      else target.thread.io.push({ job: { remaining: cost.receiverMs, done: deliver }, seq: seq++ });
    });
  };

  /** Runs a program's instantaneous commands; returns a job when it starts computing, null when it blocks or ends. */
  const advance = (p: Program): Job | null => {
    for (;;) {
      if (p.waiting) {
        if (!p.waiting.every((s) => signals.has(s))) return null;
        p.waiting = null;
      }
      if (p.yieldedAt !== null) {
        if (p.thread.io.some((j) => j.seq < p.yieldedAt!)) return null;
        p.yieldedAt = null;
      }
      const next = p.body.next();
      progressed = true;
      if (next.done) {
        p.finished = true;
        p.result.endMs = now;
        return null;
      }
      const c = next.value;
      if ('work' in c) {
        if (!(c.work >= 0) || !Number.isFinite(c.work)) throw new SimulationError(`${p.name}: work of ${c.work} ms`);
        if (c.work > EPS) return { remaining: c.work, done: () => {} };
      } else if ('wait' in c) {
        p.waiting = c.wait;
      } else if ('signal' in c) {
        set(c.signal);
      } else if ('send' in c) {
        const s = c.send;
        if (s.cost.senderMs > EPS) {
          // The encoding holds the thread; the message leaves when it is done.
          return { remaining: s.cost.senderMs, done: () => send(p, s) };
        }
        send(p, s);
      } else if ('yieldIo' in c) {
        p.yieldedAt = seq;
      } else if ('mark' in c) {
        (p.result.marks[c.mark] ??= []).push(now);
      }
    }
  };

  /** Gives a free thread its next job: a runnable program first (it holds the thread until it blocks), else what arrived. */
  const dispatch = (t: Thread): boolean => {
    if (t.running) return false;
    const n = t.programs.length;
    for (let i = 0; i < n; i++) {
      const p = t.programs[(t.turn + i) % n]!;
      if (p.finished) continue;
      const job = advance(p);
      if (job) {
        t.turn = (t.turn + i) % n;
        t.running = job;
        return true;
      }
    }
    const io = t.io.shift();
    if (io) { t.running = io.job; return true; }
    return false;
  };

  const rates = () => {
    const busy = new Array<number>(input.cores.length).fill(0);
    for (const t of threads.values()) if (t.running) busy[t.host]!++;
    const x = input.contention ?? 0;
    return busy.map((b, h) => (b === 0 ? 1 : Math.min(1, input.cores[h]! / b) / (1 + x * (Math.min(b, input.cores[h]!) - 1))));
  };

  for (let guard = 0; ; guard++) {
    if (guard > 50_000_000) throw new SimulationError('simulation did not finish (too many events)');
    // Start whatever can start now; a job's end or a signal may let others start.
    let changed = true;
    while (changed) {
      changed = false;
      progressed = false;
      for (const t of threads.values()) if (dispatch(t)) changed = true;
      if (progressed) changed = true;
    }
    const rate = rates();
    let next = events.length > 0 ? events[0]!.at : Infinity;
    for (const t of threads.values()) if (t.running) next = Math.min(next, now + t.running.remaining / rate[t.host]!);
    if (next === Infinity) break;
    const dt = next - now;
    for (const t of threads.values()) {
      if (!t.running) continue;
      const r = rate[t.host]!;
      t.running.remaining -= dt * r;
      t.work += dt * r;
    }
    now = next;
    for (const t of threads.values()) {
      if (t.running && t.running.remaining <= EPS * Math.max(1, now)) {
        const job = t.running;
        t.running = null;
        job.done();
      }
    }
    while (events.length > 0 && events[0]!.at <= now + EPS) events.shift()!.fire();
  }
  const stuck = [...programs.values()].filter((p) => !p.finished);
  if (stuck.length > 0) {
    const what = stuck.slice(0, 4).map((p) => `${p.name} waits for ${(p.waiting ?? []).filter((s) => !signals.has(s)).join(', ') || 'its thread'}`).join('; ');
    throw new SimulationError(`simulation deadlocked at ${now.toFixed(3)} ms: ${what}${stuck.length > 4 ? ` (and ${stuck.length - 4} more)` : ''}`);
  }
  const result: DesResult = { makespanMs: now, programs: {}, threadWorkMs: {} };
  for (const p of programs.values()) result.programs[p.name] = p.result;
  for (const t of threads.values()) result.threadWorkMs[t.name] = t.work;
  return result;
}
