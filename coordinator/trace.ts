/**
 * The measured pipeline timeline: the spans every actor records of a traced step (its
 * forward, backward, weight gradient (the W actions of a zero-bubble schedule), send,
 * receive wait, replica reduce and optimizer per micro-batch),
 * aligned on one clock and written in the Chrome trace event format (Perfetto, chrome://tracing).
 *
 * Clocks: each actor stamps its spans with `performance.timeOrigin + performance.now()`
 * (src/wire/trace.ts), milliseconds since the Unix epoch. Every thread and process of one
 * host reads the same system clock that way (measured within ~2 µs, under what a ping could
 * resolve: ~7 µs round trip over a worker port, ~12 µs between processes), so same-host
 * actors need no correction, and a ping would only add its own error. Actors on other hosts
 * may differ by their NTP error: for them each traced runStep doubles as an NTP-style ping
 * (the coordinator's send and receive times around the actor's own take and reply times),
 * and an actor's offset is applied only when it exceeds that measurement's own uncertainty
 * (half the round trip not spent in the actor), best sample over the traced steps.
 *
 * @example
 * const tracer = new StepTracer(95, 100);     // steps 95..99
 * if (tracer.wants(step)) ... runStep with trace: true ... tracer.record(step, epoch, sent, received, reports);
 * writeFileSync('trace.json', JSON.stringify(tracer.chromeTrace(['stage 0 (threads)', 'stage 1 (threads)'])));
 */
import { decodeSpans, type Span, type SpanKind, type StepReport } from '../src/wire/index.js';

export interface TracedStep {
  step: number;
  epoch: number;
  /** The coordinator's epoch clock when it sent each actor's runStep and when the reply came. */
  sent: number[];
  received: number[];
  /** Each actor's spans on its own clock (null when its report carried no valid trace). */
  spans: (Span[] | null)[];
  clocks: ([number, number] | null)[];
}

/** An actor's clock offset against the coordinator: subtract `offsetMs` from its times. */
export interface ClockOffset {
  offsetMs: number;
  /** The measurement's uncertainty: half the round trip not spent inside the actor. */
  boundMs: number;
  /** Whether the offset is applied (it exceeds the bound) or the clocks are taken as one. */
  applied: boolean;
}

/** One Chrome trace event ('X': a complete span, 'M': a name). Times in microseconds. */
export interface TraceEvent {
  name: string;
  ph: 'X' | 'M';
  pid: number;
  tid: number;
  ts?: number;
  dur?: number;
  cat?: string;
  args?: Record<string, unknown>;
}

export interface ChromeTrace {
  traceEvents: TraceEvent[];
  displayTimeUnit: 'ms';
  otherData: {
    clock: string;
    /** Epoch milliseconds of ts 0. */
    originMs: number;
    actors: string[];
    stages: number;
    replicas: number;
    offsets: ClockOffset[];
    steps: { step: number; epoch: number; wallMs: number }[];
  };
}

/** The tracks of one actor, in display order; a track with overlapping spans gets more lanes. */
const trackOf: Record<SpanKind, string> = { forward: 'compute', backward: 'compute', weight: 'compute', optimizer: 'compute', wait: 'wait', send: 'send', reduce: 'reduce' };
const trackOrder = ['compute', 'wait', 'send', 'reduce'];
/** tid = track index × LANES + lane + 1. */
const LANES = 1000;

/** Records the steps in [first, last) of a run. */
export class StepTracer {
  readonly steps: TracedStep[] = [];

  constructor(readonly first: number, readonly last: number) {}

  wants(step: number): boolean {
    return step >= this.first && step < this.last;
  }

  record(step: number, epoch: number, sent: number[], received: number[], reports: readonly StepReport[]): void {
    this.steps.push({
      step, epoch, sent, received,
      spans: reports.map((r) => decodeSpans(r.trace)),
      clocks: reports.map((r) => (Array.isArray(r.clock) && r.clock.length === 2 && r.clock.every(Number.isFinite) && r.clock[1] >= r.clock[0] ? [r.clock[0], r.clock[1]] : null)),
    });
  }

  /** Each actor's clock offset, from its best (tightest) traced round trip. */
  offsets(actors: number): ClockOffset[] {
    return Array.from({ length: actors }, (_, a) => {
      let best: ClockOffset = { offsetMs: 0, boundMs: Infinity, applied: false };
      for (const s of this.steps) {
        const c = s.clocks[a];
        const [t0, t3] = [s.sent[a], s.received[a]];
        if (!c || t0 === undefined || t3 === undefined) continue;
        const boundMs = Math.max(0, (t3 - t0 - (c[1] - c[0])) / 2);
        if (boundMs < best.boundMs) best = { offsetMs: (c[0] - t0 + (c[1] - t3)) / 2, boundMs, applied: false };
      }
      if (!Number.isFinite(best.boundMs)) return { offsetMs: 0, boundMs: 0, applied: false };
      return { ...best, applied: Math.abs(best.offsetMs) > best.boundMs };
    });
  }

  /**
   * The Chrome trace: one process (pid) per actor, named after it, and one thread (tid) per
   * activity (compute, wait, send, reduce), with extra lanes where spans of one activity
   * overlap (sends in flight together), so that no track holds overlapping spans; the
   * coordinator's own track shows each step's round trip.
   */
  chromeTrace(actorNames: readonly string[], layout: { stages: number; replicas: number } = { stages: actorNames.length, replicas: 1 }): ChromeTrace {
    const offsets = this.offsets(actorNames.length);
    const shift = (a: number) => (offsets[a]!.applied ? offsets[a]!.offsetMs : 0);
    let origin = Infinity;
    for (const s of this.steps) for (const t of s.sent) origin = Math.min(origin, t);
    if (!Number.isFinite(origin)) origin = 0;
    const us = (ms: number) => Math.round((ms - origin) * 1000 * 1000) / 1000; // µs, to the ns
    const events: TraceEvent[] = [];
    const coordinatorPid = actorNames.length + 1;
    events.push({ name: 'process_name', ph: 'M', pid: coordinatorPid, tid: 0, args: { name: 'coordinator' } });
    events.push({ name: 'process_sort_index', ph: 'M', pid: coordinatorPid, tid: 0, args: { sort_index: -1 } });
    events.push({ name: 'thread_name', ph: 'M', pid: coordinatorPid, tid: 0, args: { name: 'steps' } });
    for (const s of this.steps) {
      const t0 = Math.min(...s.sent);
      const t1 = Math.max(...s.received);
      events.push({ name: `step ${s.step}`, cat: 'step', ph: 'X', pid: coordinatorPid, tid: 0, ts: us(t0), dur: us(t1) - us(t0), args: { step: s.step, epoch: s.epoch } });
    }
    for (const [a, name] of actorNames.entries()) {
      const pid = a + 1;
      events.push({ name: 'process_name', ph: 'M', pid, tid: 0, args: { name } });
      events.push({ name: 'process_sort_index', ph: 'M', pid, tid: 0, args: { sort_index: a } });
      // Lane ends per track: a span goes to the first lane of its track that is free by its start.
      const laneEnds = new Map<string, number[]>();
      const used = new Set<number>();
      const spans = this.steps.flatMap((s) => (s.spans[a] ?? []).map((sp) => ({ sp, step: s.step }))).sort((x, y) => x.sp.t0 - y.sp.t0);
      for (const { sp, step } of spans) {
        const track = trackOf[sp.kind];
        const ends = laneEnds.get(track) ?? [];
        laneEnds.set(track, ends);
        const ts = us(sp.t0 - shift(a));
        const dur = Math.max(0, us(sp.t1 - shift(a)) - ts);
        let lane = ends.findIndex((e) => e <= ts);
        if (lane < 0) lane = ends.length;
        ends[lane] = ts + dur;
        const tid = trackOrder.indexOf(track) * LANES + lane + 1;
        used.add(tid);
        const label = sp.microBatch >= 0 ? `${sp.kind} ${sp.microBatch}` : sp.kind;
        events.push({ name: label, cat: sp.kind, ph: 'X', pid, tid, ts, dur, args: { step, microBatch: sp.microBatch } });
      }
      for (const tid of [...used].sort((x, y) => x - y)) {
        const track = trackOrder[Math.floor((tid - 1) / LANES)]!;
        const lane = (tid - 1) % LANES;
        events.push({ name: 'thread_name', ph: 'M', pid, tid, args: { name: lane === 0 ? track : `${track} ${lane + 1}` } });
        events.push({ name: 'thread_sort_index', ph: 'M', pid, tid, args: { sort_index: tid } });
      }
    }
    return {
      traceEvents: events,
      displayTimeUnit: 'ms',
      otherData: {
        clock: 'performance.timeOrigin + performance.now() per actor (ms since the Unix epoch); offsets applied only where they exceed their measurement bound',
        originMs: origin, actors: [...actorNames], stages: layout.stages, replicas: layout.replicas, offsets,
        steps: this.steps.map((s) => ({ step: s.step, epoch: s.epoch, wallMs: Math.max(...s.received) - Math.min(...s.sent) })),
      },
    };
  }
}
