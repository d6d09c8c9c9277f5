import { describe, expect, it } from 'vitest';
import { formatAction, parseAction } from '../src/wire/action.js';
import type { Action, Schedule } from '../src/wire/action.js';
import {
  ScheduleError,
  formatScheduleGrid,
  getSchedule,
  gpipe,
  oneFOneB,
  schedules,
  simulateSchedule,
  splitsBackward,
  validateSchedule,
} from '../coordinator/schedules/index.js';
import { scheduleError, scheduleText as text } from './helpers.js';

/** `grid('0F0 0B0', '1F0 1B0')` → a schedule, one string per stage. */
const grid = (...rows: string[]): Schedule => rows.map((r) => r.split(/\s+/).filter(Boolean).map(parseAction));

/** The grid line of `stage` in an error message. */
const row = (message: string, stage: number): string =>
  message.split('\n').find((l) => l.startsWith(`stage ${stage}:`)) ?? '';

describe('Action text', () => {
  it('formats stage, kind and micro-batch', () => {
    expect(formatAction({ stage: 1, kind: 'F', microBatch: 0 })).toBe('1F0');
    expect(formatAction({ stage: 12, kind: 'B', microBatch: 345 })).toBe('12B345');
    expect(formatAction({ stage: 1, kind: 'W', microBatch: 3 })).toBe('1W3');
  });

  it('round-trips format and parse', () => {
    for (const stage of [0, 1, 7, 12])
      for (const kind of ['F', 'B', 'W'] as const)
        for (const microBatch of [0, 3, 10, 999]) {
          const a: Action = { stage, kind, microBatch };
          expect(parseAction(formatAction(a))).toEqual(a);
          expect(formatAction(parseAction(formatAction(a)))).toBe(formatAction(a));
        }
    expect(parseAction('1B3')).toEqual({ stage: 1, kind: 'B', microBatch: 3 });
    expect(parseAction('1W3')).toEqual({ stage: 1, kind: 'W', microBatch: 3 });
  });

  it.each(['', '1X3', '1F', 'F0', '-1F0', '1f0', '1w0', '1W', '01W0', '1FW0', '01F0', '1F03', ' 1F0', '1F0 ', '1.5F0', '1F1e3'])(
    'rejects %j with a message naming the text and the form',
    (bad) => {
      expect(() => parseAction(bad)).toThrow(`parseAction: ${JSON.stringify(bad)} is not an action`);
      expect(() => parseAction(bad)).toThrow('<stage><F|B|W><microBatch>');
    },
  );
});

describe('every registered schedule', () => {
  const names = Object.keys(schedules);
  it('has gpipe and 1f1b', () => {
    expect(names).toEqual(expect.arrayContaining(['gpipe', '1f1b']));
  });

  for (const name of names) {
    for (let K = 1; K <= 4; K++) {
      for (let M = K; M <= 8; M++) {
        it(`${name} K=${K} M=${M}: validates, runs without deadlock, each action exactly once`, () => {
          const s = getSchedule(name)(K, M);
          expect(s).toHaveLength(K);
          const sim = validateSchedule(s, K, M);
          expect(sim.ok).toBe(true);
          expect(sim.deadlock).toBeNull();
          // A schedule that splits the backward runs one W per micro-batch on every stage.
          const kinds = splitsBackward(s) ? (['F', 'B', 'W'] as const) : (['F', 'B'] as const);
          for (let stage = 0; stage < K; stage++) {
            const seen = s[stage]!.map(formatAction).sort();
            const want: string[] = [];
            for (let m = 0; m < M; m++) for (const kind of kinds) want.push(`${stage}${kind}${m}`);
            expect(seen).toEqual(want.sort());
            // backwards (and weight gradients) ascending on every stage: gradients accumulate in micro-batch order
            for (const kind of kinds.slice(1)) {
              const ms = s[stage]!.filter((a) => a.kind === kind).map((a) => a.microBatch);
              expect(ms).toEqual([...ms].sort((a, b) => a - b));
            }
          }
          // the timeline (unit-time actions) runs each action once, on its own stage
          const ran = sim.timeline.flatMap((r, t) => r.map((a, st) => ({ a, st, t }))).filter((x) => x.a !== null);
          expect(ran).toHaveLength(kinds.length * K * M);
          for (const x of ran) expect(x.a!.stage).toBe(x.st);
        });
      }
    }
  }

  it('unknown name: error lists the choices', () => {
    const e = scheduleError(() => getSchedule('interleaved'));
    expect(e.code).toBe('SCHEDULE_UNKNOWN_NAME');
    expect(e.message).toContain('unknown schedule "interleaved"');
    expect(e.message).toContain(Object.keys(schedules).join(', '));
    expect(() => getSchedule('toString')).toThrow(ScheduleError);
  });

  it.each(names)('%s rejects non-positive or non-integer counts', (name) => {
    const fn = getSchedule(name);
    for (const [K, M, field] of [
      [0, 4, 'stages'],
      [2.5, 4, 'stages'],
      [2, 0, 'microBatches'],
      [2, NaN, 'microBatches'],
    ] as const) {
      const e = scheduleError(() => fn(K, M));
      expect(e.code).toBe('SCHEDULE_BAD_ARGUMENT');
      expect(e.message).toContain(`${field} must be a positive integer, got ${String(K === 0 || K === 2.5 ? K : M)}`);
    }
  });
});

describe('GPipe and 1F1B orders (K=2, M=4)', () => {
  it('gpipe: all forwards, then all backwards ascending', () => {
    expect(text(gpipe(2, 4))).toEqual([
      '0F0 0F1 0F2 0F3 0B0 0B1 0B2 0B3',
      '1F0 1F1 1F2 1F3 1B0 1B1 1B2 1B3',
    ]);
  });

  it('1f1b: warm-up K-1-s forwards, then one forward one backward, then cool-down', () => {
    expect(text(oneFOneB(2, 4))).toEqual([
      '0F0 0F1 0B0 0F2 0B1 0F3 0B2 0B3',
      '1F0 1B0 1F1 1B1 1F2 1B2 1F3 1B3',
    ]);
    expect(text(oneFOneB(3, 3))).toEqual([
      '0F0 0F1 0F2 0B0 0B1 0B2',
      '1F0 1F1 1B0 1F2 1B1 1B2',
      '2F0 2B0 2F1 2B1 2F2 2B2',
    ]);
  });

  it('1f1b timeline with unit-time F and B', () => {
    const sim = simulateSchedule(oneFOneB(2, 4));
    const rows = [0, 1].map((s) => sim.timeline.map((r) => (r[s] ? formatAction(r[s]!) : '.')).join(' '));
    expect(rows).toEqual([
      '0F0 0F1 . 0B0 0F2 0B1 0F3 0B2 . 0B3',
      '. 1F0 1B0 1F1 1B1 1F2 1B2 1F3 1B3 .',
    ]);
  });

  it('1f1b keeps at most K-s tapes alive on stage s; gpipe keeps M', () => {
    const peak = (list: Action[]): number => {
      let live = 0;
      let max = 0;
      for (const a of list) max = Math.max(max, (live += a.kind === 'F' ? 1 : -1));
      return max;
    };
    const K = 4;
    const M = 8;
    oneFOneB(K, M).forEach((list, s) => expect(peak(list)).toBe(K - s));
    gpipe(K, M).forEach((list) => expect(peak(list)).toBe(M));
  });

  it('1f1b with fewer micro-batches than stages is refused, naming both numbers', () => {
    const e = scheduleError(() => oneFOneB(4, 3));
    expect(e.code).toBe('SCHEDULE_TOO_FEW_MICROBATCHES');
    expect(e.message).toContain('at least as many micro-batches as stages');
    expect(e.message).toContain('got 3 micro-batch(es) for 4 stage(s)');
    expect(e.hint).toContain('gpipe');
  });
});

describe('bubble (idle fraction)', () => {
  const cases: [number, number][] = [];
  for (let K = 1; K <= 6; K++) for (const M of [K, K + 1, 2 * K, 8, 16]) cases.push([K, M]);

  it.each(Object.keys(schedules))('%s with unit-time F and B: (K-1)/(M+K-1), makespan 2(M+K-1)', (name) => {
    for (const [K, M] of cases) {
      const sim = simulateSchedule(getSchedule(name)(K, M));
      expect(sim.ok).toBe(true);
      expect(sim.ticks, `${name} K=${K} M=${M}`).toBe(2 * (M + K - 1));
      expect(sim.idleFraction, `${name} K=${K} M=${M}`).toBeCloseTo((K - 1) / (M + K - 1), 12);
    }
  });

  it('known values: K=4, M=8 → 3/11; K=2, M=4 → 1/5; K=1 → 0', () => {
    expect(simulateSchedule(gpipe(4, 8)).idleFraction).toBeCloseTo(3 / 11, 12);
    expect(simulateSchedule(oneFOneB(4, 8)).idleFraction).toBeCloseTo(3 / 11, 12);
    expect(simulateSchedule(oneFOneB(2, 4)).idleFraction).toBeCloseTo(1 / 5, 12);
    expect(simulateSchedule(gpipe(1, 5)).idleFraction).toBe(0);
  });

  it.each(Object.keys(schedules))('%s with backward twice as long as forward keeps the same fraction', (name) => {
    for (const [K, M] of cases) {
      const sim = simulateSchedule(getSchedule(name)(K, M), { forwardTicks: 1, backwardTicks: 2 });
      expect(sim.ticks).toBe(3 * (M + K - 1));
      expect(sim.idleFraction).toBeCloseTo((K - 1) / (M + K - 1), 12);
    }
  });
});

describe('validateSchedule rejects, with the grid and the fault marked', () => {
  it('backward before its forward', () => {
    const e = scheduleError(() => validateSchedule(grid('0F0 0F1 0B0 0B1', '1F0 1B1 1F1 1B0'), 2, 2));
    expect(e.code).toBe('SCHEDULE_BACKWARD_BEFORE_FORWARD');
    expect(e.message).toContain('stage 1 runs 1B1 at step 1, before its forward 1F1 at step 2');
    expect(row(e.message, 1)).toContain('[1B1]');
    expect(row(e.message, 1)).toMatch(/<-- ERROR HERE$/);
    expect(row(e.message, 0)).not.toContain('ERROR HERE');
    expect(e.where).toEqual({ stage: 1, step: 1 });
  });

  it('missing action', () => {
    const e = scheduleError(() => validateSchedule(grid('0F0 0F1 0B0 0B1', '1F0 1F1 1B0'), 2, 2));
    expect(e.code).toBe('SCHEDULE_MISSING_ACTION');
    expect(e.message).toContain('stage 1 never runs 1B1');
    expect(row(e.message, 1)).toContain('1F0');
    expect(row(e.message, 1)).toMatch(/<-- ERROR HERE$/);
    expect(e.hint).toContain('add 1B1');
  });

  it('repeated action', () => {
    const e = scheduleError(() => validateSchedule(grid('0F0 0F1 0B0 0B1 0F1', '1F0 1F1 1B0 1B1'), 2, 2));
    expect(e.code).toBe('SCHEDULE_REPEATED_ACTION');
    expect(e.message).toContain('stage 0 runs 0F1 twice, at step 1 and again at step 4');
    expect(row(e.message, 0)).toContain('[0F1]');
    expect(row(e.message, 0)).toMatch(/<-- ERROR HERE$/);
  });

  it('backwards out of micro-batch order (e.g. reversed as in some GPipe codes)', () => {
    const e = scheduleError(() => validateSchedule(grid('0F0 0F1 0B1 0B0', '1F0 1F1 1B0 1B1'), 2, 2));
    expect(e.code).toBe('SCHEDULE_BACKWARD_ORDER');
    expect(e.message).toContain('stage 0 runs 0B0 at step 3 after 0B1 at step 2');
    expect(e.message).toContain('ascending micro-batch order');
    expect(row(e.message, 0)).toContain('[0B0]');
    expect(row(e.message, 0)).toMatch(/<-- ERROR HERE$/);
  });

  it('deadlock: stage 0 waits for 1B0 while stage 1 waits for 0F1, which stage 0 runs after 0B0', () => {
    const s = grid('0F0 0B0 0F1 0B1', '1F0 1F1 1B0 1B1');
    const sim = simulateSchedule(s);
    expect(sim.ok).toBe(false);
    expect(sim.deadlock!.tick).toBe(2);
    expect(sim.deadlock!.blocked.map((b) => [formatAction(b.action), formatAction(b.waitingFor)])).toEqual([
      ['0B0', '1B0'],
      ['1F1', '0F1'],
    ]);
    const e = scheduleError(() => validateSchedule(s, 2, 2));
    expect(e.code).toBe('SCHEDULE_DEADLOCK');
    expect(e.message).toContain('deadlock at tick 2: no stage can make progress');
    expect(e.message).toContain('stage 0 waits at step 1 to run 0B0, which needs 1B0');
    expect(e.message).toContain('stage 1 waits at step 1 to run 1F1, which needs 0F1');
    expect(row(e.message, 0)).toContain('[0B0]');
    expect(row(e.message, 1)).toContain('[1F1]');
    expect(row(e.message, 0)).toMatch(/<-- ERROR HERE$/);
    expect(row(e.message, 1)).toMatch(/<-- ERROR HERE$/);
  });

  it('deadlock in three stages, found only by simulation', () => {
    // stage 2 wants micro-batch 1 first; stage 1 only forwards 1 after it got backward 0.
    const s = grid('0F0 0F1 0F2 0B0 0B1 0B2', '1F0 1B0 1F1 1B1 1F2 1B2', '2F1 2F0 2B0 2F2 2B1 2B2');
    const e = scheduleError(() => validateSchedule(s, 3, 3));
    expect(e.code).toBe('SCHEDULE_DEADLOCK');
    expect(e.message).toContain('stage 2 waits at step 0 to run 2F1, which needs 1F1');
  });

  it('wrong number of stage lists', () => {
    const e = scheduleError(() => validateSchedule(gpipe(2, 2), 3, 2));
    expect(e.code).toBe('SCHEDULE_STAGE_COUNT');
    expect(e.message).toContain('expected 3 stage lists (one per stage), got 2');
    expect(row(e.message, 2)).toContain('(no list)');
    expect(row(e.message, 2)).toMatch(/<-- ERROR HERE$/);
    const e2 = scheduleError(() => validateSchedule(gpipe(3, 2), 2, 2));
    expect(e2.message).toContain('got 3');
    expect(row(e2.message, 2)).toMatch(/<-- ERROR HERE$/);
  });

  it('action on the wrong stage list', () => {
    const e = scheduleError(() => validateSchedule(grid('0F0 0F1 0B0 0B1', '1F0 1F1 0B0 1B1'), 2, 2));
    expect(e.code).toBe('SCHEDULE_WRONG_STAGE');
    expect(e.message).toContain("0B0 (an action of stage 0) is on stage 1's list at step 2");
    expect(row(e.message, 1)).toContain('[0B0]');
  });

  it('micro-batch out of range', () => {
    const e = scheduleError(() => validateSchedule(grid('0F0 0F1 0B0 0B1 0F2'), 1, 2));
    expect(e.code).toBe('SCHEDULE_BAD_ACTION');
    expect(e.message).toContain('stage 0, step 4: 0F2 is not a forward, backward or weight gradient of a micro-batch in 0..1');
  });
});

describe('formatScheduleGrid', () => {
  it('prints one row per stage with aligned columns', () => {
    expect(formatScheduleGrid(gpipe(2, 2), [{ stage: 1, step: 2 }])).toBe(
      [
        '    step  0    1    2    3',
        'stage 0:  0F0  0F1  0B0  0B1',
        'stage 1:  1F0  1F1 [1B0] 1B1   <-- ERROR HERE',
      ].join('\n'),
    );
  });
});
