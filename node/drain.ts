/**
 * Stopping a node without cutting work off (SIGTERM, SIGINT): the node reports NOT_SERVING on
 * its health service (so probes and coordinators stop sending it work), answers every new
 * call but `shutdown` with NODE_DRAINING ("node H:P is shutting down"), lets the calls in
 * flight finish and be answered (deliveries from neighbours are still taken: a step in flight
 * needs them), then ends its runs and shuts the server down, forcing it at the deadline.
 * One log line per phase.
 *
 * @example
 * const outcome = await node.drain('SIGTERM', 10_000);   // { clean: true, cutOff: 0, ms: 12 }
 */
import { ChainruleError } from '../src/errors.js';
import type { NodeLog } from './log.js';

/** Counts the calls being served and tells when none is left. */
export class InFlight {
  private n = 0;
  private waiters: (() => void)[] = [];

  get count(): number { return this.n; }

  enter(): void { this.n++; }

  leave(): void {
    if (--this.n > 0) return;
    this.n = 0;
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Resolves once no call is being served (at once if none is). */
  idle(): Promise<void> {
    return this.n === 0 ? Promise.resolve() : new Promise((resolve) => this.waiters.push(resolve));
  }
}

/** What the server lets a drain do. */
export interface DrainSteps {
  log: NodeLog;
  inFlight: InFlight;
  /** Health NOT_SERVING, and every new call but `shutdown` refused from now on. */
  stopServing(reason: string): void;
  /** Ends every run, freeing its actors. */
  closeRuns(): Promise<void>;
  /** Ends the server's side of the neighbours' delivery streams, which would hold tryShutdown open. */
  endStreams(): void;
  /** server.tryShutdown: resolves when every connection has closed. */
  tryShutdown(): Promise<void>;
  forceShutdown(): void;
}

export interface DrainOutcome {
  /** Every call in flight was answered before the deadline (connections still open then are closed by force either way). */
  clean: boolean;
  /** Calls still in flight at the deadline (cut off). */
  cutOff: number;
  ms: number;
}

/** The NODE_DRAINING refusal: the coordinator treats it as a lost node (a spare takes over). */
export function drainingError(address: string, reason: string): ChainruleError {
  return new ChainruleError('NODE_DRAINING', `node ${address} is shutting down (${reason}): it takes no new runs or calls`,
    { hint: 'use another node; a coordinator with --spares moves the run to one' });
}

/** How long idle clients get to hang up once nothing is in flight. */
const IDLE_CLIENTS_GRACE_MS = 1_000;

const after = (ms: number) => {
  let timer: NodeJS.Timeout | undefined;
  const p = new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), Math.max(0, ms)); });
  return { p, cancel: () => clearTimeout(timer) };
};

/** Drains and stops a node within `timeoutMs` (the calls in flight and the shutdown together). */
export async function drain(steps: DrainSteps, reason: string, timeoutMs: number): Promise<DrainOutcome> {
  const t0 = Date.now();
  const { log, inFlight } = steps;
  steps.stopServing(reason);
  const waiting = inFlight.count;
  log.line('draining', `${reason}: health NOT_SERVING, no new runs or calls; ${waiting} call${waiting === 1 ? '' : 's'} in flight, waiting for them up to ${timeoutMs / 1000} s (--drain-timeout)`);
  const deadline = after(timeoutMs);
  const settled = await Promise.race([inFlight.idle().then(() => 'idle' as const), deadline.p]);
  let cutOff = 0;
  if (settled === 'idle') {
    if (waiting > 0) log.line('draining', `the ${waiting === 1 ? 'call' : `${waiting} calls`} in flight answered after ${Date.now() - t0} ms`);
  } else {
    cutOff = inFlight.count;
    log.line('warning', `${cutOff} call${cutOff === 1 ? '' : 's'} still in flight after ${timeoutMs / 1000} s (--drain-timeout): cut off`);
  }
  await steps.closeRuns();
  steps.endStreams();
  // Every call is answered and every run ended: what tryShutdown still waits for is idle
  // clients hanging up (a coordinator keeps its channels open), so they get a moment, not the deadline.
  const left = t0 + timeoutMs - Date.now();
  const rest = after(settled === 'idle' ? Math.min(left, IDLE_CLIENTS_GRACE_MS) : left);
  const closed = await Promise.race([steps.tryShutdown().then(() => 'closed' as const), rest.p]);
  deadline.cancel();
  rest.cancel();
  if (closed !== 'closed') {
    steps.forceShutdown();
    if (settled === 'idle') log.line('draining', `nothing in flight: closed the idle connections still open`);
    else log.line('warning', `connections still open at the deadline: forced shut`);
  }
  const ms = Date.now() - t0;
  const clean = cutOff === 0;
  log.line('stopped', clean ? `drained cleanly in ${ms} ms` : `stopped in ${ms} ms${cutOff > 0 ? `, ${cutOff} call${cutOff === 1 ? '' : 's'} cut off` : ''}`);
  return { clean, cutOff, ms };
}
