/**
 * Checks a schedule before anything runs: structure (every stage runs the forward and the
 * backward of every micro-batch exactly once, backward after forward, backwards in ascending
 * micro-batch order; in a schedule that splits the backward, one weight gradient W after each
 * backward, in the same order) and, by simulation, that it cannot deadlock.
 */
import { ChainruleError } from '../../src/errors.js';
import { formatAction } from '../../src/wire/action.js';
import type { Action, ActionKind, Schedule } from '../../src/wire/action.js';

/** Stable codes of {@link ScheduleError}; tests and callers match on these, not on the text. */
export type ScheduleErrorCode =
  | 'SCHEDULE_BAD_ARGUMENT'
  | 'SCHEDULE_TOO_FEW_MICROBATCHES'
  | 'SCHEDULE_UNKNOWN_NAME'
  | 'SCHEDULE_STAGE_COUNT'
  | 'SCHEDULE_WRONG_STAGE'
  | 'SCHEDULE_BAD_ACTION'
  | 'SCHEDULE_REPEATED_ACTION'
  | 'SCHEDULE_MISSING_ACTION'
  | 'SCHEDULE_BACKWARD_BEFORE_FORWARD'
  | 'SCHEDULE_BACKWARD_ORDER'
  | 'SCHEDULE_WEIGHT_BEFORE_BACKWARD'
  | 'SCHEDULE_WEIGHT_ORDER'
  | 'SCHEDULE_DEADLOCK'
  | 'SCHEDULE_MICROBATCH_MULTIPLE';

/** A schedule that must not run: what is wrong, where (stage, step), and how to fix it. */
export class ScheduleError extends ChainruleError {
  declare readonly code: ScheduleErrorCode;
  declare readonly hint: string;
  constructor(
    code: ScheduleErrorCode,
    message: string,
    /** How to fix it, also appended to the message. */
    hint: string,
    /** The faulty stage and step (position in that stage's list), when there is one. */
    readonly where: { stage: number; step?: number } | null = null,
  ) {
    super(code, message, { hint });
  }
}

/** Throws unless `stages` and `microBatches` are positive integers (`who` names the caller). */
export function checkCounts(who: string, stages: number, microBatches: number): void {
  for (const [name, value] of [
    ['stages', stages],
    ['microBatches', microBatches],
  ] as const) {
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new ScheduleError(
        'SCHEDULE_BAD_ARGUMENT',
        `${who}: ${name} must be a positive integer, got ${String(value)}`,
        `pass ${name} >= 1`,
      );
    }
  }
}

/** Marks a cell (`step` given) or a whole row (`step` omitted) of the grid with `<-- ERROR HERE`. */
export type GridMark = { stage: number; step?: number };

/**
 * The schedule as a grid: one row per stage, its actions in columns, marked cells in brackets
 * and marked rows ending in `<-- ERROR HERE`. Rows up to `expectedStages` that have no list
 * are printed as `(no list)`.
 * @example
 *          step  0    1    2    3
 *   stage 0:    0F0  0F1  0B0  0B1
 *   stage 1:    1F0  1F1 [1B1] 1B0   <-- ERROR HERE
 */
export function formatScheduleGrid(
  schedule: Schedule,
  marks: readonly GridMark[] = [],
  expectedStages = schedule.length,
): string {
  const rows = Math.max(schedule.length, expectedStages);
  const steps = Math.max(0, ...schedule.map((list) => list.length));
  const text = (a: Action): string =>
    a !== null && typeof a === 'object' ? formatAction(a) : String(a);
  const width = Math.max(3, String(steps - 1).length, ...schedule.flat().map((a) => text(a).length)) + 2;
  const label = (s: number): string => `stage ${s}:`.padEnd(`stage ${rows - 1}:`.length);
  const header =
    'step'.padStart(label(0).length) +
    ' ' +
    Array.from({ length: steps }, (_, i) => ` ${i}`.padEnd(width)).join('');
  const lines = [header.trimEnd()];
  for (let s = 0; s < rows; s++) {
    const list = schedule[s];
    const rowMarked = marks.some((m) => m.stage === s);
    let line = label(s) + ' ';
    if (list === undefined) {
      line += '(no list)';
    } else {
      line += list
        .map((a, i) => {
          const cellMarked = marks.some((m) => m.stage === s && m.step === i);
          return (cellMarked ? `[${text(a)}]` : ` ${text(a)} `).padEnd(width);
        })
        .join('');
      if (list.length === 0) line += '(empty)';
    }
    lines.push(rowMarked ? `${line.trimEnd()}   <-- ERROR HERE` : line.trimEnd());
  }
  return lines.join('\n');
}

/**
 * How many ticks each kind of action takes in {@link simulateSchedule}: F and B positive
 * integers (default 1), W a non-negative integer (default 0). `weightTicks` is the weight
 * gradient's share of a full backward: a schedule with W actions runs it there (B then takes
 * `backwardTicks`, the input gradient alone); in one without, every B takes
 * `backwardTicks + weightTicks`, the whole backward, as in the papers' 1F1B.
 */
export type SimulationOptions = { forwardTicks?: number; backwardTicks?: number; weightTicks?: number };

/** A stage that cannot start its next action because `waitingFor` has not finished. */
export type BlockedStage = { stage: number; step: number; action: Action; waitingFor: Action };

export type SimulationResult = {
  /** False when the schedule deadlocked. */
  ok: boolean;
  /** Ticks run (the makespan when `ok`; the ticks before the stall otherwise). */
  ticks: number;
  /** `timeline[tick][stage]`: the action that stage was running during that tick, or null when idle. */
  timeline: (Action | null)[][];
  /**
   * Idle stage-ticks over all stage-ticks; for GPipe and 1F1B with equal F and B times,
   * (K-1)/(M+K-1); for ZB-H1 with equal F, B and W times, (K-1)/(3M+K-1).
   */
  idleFraction: number;
  /** Where it stalled: the tick and every stage still waiting, with what it waits for. */
  deadlock: { tick: number; blocked: BlockedStage[] } | null;
};

const key = (stage: number, kind: ActionKind, microBatch: number): string => `${stage}${kind}${microBatch}`;

/**
 * Whether the schedule splits the backward (has W actions): then every stage must run one W
 * per micro-batch, and the stage runtime computes the weight gradients there.
 * @example splitsBackward(getSchedule('zb-h1')(2, 4)) // true
 */
export function splitsBackward(schedule: Schedule): boolean {
  return Array.isArray(schedule) && schedule.some((list) => Array.isArray(list) && list.some((a) => a?.kind === 'W'));
}

/**
 * Runs the schedule in lock-step ticks. Each stage runs its list in order; an action starts only
 * when what it needs finished in an earlier tick:
 * - forward m on stage s needs forward m on stage s-1;
 * - backward m on stage s needs its own forward m (the tape) and, except on the last stage,
 *   backward m on stage s+1;
 * - weight gradient m on stage s needs its own backward m, and nothing of another stage.
 * A W of 0 ticks takes no tick (and is not in the timeline). A tick in which no stage is
 * running or can start, with work left, is a deadlock (reported, not thrown).
 * The stages are those the actions name: in an interleaved schedule list d is a device that
 * runs the actions of several stages (chunks), one at a time, and the timeline and the idle
 * fraction are per device.
 * @example simulateSchedule(gpipe(2, 4)).idleFraction // 0.2 = (2-1)/(4+2-1)
 * @example simulateSchedule(interleaved1F1B(2, 4, 2)).idleFraction // 1/9 = (2-1)/(2·4+2-1)
 * @example simulateSchedule(zbH1(2, 4), { weightTicks: 1 }).idleFraction // 1/13 = (2-1)/(3·4+2-1)
 */
export function simulateSchedule(schedule: Schedule, options: SimulationOptions = {}): SimulationResult {
  const forwardTicks = options.forwardTicks ?? 1;
  const backwardTicks = options.backwardTicks ?? 1;
  const weightTicks = options.weightTicks ?? 0;
  for (const [name, v, min] of [
    ['forwardTicks', forwardTicks, 1],
    ['backwardTicks', backwardTicks, 1],
    ['weightTicks', weightTicks, 0],
  ] as const) {
    if (!Number.isSafeInteger(v) || v < min) {
      throw new ScheduleError(
        'SCHEDULE_BAD_ARGUMENT',
        `simulateSchedule: options.${name} must be a ${min === 1 ? 'positive' : 'non-negative'} integer, got ${String(v)}`,
        `pass ${name} >= ${min} (ticks per action)`,
      );
    }
  }
  const split = splitsBackward(schedule);
  const ticksOf = (kind: ActionKind): number =>
    kind === 'F' ? forwardTicks : kind === 'W' ? weightTicks : split ? backwardTicks : backwardTicks + weightTicks;
  const stages = schedule.length;
  // Lists are per device; an action names its (virtual) stage, which is the list's own
  // unless the schedule interleaves several chunks per device (interleaved-1f1b).
  const virtualCount = Math.max(stages, ...schedule.flatMap((list) => list.map((a) => a.stage + 1)));
  const next = new Array<number>(stages).fill(0);
  const busyUntil = new Array<number>(stages).fill(-1);
  const running = new Array<Action | null>(stages).fill(null);
  const finishedAt = new Map<string, number>(); // last tick the action occupied
  const timeline: (Action | null)[][] = [];

  const unmet = (_device: number, a: Action, tick: number): Action | null => {
    const needs: Action[] = [];
    const v = a.stage;
    if (a.kind === 'F') {
      if (v > 0) needs.push({ stage: v - 1, kind: 'F', microBatch: a.microBatch });
    } else if (a.kind === 'W') {
      needs.push({ stage: v, kind: 'B', microBatch: a.microBatch });
    } else {
      needs.push({ stage: v, kind: 'F', microBatch: a.microBatch });
      if (v < virtualCount - 1) needs.push({ stage: v + 1, kind: 'B', microBatch: a.microBatch });
    }
    for (const n of needs) {
      const done = finishedAt.get(key(n.stage, n.kind, n.microBatch));
      if (done === undefined || done >= tick) return n;
    }
    return null;
  };

  /** Runs the W of no duration at the head of stage s's list, when the stage is free (they finish "before" this tick). */
  const skipInstant = (s: number, tick: number): void => {
    for (let a = schedule[s]![next[s]!]; a !== undefined && busyUntil[s]! < tick && ticksOf(a.kind) === 0; a = schedule[s]![next[s]!]) {
      if (unmet(s, a, tick) !== null) break;
      finishedAt.set(key(a.stage, a.kind, a.microBatch), tick - 1);
      next[s]!++;
    }
  };

  for (let tick = 0; ; tick++) {
    // (A skip enables nothing of another stage; what follows it on its own stage may start below.)
    for (let s = 0; s < stages; s++) skipInstant(s, tick);
    const left = schedule.some((list, s) => next[s]! < list.length || busyUntil[s]! >= tick);
    if (!left) break;
    const row: (Action | null)[] = [];
    let progressed = false;
    for (let s = 0; s < stages; s++) {
      const list = schedule[s]!;
      if (busyUntil[s]! >= tick) {
        row.push(running[s]!);
        progressed = true;
        continue;
      }
      const a = list[next[s]!];
      if (a === undefined || unmet(s, a, tick) !== null) {
        row.push(null);
        continue;
      }
      const end = tick + ticksOf(a.kind) - 1;
      busyUntil[s] = end;
      running[s] = a;
      finishedAt.set(key(a.stage, a.kind, a.microBatch), end);
      next[s]!++;
      row.push(a);
      progressed = true;
    }
    if (!progressed) {
      // Nothing runs and nothing can start: no dependency can ever finish again.
      const blocked: BlockedStage[] = [];
      for (let s = 0; s < stages; s++) {
        const a = schedule[s]![next[s]!];
        if (a !== undefined) blocked.push({ stage: s, step: next[s]!, action: a, waitingFor: unmet(s, a, tick)! });
      }
      return { ok: false, ticks: timeline.length, timeline, idleFraction: idle(timeline, stages), deadlock: { tick, blocked } };
    }
    timeline.push(row);
  }
  return { ok: true, ticks: timeline.length, timeline, idleFraction: idle(timeline, stages), deadlock: null };
}

function idle(timeline: (Action | null)[][], stages: number): number {
  if (timeline.length === 0 || stages === 0) return 0;
  let idleCells = 0;
  for (const row of timeline) for (const cell of row) if (cell === null) idleCells++;
  return idleCells / (timeline.length * stages);
}

/**
 * The timeline as text: one row per stage, one column per tick, `.` for idle.
 * @example formatTimeline(simulateSchedule(gpipe(2, 2)).timeline)
 */
export function formatTimeline(timeline: (Action | null)[][]): string {
  const stages = Math.max(0, ...timeline.map((r) => r.length));
  const width = Math.max(3, ...timeline.flat().map((a) => (a ? formatAction(a).length : 1))) + 1;
  const lines: string[] = [];
  for (let s = 0; s < stages; s++) {
    lines.push(
      `stage ${s}: ` + timeline.map((r) => (r[s] ? formatAction(r[s]!) : '.').padEnd(width)).join('').trimEnd(),
    );
  }
  return lines.join('\n');
}

/**
 * Throws a {@link ScheduleError} (with the grid, the fault marked `<-- ERROR HERE`) unless
 * `schedule` has one list per stage in which that stage runs the forward and the backward of
 * every micro-batch 0..microBatches-1 exactly once, each backward after its forward, backwards
 * in ascending micro-batch order (gradients accumulate in one fixed order), and the lists
 * cannot deadlock. A schedule with W actions (see {@link splitsBackward}) must also run, on
 * every stage, exactly one W per micro-batch, each after that stage's B of the same micro-batch
 * and in ascending order (W m adds the weight gradients deferred through micro-batch m).
 * With `virtualStages` V > 1 the lists are per device (`stages` = K of them) and device d's
 * list holds the actions of the stages d, d+K, …, d+(V-1)K, each of which must meet all of the
 * above on its own (interleaved-1f1b); the simulation then runs one action at a time per device.
 * Returns the simulation (unit-time F, B and, when there are any, W) for reports.
 * @example validateSchedule(getSchedule('1f1b')(4, 8), 4, 8).idleFraction // 3/11
 * @example validateSchedule(interleaved1F1B(2, 4, 2), 2, 4, 2).idleFraction // 1/9
 */
export function validateSchedule(schedule: Schedule, stages: number, microBatches: number, virtualStages = 1): SimulationResult {
  checkCounts('validateSchedule', stages, microBatches);
  if (!Number.isSafeInteger(virtualStages) || virtualStages < 1) {
    throw new ScheduleError('SCHEDULE_BAD_ARGUMENT', `validateSchedule: virtualStages must be a positive integer, got ${String(virtualStages)}`, 'pass virtualStages >= 1 (stages per device)');
  }
  const fail = (
    code: ScheduleErrorCode,
    sentence: string,
    hint: string,
    marks: GridMark[],
    extra = '',
  ): never => {
    const grid = formatScheduleGrid(schedule, marks, stages);
    const first = marks[0] ?? null;
    throw new ScheduleError(
      code,
      `invalid schedule for ${stages} stage(s) and ${microBatches} micro-batch(es): ${sentence}\n\n${grid}${extra}`,
      hint,
      first,
    );
  };

  if (!Array.isArray(schedule) || schedule.length !== stages || schedule.some((l) => !Array.isArray(l))) {
    const got = Array.isArray(schedule) ? schedule.length : 0;
    if (!Array.isArray(schedule) || schedule.some((l) => !Array.isArray(l))) {
      throw new ScheduleError(
        'SCHEDULE_STAGE_COUNT',
        `invalid schedule: expected an array of ${stages} action lists (one per stage)`,
        'return Action[][] indexed by stage',
      );
    }
    const marks = got > stages
      ? Array.from({ length: got - stages }, (_, i) => ({ stage: stages + i }))
      : Array.from({ length: stages - got }, (_, i) => ({ stage: got + i }));
    fail(
      'SCHEDULE_STAGE_COUNT',
      `expected ${stages} stage lists (one per stage), got ${got}.`,
      `return exactly one action list per stage (index = stage), ${stages} in all`,
      marks,
    );
  }

  const split = splitsBackward(schedule);
  const kinds: ActionKind[] = split ? ['F', 'B', 'W'] : ['F', 'B'];

  // The stages (chunks) device s holds: s alone, or s, s+K, … with virtual stages.
  const chunksOf = (s: number): number[] => Array.from({ length: virtualStages }, (_, c) => c * stages + s);
  const what = virtualStages > 1 ? 'device' : 'stage';

  // 1. each action well formed, on its own stage's (device's) list, at most once.
  for (let s = 0; s < stages; s++) {
    const seen = new Map<string, number>();
    schedule[s]!.forEach((a, i) => {
      const ok =
        a !== null &&
        typeof a === 'object' &&
        (a.kind === 'F' || a.kind === 'B' || a.kind === 'W') &&
        Number.isSafeInteger(a.stage) &&
        Number.isSafeInteger(a.microBatch);
      if (!ok || a.microBatch < 0 || a.microBatch >= microBatches) {
        fail(
          'SCHEDULE_BAD_ACTION',
          `${what} ${s}, step ${i}: ${ok ? formatAction(a) : JSON.stringify(a)} is not a forward, backward or weight gradient of a micro-batch in 0..${microBatches - 1}.`,
          `use actions { stage, kind: 'F' | 'B' | 'W', microBatch } with 0 <= microBatch < ${microBatches}`,
          [{ stage: s, step: i }],
        );
      }
      if (virtualStages === 1 ? a.stage !== s : a.stage < 0 || a.stage >= stages * virtualStages || a.stage % stages !== s) {
        const owner = a.stage >= 0 && a.stage < stages * virtualStages ? a.stage % stages : -1;
        fail(
          'SCHEDULE_WRONG_STAGE',
          virtualStages === 1
            ? `${formatAction(a)} (an action of stage ${a.stage}) is on stage ${s}'s list at step ${i}.`
            : `${formatAction(a)} (an action of virtual stage ${a.stage}) is on device ${s}'s list at step ${i}; device ${s} of ${stages} holds the stages ${chunksOf(s).join(', ')}.`,
          owner < 0
            ? `use stages 0..${stages * virtualStages - 1} (${stages} device(s) × ${virtualStages} virtual stage(s))`
            : `put each action in the list of the ${what} holding the stage it names: schedule[${owner}] for ${formatAction(a)}`,
          [{ stage: s, step: i }],
        );
      }
      const k = key(a.stage, a.kind, a.microBatch);
      const before = seen.get(k);
      if (before !== undefined) {
        fail(
          'SCHEDULE_REPEATED_ACTION',
          `${what} ${s} runs ${k} twice, at step ${before} and again at step ${i}; each stage runs the forward and the backward${split ? ' and the weight gradient' : ''} of every micro-batch exactly once.`,
          `remove the second ${k} from ${what} ${s}'s list`,
          [{ stage: s, step: i }],
        );
      }
      seen.set(k, i);
    });
  }

  // 2. nothing missing (with no repeats and all in range, this means exactly once).
  for (let s = 0; s < stages; s++) {
    const present = new Set(schedule[s]!.map((a) => key(a.stage, a.kind, a.microBatch)));
    const missing: string[] = [];
    for (const v of chunksOf(s)) {
      for (let m = 0; m < microBatches; m++) {
        for (const kind of kinds) if (!present.has(key(v, kind, m))) missing.push(key(v, kind, m));
      }
    }
    if (missing.length > 0) {
      fail(
        'SCHEDULE_MISSING_ACTION',
        `${what} ${s} never runs ${missing.join(', ')}; each stage runs the forward and the backward of every micro-batch 0..${microBatches - 1} exactly once` +
          (split ? ', and, in a schedule that splits the backward (this one has W actions), one weight gradient W after each backward.' : '.'),
        `add ${missing.join(', ')} to ${what} ${s}'s list`,
        [{ stage: s }],
      );
    }
  }

  // 3. each backward after its own forward; 4. backwards in ascending micro-batch order;
  // the same two for each weight gradient and its backward (per stage: a device's chunks each).
  for (let s = 0; s < stages; s++) {
    const list = schedule[s]!;
    for (const v of chunksOf(s)) {
      const mine = (a: Action) => a.stage === v;
      // Each action of `kind` after its own `prior` action, and in ascending micro-batch order.
      const inOrder = (kind: 'B' | 'W', prior: 'F' | 'B', after: { code: ScheduleErrorCode; why: string }, ascending: { code: ScheduleErrorCode; why: string; plural: string }) => {
        const priorStep = new Map<number, number>();
        list.forEach((a, i) => {
          if (mine(a) && a.kind === prior) priorStep.set(a.microBatch, i);
        });
        let last: { m: number; step: number } | null = null;
        list.forEach((a, i) => {
          if (a.kind !== kind || !mine(a)) return;
          const p = priorStep.get(a.microBatch)!;
          if (p > i) {
            fail(
              after.code,
              `stage ${v} runs ${formatAction(a)} at step ${i}, before its ${prior === 'F' ? 'forward' : 'backward'} ${key(v, prior, a.microBatch)} at step ${p}; ${after.why}`,
              `move ${formatAction(a)} after ${key(v, prior, a.microBatch)} in ${what} ${s}'s list`,
              [{ stage: s, step: i }, { stage: s, step: p }],
            );
          }
          if (last !== null && a.microBatch < last.m) {
            fail(
              ascending.code,
              `stage ${v} runs ${formatAction(a)} at step ${i} after ${key(v, kind, last.m)} at step ${last.step}; ${ascending.why}`,
              `order stage ${v}'s ${ascending.plural} by micro-batch: ${key(v, kind, a.microBatch)} before ${key(v, kind, last.m)}`,
              [{ stage: s, step: i }],
            );
          }
          last = { m: a.microBatch, step: i };
        });
      };
      inOrder('B', 'F', { code: 'SCHEDULE_BACKWARD_BEFORE_FORWARD', why: 'a backward needs the tape its forward leaves.' },
        { code: 'SCHEDULE_BACKWARD_ORDER', why: 'backwards must run in ascending micro-batch order so gradients accumulate in one fixed order.', plural: 'backwards' });
      inOrder('W', 'B', { code: 'SCHEDULE_WEIGHT_BEFORE_BACKWARD', why: 'a weight gradient needs the input and output gradient its backward records.' },
        { code: 'SCHEDULE_WEIGHT_ORDER', why: 'weight gradients must run in ascending micro-batch order (W m adds every product deferred through micro-batch m, so gradients accumulate in one fixed order).', plural: 'weight gradients' });
    }
  }

  // 5. deadlock.
  const sim = simulateSchedule(schedule, { weightTicks: split ? 1 : 0 });
  if (!sim.ok) {
    const { tick, blocked } = sim.deadlock!;
    const waits = blocked
      .map((b) => `stage ${b.stage} waits at step ${b.step} to run ${formatAction(b.action)}, which needs ${formatAction(b.waitingFor)}`)
      .join('; ');
    fail(
      'SCHEDULE_DEADLOCK',
      `deadlock at tick ${tick}: no stage can make progress. ${waits}.`,
      'reorder the lists so every action a stage waits for comes earlier in the other stage’s list (e.g. use the gpipe, 1f1b or zb-h1 schedule)',
      blocked.map((b) => ({ stage: b.stage, step: b.step })),
      sim.timeline.length > 0 ? `\n\ntimeline until the stall (. = idle):\n${formatTimeline(sim.timeline)}` : '',
    );
  }
  return sim;
}
